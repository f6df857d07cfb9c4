"""SECOND-CC: bi-temporal pairs, two land-cover maps (changed pixels only) and five captions.

Layout (SPEC §1.2)::

    <root>/SECOND-CC-AUG.json
    <root>/{train,val,test}/rgb/{A,B}/<filename>
    <root>/{train,val,test}/sem/{A,B}/<filename>

`restval` entries are training pairs (read from `<root>/train/`). SECOND-CC publishes no
normalisation statistics, so the default mean/std are ImageNet's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from changeagent.data.constants import SECOND_CLASSES
from changeagent.data.images import check_same_size, read_image, read_label
from changeagent.data.labels import decode_second_sem
from changeagent.data.levir_mci import CaptionPairDataset, Transform, binary_change
from changeagent.data.spec import DatasetSpec
from changeagent.data.vocab import PairInfo, Vocabulary

# SECOND palette by class id (SPEC §1.2): unchanged white, water, ground, low vegetation, tree, building, playground
SECOND_COLOURS = ((255, 255, 255), (0, 0, 255), (128, 128, 128), (0, 128, 0), (0, 255, 0), (128, 0, 0), (255, 0, 0))

# ImageNet statistics (RGB, fraction of 255): SECOND-CC has no published ones
SECOND_MEAN = (0.485, 0.456, 0.406)
SECOND_STD = (0.229, 0.224, 0.225)


class SecondCC(CaptionPairDataset):
    """SECOND-CC split as a map-style dataset; samples follow docs/design.md (`sem`, no `mask`).

    `changeflag` comes from the JSON when present, else 1 when any pixel of sem A or B is changed.
    `captions_file`: the caption JSON, relative to `root` or absolute (default SECOND-CC-AUG.json).
    """

    dataset_id = "second_cc"
    default_captions_file = "SECOND-CC-AUG.json"
    mask_keys = ("sem_a", "sem_b")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        vocab: Vocabulary | str | Path | None = None,
        max_len: int = 41,
        mean: Sequence[float] = SECOND_MEAN,
        std: Sequence[float] = SECOND_STD,
        transforms: Transform | None = None,
        canonical_no_change: bool = False,
        captions_file: str | Path | None = None,
    ):
        super().__init__(root, split, vocab, max_len, mean, std, transforms, canonical_no_change, captions_file)

    @staticmethod
    def split_folders(root: Path, split: str) -> list[Path]:
        return [root / split / kind / ab for kind in ("rgb", "sem") for ab in ("A", "B")]

    @staticmethod
    def pair_files(root: Path, info: PairInfo) -> dict[str, Path]:
        base = root / info.split
        return {
            "A": base / "rgb" / "A" / info.name,
            "B": base / "rgb" / "B" / info.name,
            "sem_a": base / "sem" / "A" / info.name,
            "sem_b": base / "sem" / "B" / info.name,
        }

    @staticmethod
    def decode_files(files: dict[str, Path], mask_mode: str = "auto") -> tuple[dict[str, np.ndarray], str]:
        arrays = {"A": read_image(files["A"]), "B": read_image(files["B"])}
        arrays.update(sem_a=read_label(files["sem_a"]), sem_b=read_label(files["sem_b"]))
        check_same_size(arrays, files)
        return {k: decode_second_sem(arrays[k], files[k]) for k in ("sem_a", "sem_b")}, ""

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Decoded (A uint8 [H,W,3], B uint8 [H,W,3], sem A int64 [H,W], sem B int64 [H,W])."""
        f = self.files(index)
        arrays = {"A": read_image(f["A"]), "B": read_image(f["B"])}
        arrays.update(sem_a=read_label(f["sem_a"]), sem_b=read_label(f["sem_b"]))
        check_same_size(arrays, f)
        return (
            arrays["A"],
            arrays["B"],
            decode_second_sem(arrays["sem_a"], f["sem_a"]),
            decode_second_sem(arrays["sem_b"], f["sem_b"]),
        )

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = self.pairs[index]
        a, b, sem_a, sem_b = self.load_raw(index)
        flag = info.changeflag
        if flag is None:
            flag = int(bool((sem_a > 0).any() or (sem_b > 0).any()))
        a, b, masks, captions = self._apply_transforms(
            a, b, {"sem_a": sem_a, "sem_b": sem_b}, self.target_captions(info), info.name
        )
        sem = np.stack([np.asarray(masks["sem_a"]), np.asarray(masks["sem_b"])]).astype(np.int64)
        sample = {
            "image": self._image_tensor(a, b),
            "sem": torch.from_numpy(sem),
            "change": binary_change(sem[0]),
            "dataset": self.dataset_id,
            "name": info.name,
            "changeflag": flag,
        }
        return self._finish(sample, captions)


def _synth(out: Path, n_train: int, n_val: int, n_test: int, size: int, seed: int, overwrite: bool = False,
           progress: bool = True, difficulty: str = "default", **_: Any) -> dict[str, Any]:
    from changeagent.data.synth.writer import generate_with_summary

    return generate_with_summary("second-cc", out, n_train, n_val, n_test, size=size, seed=seed,
                                 overwrite=overwrite, progress=progress,
                                 difficulty=difficulty)


SPEC = DatasetSpec(
    id="second_cc",
    title="SECOND-CC",
    reader=SecondCC,
    targets=("change", "sem", "captions"),
    classes=SECOND_CLASSES,
    palette=SECOND_COLOURS,
    dates=2,
    mean=SECOND_MEAN,
    std=SECOND_STD,
    metrics=("scd",),
    captions_file="SECOND-CC-AUG.json",
    layout="SECOND-CC-AUG.json + {train,val,test}/{rgb,sem}/{A,B}/*.png",
    synth=_synth,
)
