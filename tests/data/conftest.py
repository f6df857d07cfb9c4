"""Tiny LEVIR-MCI and SECOND-CC folders in the exact published layouts (JSON + PNGs).

LEVIR-MCI fixture (32x32): every mask encoding (grey L, grey stored as RGB, channel-0-only RGB,
colour yellow/red), numbering gaps, raw-only and token captions, one flag/mask disagreement.
SECOND-CC fixture: white and black "unchanged", every palette colour, `restval` entries and entries
without `changeflag`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from changeagent.data.constants import NO_CHANGE_SENTENCES
from changeagent.data.labels import SECOND_PALETTE

CHANGE_CAPTIONS = (
    "A road is built at the top .",
    "some buildings appear , and a road is built",
    "a house is constructed on the bareland?",
    "a road appears; buildings are built",
    "Many buildings appear near the new road .",
)

# name -> (label encoding, changeflag, captions given as "raw" only?)
LEVIR_PAIRS = {
    "train": {
        "train_000001.png": ("grey", 0, False),  # all background
        "train_000002.png": ("grey", 1, True),
        "train_000004.png": ("grey_rgb", 1, False),
        "train_000005.png": ("colour", 1, True),
        "train_000007.png": ("grey", 0, False),  # flag 0 but the mask has change: a disagreement
        "train_000008.png": ("red_only", 1, False),
    },
    "val": {"val_000001.png": ("colour", 1, False), "val_000003.png": ("grey", 0, False)},
    "test": {"test_000002.png": ("grey_rgb", 1, True), "test_000003.png": ("grey", 0, False)},
}
LEVIR_DISAGREE = ("train_000007.png",)

# colour that encodes class c (0 bg, 1 road, 2 building) in each LEVIR label encoding
LEVIR_ENCODINGS = {
    "grey": (0, 128, 255),
    "grey_rgb": ((0, 0, 0), (128, 128, 128), (255, 255, 255)),
    "red_only": ((0, 0, 0), (128, 0, 0), (255, 0, 0)),
    "colour": ((0, 0, 0), (255, 255, 0), (255, 0, 0)),
}
SECOND_COLOURS = {}  # class id -> colour (white for unchanged)
for colour, cid in SECOND_PALETTE.items():
    SECOND_COLOURS.setdefault(cid, colour)


def class_map(size: int, seed: int, num_classes: int, empty: bool = False) -> np.ndarray:
    """Deterministic int64 [size, size] class map with a block of every class > 0."""
    out = np.zeros((size, size), dtype=np.int64)
    if empty:
        return out
    rng = np.random.default_rng(seed)
    step = max(size // num_classes, 2)
    for c in range(1, num_classes):
        y, x = rng.integers(0, size - step, size=2)
        out[y : y + step, x : x + step] = c
    return out


def encode_levir(mask: np.ndarray, encoding: str) -> np.ndarray:
    """Class ids -> raw label pixels in the given encoding."""
    table = np.asarray(LEVIR_ENCODINGS[encoding], dtype=np.uint8)
    return table[mask]


def rgb(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def sentences(changeflag: int, raw_only: bool, imgid: int) -> list[dict]:
    texts = NO_CHANGE_SENTENCES if changeflag == 0 else CHANGE_CAPTIONS
    out = []
    for j, text in enumerate(texts):
        s: dict = {"raw": " " + text, "imgid": imgid, "sentid": imgid * 5 + j}
        if not raw_only:
            s["tokens"] = text.lower().replace(",", " ,").replace(";", " ;").replace(".", "").replace("?", "").split()
        out.append(s)
    return out


def karpathy_entry(
    name: str, split: str, changeflag: int | None, raw_only: bool, imgid: int, changed: bool | None = None
) -> dict:
    """One Karpathy `images[]` item; captions describe change when `changed` (default: the flag)."""
    changed = bool(changeflag) if changed is None else changed
    entry = {
        "filename": name,
        "filepath": split,
        "split": split,
        "imgid": imgid,
        "sentences": sentences(int(changed), raw_only, imgid),
        "sentids": list(range(imgid * 5, imgid * 5 + 5)),
    }
    if changeflag is not None:
        entry["changeflag"] = changeflag
    return entry


def write_levir_mci(root: Path, size: int = 32, pairs: dict | None = None) -> Path:
    """Write a LEVIR-MCI layout under `root`; returns `root`."""
    pairs = LEVIR_PAIRS if pairs is None else pairs
    images = []
    for split, items in pairs.items():
        for name, (encoding, flag, raw_only) in items.items():
            imgid = len(images)
            mask = levir_mask_for(name, size, flag)
            for sub, arr in (("A", rgb(size, 2 * imgid)), ("B", rgb(size, 2 * imgid + 1)),
                             ("label", encode_levir(mask, encoding))):
                path = root / "images" / split / sub / name
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(path)
            images.append(karpathy_entry(name, split, flag, raw_only, imgid))
    (root / "LevirCCcaptions.json").write_text(json.dumps({"images": images}))
    return root


def levir_mask_for(name: str, size: int, flag: int) -> np.ndarray:
    """The class map the fixture writes for `name` (no change for flag-0 pairs except disagreements)."""
    empty = flag == 0 and name not in LEVIR_DISAGREE
    return class_map(size, seed=sum(map(ord, name)), num_classes=3, empty=empty)


# SECOND-CC: name -> (split in JSON, changeflag or None, unchanged colour)
SECOND_PAIRS = {
    "00001.png": ("train", 1, (255, 255, 255)),
    "00002.png": ("restval", None, (0, 0, 0)),  # restval, no flag, black = unchanged
    "00003.png": ("train", None, (255, 255, 255)),  # no flag, no change at all
    "00004.png": ("val", 1, (255, 255, 255)),
    "00005.png": ("test", None, (255, 255, 255)),
    "00006.png": ("test", 0, (255, 255, 255)),
}
SECOND_EMPTY = ("00003.png", "00006.png")


def second_sems_for(name: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The (sem A, sem B) class maps of `name`: same changed region, different classes."""
    if name in SECOND_EMPTY:
        z = np.zeros((size, size), dtype=np.int64)
        return z, z.copy()
    sem_a = class_map(size, seed=sum(map(ord, name)), num_classes=7)
    sem_b = np.where(sem_a > 0, (sem_a % 6) + 1, 0)  # every changed pixel changes class
    return sem_a, sem_b


def write_second_cc(root: Path, size: int = 32, captions_file: str = "SECOND-CC-AUG.json") -> Path:
    """Write a SECOND-CC layout under `root`; returns `root`."""
    images = []
    for imgid, (name, (split, flag, unchanged)) in enumerate(SECOND_PAIRS.items()):
        folder = "train" if split == "restval" else split
        sem_a, sem_b = second_sems_for(name, size)
        for sub, arr in (("rgb/A", rgb(size, 100 + imgid)), ("rgb/B", rgb(size, 200 + imgid)),
                         ("sem/A", paint_second(sem_a, unchanged)), ("sem/B", paint_second(sem_b, unchanged))):
            path = root / folder / sub / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path)
        images.append(karpathy_entry(name, split, flag, imgid % 2 == 0, imgid, changed=name not in SECOND_EMPTY))
    (root / captions_file).parent.mkdir(parents=True, exist_ok=True)
    (root / captions_file).write_text(json.dumps({"images": images}))
    return root


def paint_second(sem: np.ndarray, unchanged: tuple[int, int, int]) -> np.ndarray:
    table = np.asarray([unchanged] + [SECOND_COLOURS[c] for c in range(1, 7)], dtype=np.uint8)
    return table[sem]


@pytest.fixture
def levir_root(tmp_path: Path) -> Path:
    return write_levir_mci(tmp_path / "levir")


@pytest.fixture
def second_root(tmp_path: Path) -> Path:
    return write_second_cc(tmp_path / "second")


# Test files reach the writers through this fixture, not `from conftest import ...`: another test
# folder's conftest.py may already own the module name "conftest".
_THIS = sys.modules[__name__]


@pytest.fixture
def fx() -> ModuleType:
    """This module: the fixture writers and the expected class maps."""
    return _THIS
