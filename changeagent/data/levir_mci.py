"""LEVIR-MCI: bi-temporal 256x256 pairs, a road/building change mask and five captions per pair.

Layout (SPEC §1.1)::

    <root>/LevirCCcaptions.json
    <root>/images/{train,val,test}/{A,B,label}/<filename>

Pairs come from the caption JSON (file numbering has gaps); images are decoded lazily per item.
`CaptionPairDataset` holds what LEVIR-MCI and SECOND-CC share (`second_cc.py` builds on it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from changeagent.data.constants import CANONICAL_NO_CHANGE, IGNORE_INDEX, LEVIR_CLASSES, LEVIR_MEAN, LEVIR_STD
from changeagent.data.images import check_same_size, read_image, read_label
from changeagent.data.labels import MASK_MODES, decode_levir_mask, levir_mask_encoding
from changeagent.data.spec import DatasetCfg, DatasetSpec
from changeagent.data.vocab import SPLITS, PairInfo, Vocabulary, read_karpathy
from changeagent.errors import ChangeAgentError
from changeagent.typed import opt

Transform = Callable[[dict[str, Any]], dict[str, Any]]


class CaptionPairDataset(Dataset):
    """Shared logic: caption JSON -> `pairs`, caption targets, normalisation, transforms."""

    dataset_id = ""
    default_captions_file = ""
    mask_keys: tuple[str, ...] = ()

    def __init__(
        self,
        root: str | Path,
        split: str,
        vocab: Vocabulary | str | Path | None,
        max_len: int,
        mean: Sequence[float],
        std: Sequence[float],
        transforms: Transform | None,
        canonical_no_change: bool,
        captions_file: str | Path | None,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ChangeAgentError(f"dataset root {self.root} does not exist or is not a folder")
        if split not in SPLITS:
            raise ChangeAgentError(f"split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.captions_file = self.root / (captions_file or self.default_captions_file)
        if not self.captions_file.is_file():
            found = sorted(p.name for p in self.root.glob("*.json"))
            raise ChangeAgentError(
                f"caption file {self.captions_file} does not exist (JSON files in {self.root}: {found or 'none'})"
            )
        self.pairs: list[PairInfo] = [p for p in read_karpathy(self.captions_file) if p.split == split]
        if not self.pairs:
            raise ChangeAgentError(f"caption file {self.captions_file} has no pairs in split {split!r}")
        for folder in self.split_folders(self.root, split):
            if not folder.is_dir():
                raise ChangeAgentError(f"split folder {folder} does not exist ({self.captions_file} lists "
                                       f"{len(self.pairs)} {split} pairs)")
        self.vocab = Vocabulary.load(vocab) if isinstance(vocab, (str, Path)) else vocab
        self.max_len = max_len
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ChangeAgentError(f"mean {tuple(mean)} and std {tuple(std)} must have equal length, std > 0")
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.transforms = transforms
        self.canonical_no_change = canonical_no_change

    # -- layout, per dataset -------------------------------------------------------------------
    @staticmethod
    def split_folders(root: Path, split: str) -> list[Path]:
        raise NotImplementedError

    @staticmethod
    def pair_files(root: Path, info: PairInfo) -> dict[str, Path]:
        raise NotImplementedError

    @staticmethod
    def decode_files(files: dict[str, Path], mask_mode: str = "auto") -> tuple[dict[str, np.ndarray], str]:
        """Read and decode one pair's files (`data check`): (class maps by label key, label encoding or '')."""
        raise NotImplementedError

    def files(self, index: int) -> dict[str, Path]:
        """Paths of pair `index`: keys as in `pair_files`."""
        return self.pair_files(self.root, self.pairs[index])

    # -- shared steps ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.pairs)

    def target_captions(self, info: PairInfo) -> list[str]:
        """The five caption strings, or five copies of the canonical no-change sentence (trick on)."""
        captions = info.captions
        if self.canonical_no_change and CANONICAL_NO_CHANGE in captions:
            return [CANONICAL_NO_CHANGE] * len(captions)
        return captions

    def _apply_transforms(
        self, a: np.ndarray, b: np.ndarray, masks: dict[str, np.ndarray], captions: list[str], name: str
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], list[str]]:
        if self.transforms is None:
            return a, b, masks, captions
        out = self.transforms({"image_a": a, "image_b": b, "masks": masks, "captions": captions})
        try:
            a, b, captions = out["image_a"], out["image_b"], list(out["captions"])
            masks = {k: out["masks"][k] for k in self.mask_keys}
        except (KeyError, TypeError) as e:
            raise ChangeAgentError(f"transforms returned a dict without {e} for {name}") from None
        return a, b, masks, captions

    def _image_tensor(self, a: np.ndarray, b: np.ndarray) -> torch.Tensor:
        """uint8 [H, W, C] x2 -> float32 [2, C, H, W], (x / 255 - mean) / std."""
        if a.shape[-1] != len(self.mean) or b.shape[-1] != len(self.mean):
            raise ChangeAgentError(f"images have {a.shape[-1]} channels but mean/std have {len(self.mean)}")
        # numpy in place, channels first: torch's small-op threading stalls on busy CPUs
        out = np.stack([a, b]).transpose(0, 3, 1, 2).astype(np.float32)
        out *= (1.0 / (255.0 * self.std)).reshape(1, -1, 1, 1)
        out -= (self.mean / self.std).reshape(1, -1, 1, 1)
        return torch.from_numpy(out)

    def _finish(self, sample: dict[str, Any], captions: list[str]) -> dict[str, Any]:
        sample["captions"] = captions
        if self.vocab is not None:
            sample["caption_ids"] = torch.tensor(
                [self.vocab.encode(c.split(), self.max_len) for c in captions], dtype=torch.int64
            )
        return sample


def binary_change(labels: np.ndarray) -> torch.Tensor:
    """int64 [H, W] class ids -> int64 [H, W] 0/1, keeping IGNORE_INDEX pixels (e.g. crop padding)."""
    change = np.where(labels == IGNORE_INDEX, IGNORE_INDEX, labels > 0).astype(np.int64)
    return torch.from_numpy(change)


class LevirMCI(CaptionPairDataset):
    """LEVIR-MCI split as a map-style dataset; samples follow docs/design.md.

    `mask_mode`: "auto" detects each label's encoding (see `changeagent.data.labels`); "binary" reads
    LEVIR-CD style 0/255 labels, 255 = building. `canonical_no_change`: the reference training
    trick (five copies of "the scene is the same as before" for no-change pairs); meant for train.
    """

    dataset_id = "levir_mci"
    default_captions_file = "LevirCCcaptions.json"
    mask_keys = ("mask",)

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        vocab: Vocabulary | str | Path | None = None,
        max_len: int = 41,
        mean: Sequence[float] = LEVIR_MEAN,
        std: Sequence[float] = LEVIR_STD,
        transforms: Transform | None = None,
        mask_mode: str = "auto",
        canonical_no_change: bool = False,
        captions_file: str | Path | None = None,
    ):
        if mask_mode not in ("auto", "binary"):
            raise ChangeAgentError(f"mask_mode must be 'auto' or 'binary', got {mask_mode!r}")
        self.mask_mode = mask_mode
        super().__init__(root, split, vocab, max_len, mean, std, transforms, canonical_no_change, captions_file)

    @staticmethod
    def split_folders(root: Path, split: str) -> list[Path]:
        return [root / "images" / split / sub for sub in ("A", "B", "label")]

    @staticmethod
    def pair_files(root: Path, info: PairInfo) -> dict[str, Path]:
        base = root / "images" / info.split
        return {k: base / k / info.name for k in ("A", "B", "label")}

    @staticmethod
    def decode_files(files: dict[str, Path], mask_mode: str = "auto") -> tuple[dict[str, np.ndarray], str]:
        a, b, label = read_image(files["A"]), read_image(files["B"]), read_label(files["label"])
        check_same_size({"A": a, "B": b, "label": label}, files)
        return {"label": decode_levir_mask(label, files["label"], mask_mode)}, levir_mask_encoding(label)

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decoded (A uint8 [H,W,3], B uint8 [H,W,3], mask int64 [H,W]) of pair `index`."""
        f = self.files(index)
        a, b, label = read_image(f["A"]), read_image(f["B"]), read_label(f["label"])
        check_same_size({"A": a, "B": b, "label": label}, f)
        return a, b, decode_levir_mask(label, f["label"], self.mask_mode)

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = self.pairs[index]
        a, b, mask = self.load_raw(index)
        flag = info.changeflag if info.changeflag is not None else int((mask > 0).any())
        a, b, masks, captions = self._apply_transforms(a, b, {"mask": mask}, self.target_captions(info), info.name)
        mask = np.asarray(masks["mask"], dtype=np.int64)
        sample = {
            "image": self._image_tensor(a, b),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)),
            "change": binary_change(mask),
            "dataset": self.dataset_id,
            "name": info.name,
            "changeflag": flag,
        }
        return self._finish(sample, captions)


# -- the dataset spec (registry entry) ---------------------------------------------------------------


@dataclass
class LevirMCICfg(DatasetCfg):
    mask_mode: str = opt("auto", "auto (detect grey/colour labels) | binary (0/255 labels)", choices=MASK_MODES)


def _synth(out: Path, n_train: int, n_val: int, n_test: int, size: int, seed: int, overwrite: bool = False,
           progress: bool = True, difficulty: str = "default", mask_variant: str = "grey", **_: Any) -> dict[str, Any]:
    from changeagent.data.synth.writer import generate_with_summary

    return generate_with_summary("levir-mci", out, n_train, n_val, n_test, size=size, seed=seed,
                                 mask_variant=mask_variant, overwrite=overwrite, progress=progress,
                                 difficulty=difficulty)


SPEC = DatasetSpec(
    id="levir_mci",
    title="LEVIR-MCI",
    reader=LevirMCI,
    targets=("change", "mask", "captions"),
    classes=LEVIR_CLASSES,
    palette=((0, 0, 0), (255, 255, 0), (255, 0, 0)),  # the colour release (SPEC §1.1)
    dates=1,
    mean=LEVIR_MEAN,
    std=LEVIR_STD,
    metrics=("segmentation",),
    captions_file="LevirCCcaptions.json",
    layout="LevirCCcaptions.json + images/{train,val,test}/{A,B,label}/*.png",
    config=LevirMCICfg,
    synth=_synth,
)
