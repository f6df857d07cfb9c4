"""From blended logits to class maps, changed fractions and object counts, by the head's dataset spec.

Blended logit channels (`channels(head)`): [change] plus the dataset's semantic head, decoded as its
spec says (`DatasetSpec.decoding`): `classes` (e.g. levir_mci = [change, background, road,
building]; `mask` = argmax), `semantic_pair` (e.g. second_cc = [change, K classes of date A, K of
date B]; `from`/`to` land cover on changed pixels, `mask` = change), `binary` (levir_cd, whu_cd, ...:
[change] only; `mask` = change). `head` is a dataset id or a (bound) `DatasetSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from changeagent.data.registry import get_spec
from changeagent.data.spec import CHANGE_PALETTE, DatasetSpec
from changeagent.errors import ChangeAgentError
from changeagent.inference.outputs import NODATA
from changeagent.models.mask_decoder import class_maps
from changeagent.tasks.mask import split_dense

EIGHT = np.ones((3, 3), bool)  # 8-connectivity: diagonal neighbours belong to one object
Head = str | DatasetSpec


def spec_of(head: Head) -> DatasetSpec:
    if isinstance(head, DatasetSpec):
        return head
    try:
        return get_spec(head)
    except ChangeAgentError as e:
        raise ChangeAgentError(f"--head: {e}") from None


def channels(head: Head) -> int:
    spec = spec_of(head)
    return 1 + spec.dates * spec.num_classes


def map_key(head: Head) -> str:
    """The class map the statistics and the overlay use: `to` (date-B land cover) or `mask`."""
    return "to" if spec_of(head).decoding == "semantic_pair" else "mask"


def palettes(head: Head) -> dict[str, list[tuple[int, int, int]]]:
    """Palette of every map `decode_maps` returns for `head`."""
    spec = spec_of(head)
    change = list(CHANGE_PALETTE)
    if spec.decoding == "classes":
        return {"mask": list(spec.palette), "change": change}
    if spec.decoding == "semantic_pair":
        return {"mask": change, "change": change, "from": list(spec.palette), "to": list(spec.palette)}
    return {"mask": change, "change": change}


def decode_maps(logits: np.ndarray, head: Head, valid: np.ndarray | None) -> dict[str, np.ndarray]:
    """float32 [K, H, W] blended logits (the mask task's dense layout) -> uint8 [H, W] maps, NODATA
    where `valid` is False, decoded by `models.mask_decoder.class_maps` (the rule evaluation uses).

    `change` is the binary change head (logit > 0). `classes`: `mask` = argmax of the head's classes.
    `semantic_pair`: `mask` = `change`; `from`/`to` = argmax over the land-cover classes 1..K-1
    (class 0 "unchanged" is never trained, SPEC §1.2) on changed pixels, 0 elsewhere. `binary`:
    `mask` = `change`.
    """
    spec = spec_of(head)
    change_logit, head_logits = split_dense(torch.from_numpy(np.ascontiguousarray(logits, np.float32)), spec)
    changed, maps = class_maps(change_logit, head_logits, spec.decoding)
    change = changed.numpy().astype(np.uint8)
    out = {"change": change}
    if spec.decoding == "classes":
        out["mask"] = maps.numpy().astype(np.uint8)
    elif spec.decoding == "semantic_pair":
        out["from"], out["to"] = (m.astype(np.uint8) for m in maps.numpy())
        out["mask"] = change.copy()
    else:
        out["mask"] = change.copy()
    if valid is not None:
        for m in out.values():
            m[~valid] = NODATA
    return out


def class_names(head: Head) -> tuple[str, ...]:
    """Change classes reported in changed_fraction / object_counts (not background/unchanged)."""
    spec = spec_of(head)
    return tuple(spec.classes[1:]) if spec.dates else ("change",)


def class_histogram(maps: dict[str, np.ndarray], head: Head) -> dict[str, np.ndarray]:
    """int64 pixel counts per class id (0..255) of the maps the statistics use."""
    keys = ("change", "from", "to") if map_key(head) == "to" else ("mask", "change")
    return {k: np.bincount(maps[k].reshape(-1), minlength=256) for k in keys}


def fractions(hist: dict[str, np.ndarray], head: Head) -> dict[str, Any]:
    """changed_fraction per class (of valid pixels), plus the binary change fraction.

    semantic_pair heads: `changed_fraction` counts the date-B class ("changed into"),
    `changed_fraction_from` the date-A class.
    """
    valid = int(hist["change"][:NODATA].sum())
    den = max(valid, 1)
    names = class_names(head)
    key = map_key(head)
    out: dict[str, Any] = {
        "changed_fraction": {n: float(hist[key][i + 1]) / den for i, n in enumerate(names)},
        "change_fraction": float(hist["change"][1]) / den,
        "valid_pixels": valid,
    }
    if key == "to":
        out["changed_fraction_from"] = {n: float(hist["from"][i + 1]) / den for i, n in enumerate(names)}
    return out


def object_counts(maps: dict[str, np.ndarray], head: Head, min_area: int) -> dict[str, int]:
    """Connected components (8-connected) of each change class with >= `min_area` pixels."""
    m = maps[map_key(head)]
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
    """Result of one pair. Maps are uint8 [H, W] with NODATA (255) where an input is nodata (none
    when the model has no per-pixel task); `fields` are the tasks' record fields (`TaskSpec.window`,
    e.g. {"caption": ...})."""

    maps: dict[str, np.ndarray]
    fields: dict[str, Any]
    changed_fraction: dict[str, float]
    object_counts: dict[str, int]
    change_fraction: float | None
    head: Any  # dataset id (str) or its bound DatasetSpec
    timings: dict[str, float] = field(default_factory=dict)
    windows: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    size: tuple[int, ...] | None = None  # (H, W) when there are no maps

    @property
    def caption(self) -> str:
        """The record's caption ("" when the model has no caption task)."""
        return str(self.fields.get("caption", ""))

    @property
    def text(self) -> str:
        """Every text field of the tasks, one after the other (the visualisation's caption line)."""
        return " | ".join(v for v in self.fields.values() if isinstance(v, str) and v)

    @property
    def mask(self) -> np.ndarray:
        """The head's class mask (classes: class ids, e.g. levir_mci 0 background, 1 road, 2 building;
        semantic_pair and binary heads: change)."""
        return self.maps["mask"]

    @property
    def change(self) -> np.ndarray:
        return self.maps["change"]

    def record(self) -> dict[str, Any]:
        """JSON-ready summary (paths are added by the writer)."""
        h, w = self.mask.shape if self.maps else (self.size or (0, 0))
        rec: dict[str, Any] = {
            **self.fields,
            "changed_fraction": self.changed_fraction,
            "object_counts": self.object_counts,
            "change_fraction": self.change_fraction,
            "head": spec_of(self.head).id,
            "height": int(h),
            "width": int(w),
        }
        rec.update(self.extra)
        if self.windows:
            rec["windows"] = self.windows
        rec["timings"] = {k: round(v, 4) for k, v in self.timings.items()}
        return rec
