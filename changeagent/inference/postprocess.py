"""From blended logits to class maps, changed fractions and object counts.

Blended logit channels (`channels(head)`): levir_mci = [change, background, road, building];
second_cc = [change, 7 land-cover classes of date A, 7 of date B].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from changeagent.data.constants import LEVIR_CLASSES, NUM_CLASSES, SECOND_CLASSES
from changeagent.errors import ChangeAgentError
from changeagent.inference.outputs import CHANGE_PALETTE, LEVIR_PALETTE, NODATA, SECOND_PALETTE

HEADS = ("levir_mci", "second_cc")
EIGHT = np.ones((3, 3), bool)  # 8-connectivity: diagonal neighbours belong to one object


def channels(head: str) -> int:
    if head not in HEADS:
        raise ChangeAgentError(f"--head {head!r} is not one of {HEADS}")
    return 1 + (NUM_CLASSES["levir_mci"] if head == "levir_mci" else 2 * NUM_CLASSES["second_cc"])


def palettes(head: str) -> dict[str, list[tuple[int, int, int]]]:
    """Palette of every map `decode_maps` returns for `head`."""
    if head == "levir_mci":
        return {"mask": LEVIR_PALETTE, "change": CHANGE_PALETTE}
    return {"mask": CHANGE_PALETTE, "change": CHANGE_PALETTE, "from": SECOND_PALETTE, "to": SECOND_PALETTE}


def decode_maps(logits: np.ndarray, head: str, valid: np.ndarray | None) -> dict[str, np.ndarray]:
    """float32 [K, H, W] blended logits -> uint8 [H, W] maps, NODATA where `valid` is False.

    `change` is the binary change head (logit > 0). levir_mci: `mask` = argmax of the 3 LEVIR
    classes. second_cc: `mask` = `change`; `from`/`to` = argmax over the 6 land-cover classes
    (class 0 "unchanged" is never trained, SPEC §1.2) on changed pixels, 0 elsewhere.
    """
    change = (logits[0] > 0).astype(np.uint8)
    out = {"change": change}
    if head == "levir_mci":
        out["mask"] = np.argmax(logits[1:4], axis=0).astype(np.uint8)
    else:
        k = NUM_CLASSES["second_cc"]
        for i, name in enumerate(("from", "to")):
            lc = (np.argmax(logits[2 + i * k : 1 + (i + 1) * k], axis=0) + 1).astype(np.uint8)
            out[name] = np.where(change > 0, lc, 0).astype(np.uint8)
        out["mask"] = change
    if valid is not None:
        for m in out.values():
            m[~valid] = NODATA
    return out


def class_names(head: str) -> tuple[str, ...]:
    """Change classes reported in changed_fraction / object_counts (not background/unchanged)."""
    return LEVIR_CLASSES[1:] if head == "levir_mci" else SECOND_CLASSES[1:]


def class_histogram(maps: dict[str, np.ndarray], head: str) -> dict[str, np.ndarray]:
    """int64 pixel counts per class id (0..255) of the maps the statistics use."""
    keys = ("mask", "change") if head == "levir_mci" else ("change", "from", "to")
    return {k: np.bincount(maps[k].reshape(-1), minlength=256) for k in keys}


def fractions(hist: dict[str, np.ndarray], head: str) -> dict[str, Any]:
    """changed_fraction per class (of valid pixels), plus the binary change fraction.

    second_cc: `changed_fraction` counts the date-B class ("changed into"), `changed_fraction_from`
    the date-A class.
    """
    valid = int(hist["change"][:NODATA].sum())
    den = max(valid, 1)
    names = class_names(head)
    key = "mask" if head == "levir_mci" else "to"
    out: dict[str, Any] = {
        "changed_fraction": {n: float(hist[key][i + 1]) / den for i, n in enumerate(names)},
        "change_fraction": float(hist["change"][1]) / den,
        "valid_pixels": valid,
    }
    if head == "second_cc":
        out["changed_fraction_from"] = {n: float(hist["from"][i + 1]) / den for i, n in enumerate(names)}
    return out


def object_counts(maps: dict[str, np.ndarray], head: str, min_area: int) -> dict[str, int]:
    """Connected components (8-connected) of each change class with >= `min_area` pixels."""
    key = "mask" if head == "levir_mci" else "to"
    m = maps[key]
    counts = {}
    for i, name in enumerate(class_names(head)):
        lab, n = ndimage.label(m == i + 1, structure=EIGHT)
        if n == 0:
            counts[name] = 0
            continue
        area = np.bincount(lab.reshape(-1))[1:]
        counts[name] = int((area >= min_area).sum())
    return counts


@dataclass
class Prediction:
    """Result of one pair. Maps are uint8 [H, W] with NODATA (255) where an input is nodata."""

    maps: dict[str, np.ndarray]
    caption: str
    changed_fraction: dict[str, float]
    object_counts: dict[str, int]
    change_fraction: float
    head: str
    timings: dict[str, float] = field(default_factory=dict)
    windows: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """The head's class mask (levir_mci: 0 background, 1 road, 2 building; second_cc: change)."""
        return self.maps["mask"]

    @property
    def change(self) -> np.ndarray:
        return self.maps["change"]

    def record(self) -> dict[str, Any]:
        """JSON-ready summary (paths are added by the writer)."""
        rec: dict[str, Any] = {
            "caption": self.caption,
            "changed_fraction": self.changed_fraction,
            "object_counts": self.object_counts,
            "change_fraction": self.change_fraction,
            "head": self.head,
            "height": int(self.mask.shape[0]),
            "width": int(self.mask.shape[1]),
        }
        rec.update(self.extra)
        if self.windows:
            rec["windows"] = self.windows
        rec["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        return rec
