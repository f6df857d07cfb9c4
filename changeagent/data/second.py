"""SECOND: semantic change detection (SPEC §1.7), no captions::

    <root>/{train,test}/{im1,im2,label1,label2}/<name>.png      512x512

Labels are colour PNGs in the SECOND palette (white = unchanged, land cover on changed pixels only),
decoded as for SECOND-CC. There is no published validation split: `data.second.val_split` defaults
to `test` (say so when you report numbers) — set it to a split you made yourself to keep test clean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from changeagent.data.constants import SECOND_CLASSES
from changeagent.data.images import check_same_size, read_image, read_label
from changeagent.data.labels import decode_second_sem
from changeagent.data.levir_mci import binary_change
from changeagent.data.second_cc import SECOND_COLOURS, SECOND_MEAN, SECOND_STD
from changeagent.data.spec import DatasetCfg, DatasetSpec
from changeagent.data.synth.layouts import Pair, relayout, save_png
from changeagent.errors import ChangeAgentError
from changeagent.typed import opt

SPLITS = ("train", "test")
FOLDERS = ("im1", "im2", "label1", "label2")


@dataclass
class SecondCfg(DatasetCfg):
    val_split: str = opt("test", "split used for validation (SECOND publishes train and test only)")


class Second(Dataset):
    dataset_id = "second"

    def __init__(self, root: str | Path, split: str = "train", vocab: Any = None, max_len: int = 41,
                 mean: Sequence[float] = SECOND_MEAN, std: Sequence[float] = SECOND_STD, transforms: Any = None,
                 canonical_no_change: bool = False, captions_file: str | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ChangeAgentError(f"dataset root {self.root} does not exist or is not a folder")
        if split not in SPLITS:
            raise ChangeAgentError(f"SECOND has splits {SPLITS}, got {split!r}")
        if captions_file:
            raise ChangeAgentError(f"SECOND has no captions; remove captions_file={captions_file!r}")
        for sub in FOLDERS:
            if not (self.root / split / sub).is_dir():
                raise ChangeAgentError(f"split folder {self.root / split / sub} does not exist")
        self.split = split
        self.names = sorted(p.name for p in (self.root / split / "im1").iterdir() if p.suffix.lower() == ".png")
        if not self.names:
            raise ChangeAgentError(f"{self.root / split / 'im1'} holds no PNG files")
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.names)

    def files(self, index: int) -> dict[str, Path]:
        return {k: self.root / self.split / k / self.names[index] for k in FOLDERS}

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        f = self.files(index)
        arrays = {"im1": read_image(f["im1"]), "im2": read_image(f["im2"]),
                  "label1": read_label(f["label1"]), "label2": read_label(f["label2"])}
        check_same_size(arrays, f)
        return (arrays["im1"], arrays["im2"], decode_second_sem(arrays["label1"], f["label1"]),
                decode_second_sem(arrays["label2"], f["label2"]))

    def __getitem__(self, index: int) -> dict[str, Any]:
        a, b, sem_a, sem_b = self.load_raw(index)
        flag = int(bool((sem_a > 0).any() or (sem_b > 0).any()))
        if self.transforms is not None:
            out = self.transforms({"image_a": a, "image_b": b, "masks": {"sem_a": sem_a, "sem_b": sem_b},
                                   "captions": []})
            a, b, sem_a, sem_b = out["image_a"], out["image_b"], out["masks"]["sem_a"], out["masks"]["sem_b"]
        sem = np.stack([np.asarray(sem_a), np.asarray(sem_b)]).astype(np.int64)
        img = np.stack([a, b]).transpose(0, 3, 1, 2).astype(np.float32)
        img = (img / 255.0 - self.mean.reshape(1, -1, 1, 1)) / self.std.reshape(1, -1, 1, 1)
        return {"image": torch.from_numpy(img.astype(np.float32)), "sem": torch.from_numpy(sem),
                "change": binary_change(sem[0]), "dataset": self.dataset_id, "name": self.names[index],
                "changeflag": flag}


def _write(root: Path, pairs: list[Pair]) -> None:
    lut = np.asarray(SECOND_COLOURS, np.uint8)
    for i, p in enumerate(pairs):
        split = "train" if p["split"] == "train" else "test"  # synthetic val pairs join test
        name = f"{i + 1:05d}.png"
        save_png(root / split / "im1" / name, p["a"])
        save_png(root / split / "im2" / name, p["b"])
        save_png(root / split / "label1" / name, lut[p["sem"][0]])
        save_png(root / split / "label2" / name, lut[p["sem"][1]])


def _synth(out: Path, n_train: int, n_val: int, n_test: int, size: int, seed: int, overwrite: bool = False,
           progress: bool = True, difficulty: str = "default", **_: Any) -> dict[str, Any]:
    return relayout("second-cc", out, _write, n_train, n_val, n_test, size, seed, overwrite, progress, difficulty=difficulty)


SPEC = DatasetSpec(
    id="second",
    title="SECOND",
    reader=Second,
    targets=("change", "sem"),
    classes=SECOND_CLASSES,
    palette=SECOND_COLOURS,
    dates=2,
    mean=SECOND_MEAN,
    std=SECOND_STD,
    metrics=("scd",),
    splits=SPLITS,
    layout="{train,test}/{im1,im2,label1,label2}/*.png (512 px, SECOND colour palette)",
    config=SecondCfg,
    synth=_synth,
)
