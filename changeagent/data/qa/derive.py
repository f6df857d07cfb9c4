"""Questions derived from label maps (seeded, deterministic) and the CDVQA writer (`data qa`).

Per tile, question *groups* as CDVQA has them (one image entry per group in `{Split}_images.json`):

- two land-cover maps (SECOND, SECOND-CC; the eight CDVQA types), the 16 groups of every CDVQA Val
  file, in its order: change_or_not with no date / date 1 / date 2, increase_or_not, decrease_or_not
  (each class kept with probability 0.8, in `lexicon.ordered`), smallest_change, largest_change (no
  date), smallest_change date 1, date 2, largest_change date 1, date 2, change_to_what (every class
  present in date 1), change_ratio (changed), change_ratio (unchanged), change_ratio_types date 1,
  date 2 (each class with probability 0.5). These rates reproduce the group sizes of CDVQA Val (e.g.
  change_ratio_types groups of 0..6 questions: 14, 77, 178, 258, 182, 78, 14 of 800; binomial(6, 0.5)).
  An empty group stays an image entry with no questions, as in CDVQA.
- one change-class map (LEVIR-MCI): overall change_or_not, change_or_not per class, change_ratio
  (changed, unchanged), change_ratio_types per class, change_count per class, largest_change and
  smallest_change (when a class is present), change_position per class (one cell with change of
  the class and one without, when they exist) and change_location per present class.

Every text comes from `templates.render`, every answer from `rules.answer` (with its evidence). The
random stream of a tile is seeded by (seed, its file name), so a tile's questions do not depend on the
order or the subset of tiles processed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from changeagent.data.lexicon import GRID_CELLS, ClassLexicon, cell_areas
from changeagent.data.qa.rules import CDVQA_TYPES, Answer, Evidence, Question, answer
from changeagent.data.qa.templates import render

KEEP_CLASS = 0.8  # CDVQA Val: change_or_not / increase / decrease groups ~ binomial(6, 0.8)
KEEP_RATIO_CLASS = 0.5  # CDVQA Val: change_ratio_types groups ~ binomial(6, 0.5)


@dataclass
class QAItem:
    """One derived question: its structure, text, answer string and the rule's evidence."""

    question: Question
    text: str
    answer: str
    evidence: dict[str, Any]


def tile_rng(seed: int, key: str) -> np.random.Generator:
    """The random stream of one tile: a function of (seed, key) only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode("utf-8"))])


def _item(q: Question, ev: Evidence, rng: np.random.Generator) -> QAItem:
    a: Answer = answer(q, ev)
    return QAItem(q, render(q, ev.lexicon, rng), a.answer, a.evidence)


def _classes(lexicon: ClassLexicon) -> list[int]:
    return [c for c in lexicon.ordered if c in lexicon.mapped]


def derive_two_dates(ev: Evidence, rng: np.random.Generator, types: tuple[str, ...] = CDVQA_TYPES
                     ) -> list[list[QAItem]]:
    """The 16 CDVQA groups of one tile with two land-cover maps (types outside `types` left out)."""
    classes = _classes(ev.lexicon)

    def some(qtype: str, date: int | None, p: float) -> list[QAItem]:
        keep = [c for c in classes if rng.random() < p]
        return [_item(Question(qtype, c, date), ev, rng) for c in keep]

    plan: list[tuple[str, Any]] = [
        ("change_or_not", lambda: some("change_or_not", None, KEEP_CLASS)),
        ("change_or_not", lambda: some("change_or_not", 1, KEEP_CLASS)),
        ("change_or_not", lambda: some("change_or_not", 2, KEEP_CLASS)),
        ("increase_or_not", lambda: some("increase_or_not", None, KEEP_CLASS)),
        ("decrease_or_not", lambda: some("decrease_or_not", None, KEEP_CLASS)),
        ("smallest_change", lambda: [_item(Question("smallest_change"), ev, rng)]),
        ("largest_change", lambda: [_item(Question("largest_change"), ev, rng)]),
        ("smallest_change", lambda: [_item(Question("smallest_change", date=1), ev, rng)]),
        ("smallest_change", lambda: [_item(Question("smallest_change", date=2), ev, rng)]),
        ("largest_change", lambda: [_item(Question("largest_change", date=1), ev, rng)]),
        ("largest_change", lambda: [_item(Question("largest_change", date=2), ev, rng)]),
        ("change_to_what", lambda: [_item(Question("change_to_what", c, 1), ev, rng)
                                    for c in classes if ev.area(c, 1) > 0]),
        ("change_from_what", lambda: [_item(Question("change_from_what", c, 2), ev, rng)
                                      for c in classes if ev.area(c, 2) > 0]),
        ("change_ratio", lambda: [_item(Question("change_ratio"), ev, rng)]),
        ("change_ratio", lambda: [_item(Question("change_ratio", negated=True), ev, rng)]),
        ("change_ratio_types", lambda: some("change_ratio_types", 1, KEEP_RATIO_CLASS)),
        ("change_ratio_types", lambda: some("change_ratio_types", 2, KEEP_RATIO_CLASS)),
    ]
    return [make() for qtype, make in plan if qtype in types]


def derive_one_map(ev: Evidence, rng: np.random.Generator) -> list[list[QAItem]]:
    """The LEVIR-MCI groups of one tile with one change-class map."""
    classes = _classes(ev.lexicon)
    present = [c for c in classes if ev.area(c, None) > 0]
    groups = [
        [_item(Question("change_or_not"), ev, rng)] + [_item(Question("change_or_not", c), ev, rng) for c in classes],
        [_item(Question("change_ratio"), ev, rng), _item(Question("change_ratio", negated=True), ev, rng)],
        [_item(Question("change_ratio_types", c), ev, rng) for c in classes],
        [_item(Question("change_count", c), ev, rng) for c in classes],
        [_item(Question(t), ev, rng) for t in ("largest_change", "smallest_change")] if present else [],
    ]
    position = []
    for c in classes:
        hit = {int(i) for i in np.flatnonzero(cell_areas(ev.class_mask(c, None)))}
        for pool in (sorted(hit), sorted(set(range(9)) - hit)):
            if pool:
                cell = pool[int(rng.integers(len(pool)))]
                position.append(_item(Question("change_position", c, region=GRID_CELLS[cell]), ev, rng))
    groups.append(position)
    groups.append([_item(Question("change_location", c), ev, rng) for c in present])
    return groups


def derive(maps: np.ndarray, lexicon: ClassLexicon, seed: int, key: str,
           types: tuple[str, ...] = CDVQA_TYPES, valid: np.ndarray | None = None) -> list[list[QAItem]]:
    """Question groups of one tile's label maps (int [T, H, W], T = 2 land cover or T = 1 change classes;
    `valid` bool [H, W] drops pixels, see rules.split_nodata), deterministic in (seed, key). `types`
    selects the two-date types (default: CDVQA's eight)."""
    ev = Evidence(maps, lexicon, valid)
    rng = tile_rng(seed, key)
    return derive_two_dates(ev, rng, types) if ev.dates == 2 else derive_one_map(ev, rng)


def as_rows(groups: list[list[QAItem]]) -> list[list[tuple[str, str, str]]]:
    """Groups of QAItems -> groups of (type, question, answer) for `cdvqa.write_split`."""
    return [[(it.question.type, it.text, it.answer) for it in g] for g in groups]


def tally(groups_by_tile: list[list[list[QAItem]]]) -> dict[str, Any]:
    """Questions per type and per answer of derived groups."""
    per_type: dict[str, int] = {}
    per_answer: dict[str, int] = {}
    for groups in groups_by_tile:
        for g in groups:
            for it in g:
                per_type[it.question.type] = per_type.get(it.question.type, 0) + 1
                per_answer[it.answer] = per_answer.get(it.answer, 0) + 1
    return {"pairs": len(groups_by_tile), "questions": sum(per_type.values()), "per_type": dict(sorted(per_type.items())),
            "per_answer": dict(sorted(per_answer.items(), key=lambda kv: -kv[1]))}
