"""Binary change detection folders (mask only): the 256-px crop layout and LEVIR-CD's official release.

Crop layout (BIT / ChangeFormer preprocessing; LEVIR-CD, WHU-CD and DSIFN-CD are distributed so)::

    <root>/A/<name>.png  <root>/B/<name>.png  <root>/label/<name>.png  <root>/list/{train,val,test}.txt

Official LEVIR-CD release: ``<root>/{train,val,test}/{A,B,label}/*.png`` (1024 px). Labels are
single-channel 0 = no change, 255 = change; some copies use 0/1. A file holding any other value (or
mixing 1 and 255) is an error naming the file and the value. Samples follow docs/design.md: `image`,
`change`, `dataset`, `name`, `changeflag`; no captions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from changeagent.data.images import check_same_size, read_image, read_label
from changeagent.data.spec import DatasetCfg
from changeagent.data.synth.layouts import Pair, relayout, save_png
from changeagent.data.vocab import SPLITS, Vocabulary
from changeagent.errors import ChangeAgentError
from changeagent.typed import opt

LAYOUTS = ("auto", "crop", "official")
BINARY_CLASSES = ("no_change", "change")
BINARY_PALETTE = ((0, 0, 0), (255, 255, 255))


@dataclass
class BinaryCDCfg(DatasetCfg):
    layout: str = opt("auto", "crop (A/ B/ label/ list/), official ({train,val,test}/{A,B,label}) or auto",
                      choices=LAYOUTS)


def decode_binary_label(label: np.ndarray, path: str | Path) -> np.ndarray:
    """uint8 [H, W] (or [H, W, 3] with equal channels) 0/255 or 0/1 -> int64 [H, W] 0/1."""
    if label.ndim == 3:
        if label.shape[2] != 3 or not (np.array_equal(label[..., 0], label[..., 1])
                                       and np.array_equal(label[..., 0], label[..., 2])):
            raise ChangeAgentError(f"label {path} is a colour image; binary change labels are grey 0/255 (or 0/1)")
        label = label[..., 0]
    values = set(np.flatnonzero(np.bincount(label.ravel(), minlength=256)).tolist())
    bad = sorted(values - {0, 1, 255})
    if bad:
        raise ChangeAgentError(f"label {path} has illegal value {bad[0]} (binary change labels are 0/255 or 0/1)")
    if {1, 255} <= values:
        raise ChangeAgentError(f"label {path} mixes values 1 and 255 (binary change labels are 0/255 or 0/1)")
    return (label > 0).astype(np.int64)


def detect_layout(root: Path, layout: str = "auto") -> str:
    if layout not in LAYOUTS:
        raise ChangeAgentError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout != "auto":
        return layout
    if (root / "list").is_dir():
        return "crop"
    if any((root / s / "A").is_dir() for s in SPLITS):
        return "official"
    raise ChangeAgentError(f"{root} is neither the crop layout (A/ B/ label/ list/{{train,val,test}}.txt) nor "
                           f"the official one ({{train,val,test}}/{{A,B,label}}/)")


class BinaryChangeDataset(Dataset):
    """One split of a binary change folder; `dataset_id` is set by the subclass of each dataset."""

    dataset_id = ""

    def __init__(self, root: str | Path, split: str = "train", vocab: Vocabulary | None = None, max_len: int = 41,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 transforms: Any = None, canonical_no_change: bool = False, captions_file: str | None = None,
                 layout: str = "auto") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ChangeAgentError(f"dataset root {self.root} does not exist or is not a folder")
        if split not in SPLITS:
            raise ChangeAgentError(f"split must be one of {SPLITS}, got {split!r}")
        if captions_file:
            raise ChangeAgentError(f"{self.dataset_id} has no captions; remove captions_file={captions_file!r}")
        self.split, self.layout = split, self.resolve_layout(self.root, layout)
        self.names = self.list_names(self.root, split, self.layout)
        if not self.names:
            raise ChangeAgentError(f"{self.root} has no {split} pairs ({self.layout} layout)")
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        if self.mean.shape != self.std.shape or (self.std <= 0).any():
            raise ChangeAgentError(f"mean {tuple(mean)} and std {tuple(std)} must have equal length, std > 0")
        self.transforms = transforms

    @staticmethod
    def resolve_layout(root: Path, layout: str) -> str:
        """The layout of the folder at `root` (`crop` or `official`; a subclass may read its own)."""
        return detect_layout(root, layout)

    @staticmethod
    def list_names(root: Path, split: str, layout: str) -> list[str]:
        """File names of `split`: the list file (crop layout) or the split's A/ folder (official)."""
        if layout == "crop":
            lst = root / "list" / f"{split}.txt"
            if not lst.is_file():
                raise ChangeAgentError(f"split list {lst} does not exist")
            names = [ln.strip() for ln in lst.read_text(encoding="utf-8").splitlines() if ln.strip()]
            return [n if Path(n).suffix else f"{n}.png" for n in names]
        folder = root / split / "A"
        if not folder.is_dir():
            raise ChangeAgentError(f"split folder {folder} does not exist")
        return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".tif", ".tiff"))

    def files(self, index: int) -> dict[str, Path]:
        name = self.names[index]
        base = self.root if self.layout == "crop" else self.root / self.split
        return {k: base / k / name for k in ("A", "B", "label")}

    def __len__(self) -> int:
        return len(self.names)

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(A uint8 [H,W,3], B uint8 [H,W,3], change int64 [H,W] 0/1) of pair `index`."""
        f = self.files(index)
        a, b, label = read_image(f["A"]), read_image(f["B"]), read_label(f["label"])
        check_same_size({"A": a, "B": b, "label": label}, f)
        return a, b, decode_binary_label(label, f["label"])

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        a, b, change = self.load_raw(index)
        flag = int(change.any())
        if self.transforms is not None:
            out = self.transforms({"image_a": a, "image_b": b, "masks": {"change": change}, "captions": []})
            a, b, change = out["image_a"], out["image_b"], np.asarray(out["masks"]["change"], np.int64)
        if a.shape[-1] != len(self.mean):
            raise ChangeAgentError(f"{name}: images have {a.shape[-1]} channels but mean/std have {len(self.mean)}")
        img = np.stack([a, b]).transpose(0, 3, 1, 2).astype(np.float32)
        img *= (1.0 / (255.0 * self.std)).reshape(1, -1, 1, 1)
        img -= (self.mean / self.std).reshape(1, -1, 1, 1)
        return {"image": torch.from_numpy(img), "change": torch.from_numpy(np.ascontiguousarray(change)),
                "dataset": self.dataset_id, "name": name, "changeflag": flag}


def write_crop_layout(root: Path, pairs: list[Pair]) -> None:
    """Synthetic pairs -> A/ B/ label/ (0/255) + list/{split}.txt, LEVIR-CD crop names."""
    lists: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i, p in enumerate(pairs):
        name = f"{p['split']}_{i + 1}_0000_0000.png"
        save_png(root / "A" / name, p["a"])
        save_png(root / "B" / name, p["b"])
        save_png(root / "label" / name, ((p["label"] > 0) * 255).astype(np.uint8))
        lists[p["split"]].append(name)
    (root / "list").mkdir(parents=True, exist_ok=True)
    for split, names in lists.items():
        (root / "list" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")


def write_official_layout(root: Path, pairs: list[Pair]) -> None:
    """Synthetic pairs -> {split}/{A,B,label}/<split>_<n>.png with 0/255 labels (LEVIR-CD release)."""
    for i, p in enumerate(pairs):
        name = f"{p['split']}_{i + 1}.png"
        base = root / p["split"]
        save_png(base / "A" / name, p["a"])
        save_png(base / "B" / name, p["b"])
        save_png(base / "label" / name, ((p["label"] > 0) * 255).astype(np.uint8))


def synth_binary(out: Path, n_train: int, n_val: int, n_test: int, size: int, seed: int, overwrite: bool = False,
                 progress: bool = True, difficulty: str = "default", layout: str = "crop", **_: Any) -> dict[str, Any]:
    """The synthetic LEVIR benchmark as a binary change folder (roads and buildings = change)."""
    write = write_official_layout if layout == "official" else write_crop_layout
    return relayout("levir-mci", out, write, n_train, n_val, n_test, size, seed, overwrite, progress, difficulty=difficulty)
