"""Change question answering metrics (SPEC §8): accuracy per question type, AA and OA.

`QAMetrics` keeps two summed int64 states over a fixed type order (`rules.QUESTION_TYPES`): correct
and total answers per type (torchmetrics states, `dist_reduce_fx="sum"`), so `compute()` under DDP is
exactly the single-process result (as long as the sampler does not duplicate items). `compute()` ->

    {"aa": mean of the per-type accuracies over the types with questions,
     "oa": correct / total over every question,
     "per_type": {type: accuracy}, "n": questions, "n_per_type": {type: questions}}

the form of `metrics.json[<dataset>]["qa"]`, `["qa_measured"]` and each of `["qa_baselines"]`. Values are
fractions in [0, 1]; with no question AA and OA are NaN. `majority_answers(types, answers)` is the
majority-answer-per-type baseline (fit on training questions); `score_majority` scores it with the
same class, so the baseline and the head are computed one way.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

from changeagent.data.qa.rules import QUESTION_TYPES
from changeagent.errors import ChangeAgentError

Answers = Sequence[str] | Sequence[int] | torch.Tensor


def _as_list(x: Answers, name: str) -> list[Any]:
    if isinstance(x, torch.Tensor):
        if x.ndim != 1 or x.is_floating_point():
            raise ChangeAgentError(f"qa metrics: {name} must be a 1-d integer tensor of answer ids, got "
                                   f"{x.dtype} {tuple(x.shape)} (take the argmax of the logits first)")
        return x.tolist()
    return list(x)


class QAMetrics(Metric):
    """Per-type answer accuracy; `update(types, pred, target)` with answer strings or ids (one kind per call)."""

    full_state_update = False
    correct: torch.Tensor
    total: torch.Tensor

    def __init__(self, types: Sequence[str] = QUESTION_TYPES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.types = tuple(types)
        self._index = {t: i for i, t in enumerate(self.types)}
        self.add_state("correct", default=torch.zeros(len(self.types), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(len(self.types), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, types: Sequence[str], pred: Answers, target: Answers) -> None:  # type: ignore[override]
        p, t = _as_list(pred, "pred"), _as_list(target, "target")
        if not len(types) == len(p) == len(t):
            raise ChangeAgentError(f"qa metrics: {len(types)} types, {len(p)} predictions, {len(t)} targets")
        unknown = sorted({q for q in types if q not in self._index})
        if unknown:
            raise ChangeAgentError(f"qa metrics: unknown question type(s) {unknown}; known: {', '.join(self.types)}")
        idx = torch.tensor([self._index[q] for q in types], dtype=torch.int64)
        hit = torch.tensor([a == b for a, b in zip(p, t)], dtype=torch.int64)
        self.total += torch.bincount(idx, minlength=len(self.types)).to(self.total.device)
        self.correct += torch.bincount(idx, weights=hit.double(), minlength=len(self.types)).long().to(self.correct.device)

    def compute(self) -> dict[str, Any]:
        return qa_scores(self.correct, self.total, self.types)


def qa_scores(correct: torch.Tensor, total: torch.Tensor, types: Sequence[str]) -> dict[str, Any]:
    """AA, OA, per-type accuracy and counts from summed per-type counts (types with no question omitted)."""
    c, n = [int(v) for v in correct.tolist()], [int(v) for v in total.tolist()]
    per_type = {t: ci / ni for t, ci, ni in zip(types, c, n) if ni}
    total_n = sum(n)
    return {"aa": sum(per_type.values()) / len(per_type) if per_type else math.nan,
            "oa": sum(c) / total_n if total_n else math.nan, "per_type": per_type, "n": total_n,
            "n_per_type": {t: ni for t, ni in zip(types, n) if ni}}


def majority_answers(types: Sequence[str], answers: Sequence[str]) -> dict[str, str]:
    """The most frequent answer of each type (ties: the answer seen first), from training questions."""
    by_type: dict[str, Counter[str]] = {}
    first: dict[tuple[str, str], int] = {}
    for i, (t, a) in enumerate(zip(types, answers, strict=True)):
        by_type.setdefault(t, Counter())[a] += 1
        first.setdefault((t, a), i)
    return {t: min(c, key=lambda a: (-c[a], first[(t, a)])) for t, c in by_type.items()}


def score_majority(majority: dict[str, str], types: Sequence[str], answers: Sequence[str],
                   metric: QAMetrics | None = None) -> dict[str, Any]:
    """The majority baseline on (types, answers): each question answered by its type's majority answer
    (a type unseen in training gets no answer, so it scores 0)."""
    m = metric or QAMetrics()
    m.update(list(types), [majority.get(t, "") for t in types], list(answers))
    return m.compute()
