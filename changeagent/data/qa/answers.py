"""The closed answer set of the QA head: one place for every answer string (SPEC §8).

`ANSWERS` (in this order; an answer's id is its index):

- the 19 CDVQA answers: `yes`, `no`, the six SECOND class answers (`NVG_surface`, `buildings`,
  `low_vegetation`, `trees`, `water`, `playgrounds`) and the 11 ratio bins (`0`, `0_to_10`, ...,
  `90_to_100`);
- the other class answers: `road` (LEVIR-MCI's road class, as QAG-360K names it; LEVIR's building
  class answers `buildings` as CDVQA does), QAG-360K's `green_house`, `bridge`, `others`;
- counts of changed objects (LEVIR-MCI `change_count`): `0` (shared with the ratio bin "0": none),
  `1` ... `20`, `more_than_20`;
- grid cells (`change_location`): `top_left`, `top`, ..., `bottom_right` (lexicon.GRID_CELLS with `_`).

`TYPE_ANSWERS[type]` lists the answers a question type can have; `AnswerVocab.allowed(types)` turns
it into a mask the head can apply to its logits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from changeagent.data.lexicon import GRID_CELLS, LEXICONS, RATIO_BINS
from changeagent.errors import ChangeAgentError

MAX_COUNT = 20  # counts above are one answer, "more_than_20"

YES_NO = ("yes", "no")
SECOND_ANSWERS = tuple(LEXICONS["second"].term(i).answer for i in (2, 5, 3, 4, 1, 6))  # CDVQA's listing order
CDVQA_ANSWERS = (*YES_NO, *SECOND_ANSWERS, *RATIO_BINS)
EXTRA_CLASS_ANSWERS = ("road", "green_house", "bridge", "others")
COUNT_ANSWERS = tuple(str(n) for n in range(MAX_COUNT + 1)) + (f"more_than_{MAX_COUNT}",)
CELL_ANSWERS = tuple(c.replace(" ", "_") for c in GRID_CELLS)
ANSWERS: tuple[str, ...] = tuple(dict.fromkeys((*CDVQA_ANSWERS, *EXTRA_CLASS_ANSWERS, *COUNT_ANSWERS,
                                                 *CELL_ANSWERS)))
CLASS_ANSWERS = (*SECOND_ANSWERS, *EXTRA_CLASS_ANSWERS)

TYPE_ANSWERS: dict[str, tuple[str, ...]] = {
    "change_or_not": YES_NO,
    "increase_or_not": YES_NO,
    "decrease_or_not": YES_NO,
    "change_position": YES_NO,
    "smallest_change": CLASS_ANSWERS,
    "largest_change": CLASS_ANSWERS,
    "change_to_what": CLASS_ANSWERS,
    "change_from_what": CLASS_ANSWERS,
    "change_ratio": RATIO_BINS,
    "change_ratio_types": RATIO_BINS,
    "change_count": COUNT_ANSWERS,
    "change_location": CELL_ANSWERS,
}


def count_answer(n: int) -> str:
    """Answer string of an object count: "0".."20", "more_than_20"."""
    return str(int(n)) if n <= MAX_COUNT else f"more_than_{MAX_COUNT}"


def cell_answer(cell: int) -> str:
    """Answer string of a grid cell id (0..8, row-major): "top_left", ..., "bottom_right"."""
    return CELL_ANSWERS[cell]


@dataclass(frozen=True)
class AnswerVocab:
    """Answer strings <-> ids. `default()` is `ANSWERS`; saved with a model as `to_json()`."""

    answers: tuple[str, ...] = ANSWERS

    def __post_init__(self) -> None:
        if len(set(self.answers)) != len(self.answers) or not self.answers:
            raise ChangeAgentError("answer vocabulary: answers must be distinct and not empty")

    @classmethod
    def default(cls) -> AnswerVocab:
        return cls(ANSWERS)

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: object) -> bool:
        return answer in self._index

    @cached_property
    def _index(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self.answers)}

    def index(self, answer: str, where: str = "") -> int:
        """Id of an answer; an unknown string is a ChangeAgentError naming it (and `where`)."""
        i = self._index.get(answer)
        if i is None:
            at = f" ({where})" if where else ""
            raise ChangeAgentError(f"unknown answer {answer!r}{at}; the answer set has {len(self)} answers, "
                                   f"e.g. {', '.join(self.answers[:8])}, ...")
        return i

    def answer(self, index: int) -> str:
        return self.answers[int(index)]

    def allowed(self, types: Sequence[str]) -> list[list[bool]]:
        """[B][A] booleans: answer a is possible for question type types[b] (TYPE_ANSWERS)."""
        idx = self._index
        rows = []
        for t in types:
            if t not in TYPE_ANSWERS:
                raise ChangeAgentError(f"unknown question type {t!r}; known: {', '.join(TYPE_ANSWERS)}")
            ok = {idx[a] for a in TYPE_ANSWERS[t] if a in idx}
            rows.append([i in ok for i in range(len(self))])
        return rows

    def to_json(self) -> dict[str, Any]:
        return {"answers": list(self.answers)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> AnswerVocab:
        d = json.loads(data) if isinstance(data, str) else data
        if not isinstance(d, dict) or not isinstance(d.get("answers"), list) or \
                not all(isinstance(a, str) for a in d["answers"]):
            raise ChangeAgentError("answer vocabulary JSON must be {\"answers\": [str, ...]}")
        return cls(tuple(d["answers"]))
