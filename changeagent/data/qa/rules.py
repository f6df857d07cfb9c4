"""The answer rules of change questions (SPEC §8): a question structure + class maps -> answer + evidence.

One module, one code path for every use: deriving questions from label maps (`data qa`, on-the-fly
training), re-scoring a dataset, and the *measured* answer computed from a model's predicted maps.

Maps (`Evidence(maps, lexicon, valid=None)`): int [T, H, W]. T = 2: one land-cover map per date in
the SECOND ids (0 unchanged, 1..6 on changed pixels; SECOND, SECOND-CC, CDVQA labels); T = 1: one
change-class map (LEVIR-MCI: 0 background, 1 road, 2 building). `valid` (bool [H, W]) drops pixels
(prediction nodata): they count in no area and not in the tile.

Notation: `area(c, t)` = pixels of class c in the date-t map; no date = `area(c, 1) + area(c, 2)`;
`tile` = valid pixels; `changed` = pixels with a class in either map. With one map (T = 1) a named
date cannot be told apart (the map marks what changed, not when): the rules use the map and the
evidence says `"date_ignored": true`. Rules by type (`Question.type`):

| type | answer |
|---|---|
| change_or_not | `yes` iff area(c, t) > 0; no class: changed > 0 |
| increase_or_not / decrease_or_not | area(c, 2) > / < area(c, 1) (T = 2 only) |
| largest_change / smallest_change | arg max / arg min of area(·, t) over the classes present; ties and a tile without change: the first in `lexicon.ordered` (CDVQA answers NVG_surface on a tile without change) |
| change_to_what | the most frequent date-2 class on the pixels whose date-1 class is c (T = 2) |
| change_from_what | the most frequent date-1 class on the pixels whose date-2 class is c (QAG-360K; T = 2) |
| change_ratio | ratio_bin(changed, tile); `negated` ("what did not change"): ratio_bin(tile - changed, tile) |
| change_ratio_types | ratio_bin(pixels of c at t, tile); no date: pixels of c in either map (a sum could exceed the tile) |
| change_count | objects of c (8-connected components, area > 5 px, lexicon.components) in the map of t; no class: of any change |
| change_position | `yes` iff a pixel of c (no class: any change) at t lies in the region (a grid cell or a side) |
| change_location | the grid cell holding most pixels of c (no class: any change) at t; ties: the first cell |

With T = 2 and no date, change_count / change_position / change_location use the pixels of c in
either map. A class absent from the relevant map still gets an answer (the rule on zeros, as CDVQA
does on tiles without change) and `"present": false` in the evidence.

API: `Question` (the structure; `parse.parse_question` builds it from text), `Evidence` (per-map
statistics, cached, JSON via `summary()`), `answer(question, evidence) -> Answer`,
`answer_maps(question, maps, lexicon, valid=None)`, `from_decoded(maps, dates)` for the dict of
`inference.postprocess.decode_maps` (`from`/`to` or `mask`, 255 = nodata), `measured_answer(question,
decoded_maps, lexicon, dates)` (the measured answer of a prediction), `split_nodata(maps)` for training
targets whose augmented pixels are IGNORE_INDEX (255). Bad questions (unknown type,
a class the maps cannot hold, a type one map cannot answer) raise `RuleError` (a ChangeAgentError).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from changeagent.data.lexicon import (
    GRID_CELLS,
    MIN_OBJECT_AREA,
    ClassLexicon,
    cell_areas,
    components,
    ratio_bin,
    region_cells,
)
from changeagent.data.qa.answers import cell_answer, count_answer
from changeagent.errors import ChangeAgentError

CDVQA_TYPES = ("change_or_not", "increase_or_not", "decrease_or_not", "smallest_change", "largest_change",
               "change_to_what", "change_ratio", "change_ratio_types")
QAG_TYPES = (*CDVQA_TYPES, "change_from_what")
LEVIR_TYPES = ("change_or_not", "change_ratio", "change_ratio_types", "largest_change", "smallest_change",
               "change_count", "change_position", "change_location")
QUESTION_TYPES: tuple[str, ...] = tuple(dict.fromkeys((*QAG_TYPES, *LEVIR_TYPES)))

NEEDS_CLASS = ("increase_or_not", "decrease_or_not", "change_to_what", "change_from_what", "change_ratio_types")
NO_CLASS = ("largest_change", "smallest_change", "change_ratio")
TWO_MAPS = ("increase_or_not", "decrease_or_not", "change_to_what", "change_from_what")
NODATA = 255  # inference.outputs.NODATA: pixels outside the scene / invalid input


class RuleError(ChangeAgentError):
    """A question the rules cannot answer on these maps (the message says why)."""


@dataclass(frozen=True)
class Question:
    """A change question's structure.

    type: one of QUESTION_TYPES; cls: class id in the lexicon's label space (None: every change);
    date: 1 before, 2 after, None both; negated: change_ratio asks for the unchanged part;
    region: change_position's region, a name of lexicon.GRID_CELLS or lexicon.SIDES.
    """

    type: str
    cls: int | None = None
    date: int | None = None
    negated: bool = False
    region: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Question:
        return cls(**d)


@dataclass
class Answer:
    """The answer string, the question it answers and the evidence the rule used (JSON-ready)."""

    question: Question
    answer: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question.to_dict(), "answer": self.answer, "evidence": self.evidence}


def check_question(q: Question, lexicon: ClassLexicon, dates: int) -> None:
    """Raise RuleError unless the rules can answer `q` on maps of `dates` maps of this label space."""
    if q.type not in QUESTION_TYPES:
        raise RuleError(f"unknown question type {q.type!r}; known: {', '.join(QUESTION_TYPES)}")
    if q.date not in (None, 1, 2):
        raise RuleError(f"question date must be 1, 2 or None, got {q.date!r}")
    if q.type in NEEDS_CLASS and q.cls is None:
        raise RuleError(f"{q.type} needs a class")
    if q.type in NO_CLASS and q.cls is not None:
        raise RuleError(f"{q.type} takes no class (got class id {q.cls})")
    if q.cls is not None and q.cls not in lexicon.mapped:
        names = {t.id: t.answer for t in lexicon.terms}
        raise RuleError(f"class {names.get(q.cls, q.cls)!r} has no id in the {lexicon.id} maps (they hold "
                        f"{', '.join(lexicon.term(i).answer for i in lexicon.mapped)})")
    if q.type in TWO_MAPS and dates != 2:
        raise RuleError(f"{q.type} needs a land-cover map per date; the {lexicon.id} label space has one "
                        f"change map")
    if q.type == "change_position":
        if q.region is None:
            raise RuleError("change_position needs a region")
        try:
            region_cells(q.region)
        except ValueError:
            raise RuleError(f"unknown region {q.region!r}") from None
    if q.negated and q.type != "change_ratio":
        raise RuleError(f"{q.type} cannot be negated")


class Evidence:
    """Statistics of one pair's class maps that the rules read (computed once, cached).

    maps: int [T, H, W] (T = 2 land cover per date, T = 1 one change-class map); valid: bool [H, W].
    """

    def __init__(self, maps: np.ndarray, lexicon: ClassLexicon, valid: np.ndarray | None = None) -> None:
        m = np.asarray(maps)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3 or m.shape[0] not in (1, 2) or m.dtype.kind not in "iu":
            raise RuleError(f"class maps must be integer [T, H, W] with T = 1 or 2, got {m.dtype} {m.shape}")
        k = max(lexicon.mapped) + 1
        if valid is not None:
            valid = np.asarray(valid, bool)
            if valid.shape != m.shape[1:]:
                raise RuleError(f"valid mask {valid.shape} does not match the maps {m.shape[1:]}")
            m = np.where(valid[None], m, 0)
        bad = (m < 0) | (m >= k)
        if bad.any():
            raise RuleError(f"class maps hold id {int(m[bad][0])}; the {lexicon.id} label space has ids 0..{k - 1}")
        self.maps = m.astype(np.int64)
        self.lexicon = lexicon
        self.dates = m.shape[0]
        self.k = k
        self.tile = int(valid.sum()) if valid is not None else int(m.shape[1] * m.shape[2])
        self.areas = np.stack([np.bincount(x.ravel(), minlength=k)[:k] for x in self.maps])  # [T, K]
        if valid is not None:  # invalid pixels were set to 0: they are not unchanged pixels
            self.areas[:, 0] -= int((~valid).sum())
        self.changed = int((self.maps > 0).any(0).sum())
        self.transitions = (np.bincount((self.maps[0] * k + self.maps[1]).ravel(), minlength=k * k)
                            .reshape(k, k) if self.dates == 2 else None)  # [K, K]: (date-1 class, date-2 class)
        self._objects: dict[tuple[int | None, int | None], list[Any]] = {}

    # -- per class and date
    def area(self, c: int, date: int | None) -> int:
        """area(c, t); no date: area(c, 1) + area(c, 2) (one map: its area, whatever the date)."""
        if self.dates == 1 or date is None:
            return int(self.areas[:, c].sum())
        return int(self.areas[date - 1, c])

    def class_mask(self, c: int | None, date: int | None) -> np.ndarray:
        """bool [H, W]: pixels of class c (None: any change) in the map of `date` (None: either map)."""
        maps = self.maps if self.dates == 1 or date is None else self.maps[date - 1 : date]
        return np.asarray((maps > 0).any(0) if c is None else (maps == c).any(0))

    def objects(self, c: int | None, date: int | None) -> list[Any]:
        """lexicon.components of class_mask(c, date), area > 5 px (cached)."""
        key = (c, None if self.dates == 1 else date)
        if key not in self._objects:
            self._objects[key] = components(self.class_mask(c, date), MIN_OBJECT_AREA)[1]
        return self._objects[key]

    def name(self, c: int) -> str:
        return self.lexicon.term(c).answer

    def summary(self) -> dict[str, Any]:
        """The tile's statistics, JSON-ready: class areas per date, changed pixels, tile size."""
        names = [self.name(c) for c in self.lexicon.mapped]
        return {"tile": self.tile, "changed": self.changed, "dates": self.dates,
                "areas": {n: [int(self.areas[t, c]) for t in range(self.dates)]
                          for n, c in zip(names, self.lexicon.mapped)}}


def _date_note(ev: Evidence, q: Question) -> dict[str, Any]:
    return {"date_ignored": True} if ev.dates == 1 and q.date is not None else {}


def _pick(ev: Evidence, values: dict[int, int], largest: bool) -> int:
    """arg max / arg min over the classes with a value > 0, ties by lexicon order; none: the first."""
    order = [c for c in ev.lexicon.ordered if c in ev.lexicon.mapped]
    present = [c for c in order if values.get(c, 0) > 0]
    if not present:
        return order[0]
    best = max(values[c] for c in present) if largest else min(values[c] for c in present)
    return next(c for c in present if values[c] == best)


def answer(q: Question, ev: Evidence) -> Answer:
    """The answer of question `q` on the maps of `ev`, with the evidence the rule used."""
    check_question(q, ev.lexicon, ev.dates)
    t, c = q.type, q.cls
    base: dict[str, Any] = {"tile": ev.tile, **_date_note(ev, q)}
    if c is not None:
        base["class"] = ev.name(c)
    if q.date is not None:
        base["date"] = q.date
    if t == "change_or_not":
        if c is None:
            return Answer(q, "yes" if ev.changed > 0 else "no", {**base, "rule": "changed > 0", "changed": ev.changed})
        a = ev.area(c, q.date)
        return Answer(q, "yes" if a > 0 else "no",
                      {**base, "rule": "area(c, t) > 0", "area": a, "area_per_date": ev.areas[:, c].tolist()})
    if t in ("increase_or_not", "decrease_or_not"):
        a1, a2 = ev.area(c, 1), ev.area(c, 2)  # type: ignore[arg-type]
        yes = a2 > a1 if t == "increase_or_not" else a2 < a1
        return Answer(q, "yes" if yes else "no", {**base, "rule": f"area(c, 2) {'>' if t[0] == 'i' else '<'} area(c, 1)",
                                                  "area_per_date": [a1, a2]})
    if t in ("largest_change", "smallest_change"):
        values = {k: ev.area(k, q.date) for k in ev.lexicon.mapped}
        pick = _pick(ev, values, t == "largest_change")
        present = [ev.name(k) for k in ev.lexicon.ordered if values.get(k, 0) > 0]
        return Answer(q, ev.name(pick), {**base, "rule": f"arg {'max' if t[0] == 'l' else 'min'} of area(c, t) over "
                                         "the classes present", "areas": {ev.name(k): v for k, v in values.items()},
                                         "present": present})
    if t in ("change_to_what", "change_from_what"):
        row = ev.transitions[c, :] if t == "change_to_what" else ev.transitions[:, c]  # type: ignore[index]
        values = {k: int(row[k]) for k in ev.lexicon.mapped}
        key = "into" if t == "change_to_what" else "from"
        rule = ("most frequent date-2 class where the date-1 class is c" if key == "into"
                else "most frequent date-1 class where the date-2 class is c")
        return Answer(q, ev.name(_pick(ev, values, True)),
                      {**base, "rule": rule, key: {ev.name(k): v for k, v in values.items()},
                       "present": bool(sum(values.values()))})
    if t == "change_ratio":
        num = ev.tile - ev.changed if q.negated else ev.changed
        return Answer(q, _bin(num, ev.tile), {**base, "rule": "unchanged / tile" if q.negated else "changed / tile",
                                               "changed": ev.changed, "negated": q.negated})
    if t == "change_ratio_types":
        num = int(ev.class_mask(c, q.date).sum())
        return Answer(q, _bin(num, ev.tile), {**base, "rule": "pixels of c at t / tile", "area": num})
    if t == "change_count":
        objs = ev.objects(c, q.date)
        return Answer(q, count_answer(len(objs)), {
            **base, "rule": "8-connected components of c at t with area > 5 px", "objects": len(objs),
            "object_areas": [o.area for o in objs], "object_cells": [GRID_CELLS[o.cell] for o in objs],
            "object_boxes": [list(o.bbox) for o in objs]})
    cells = cell_areas(ev.class_mask(c, q.date)).tolist()
    by_cell = {GRID_CELLS[i]: v for i, v in enumerate(cells)}
    if t == "change_position":
        region = region_cells(q.region)  # type: ignore[arg-type]
        yes = any(cells[i] > 0 for i in region)
        return Answer(q, "yes" if yes else "no", {**base, "rule": "any pixel of c at t in the region",
                                                  "region": q.region, "cells": by_cell})
    best = int(np.argmax(cells))  # change_location; argmax: the first cell on ties
    return Answer(q, cell_answer(best), {**base, "rule": "grid cell with most pixels of c at t", "cells": by_cell,
                                         "present": bool(sum(cells))})


def _bin(num: int, den: int) -> str:
    if den <= 0:
        raise RuleError("the maps have no valid pixel: no ratio can be computed")
    return ratio_bin(num, den)


def answer_maps(q: Question, maps: np.ndarray, lexicon: ClassLexicon, valid: np.ndarray | None = None) -> Answer:
    """answer(q, Evidence(maps, lexicon, valid)): one question on one pair's maps."""
    return answer(q, Evidence(maps, lexicon, valid))


def split_nodata(maps: np.ndarray, nodata: int = NODATA) -> tuple[np.ndarray, np.ndarray]:
    """int [T, H, W] (or [H, W]) label maps with `nodata` pixels (IGNORE_INDEX of augmented targets,
    NODATA of predictions: both 255) -> (int64 maps with 0 there, valid bool [H, W])."""
    arr = np.asarray(maps)
    arr = arr[None] if arr.ndim == 2 else arr
    valid = (arr != nodata).all(0)
    return np.where(valid[None], arr, 0).astype(np.int64), valid


def from_decoded(maps: dict[str, np.ndarray], dates: int) -> tuple[np.ndarray, np.ndarray]:
    """Predicted maps (inference.postprocess.decode_maps: uint8 [H, W], 255 = nodata) -> (int64 [T, H, W],
    valid bool [H, W]) for `Evidence`: dates = 2 reads `from` and `to`, dates = 1 reads `mask`."""
    keys = ("from", "to") if dates == 2 else ("mask",)
    missing = [k for k in keys if k not in maps]
    if missing:
        raise RuleError(f"predicted maps lack {missing} (have {sorted(maps)}); a {dates}-map head is needed")
    return split_nodata(np.stack([np.asarray(maps[k]) for k in keys]))


def measured_answer(q: Question, maps: dict[str, np.ndarray], lexicon: ClassLexicon, dates: int) -> Answer:
    """The measured answer: question `q` answered by the rules on a model's decoded maps
    (`Prediction.maps`; dates = 2 for a land-cover pair head, 1 for a class-map head), with the evidence.
    A text question goes through `parse.parse_question(text, lexicon)` first."""
    arr, valid = from_decoded(maps, dates)
    return answer(q, Evidence(arr, lexicon, valid))
