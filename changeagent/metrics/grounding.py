"""Change grounding metrics (SPEC §9): mIoU, oIoU (= cIoU), Pr@0.5/0.7/0.9, no-target accuracy.

One sample = one (image pair, expression) with a binary target mask and a binary predicted mask.

- `iou` of a sample = |P ∩ T| / |P ∪ T| over its valid pixels. **Convention: an empty prediction on
  an empty target scores 1** (SPEC §9; the expression referred to nothing and nothing was marked).
  CRIS computes I / (U + 1e-6), i.e. 0 for that case; its benchmarks (RefCOCO) have no empty targets.
- `miou` = mean of the per-sample IoUs; `oiou` = sum of intersections / sum of unions over all
  samples (the pooled "overall"/"cumulative" IoU; NaN when every union is empty);
  `pr50`, `pr70`, `pr90` = fraction of samples with IoU > 0.5 / 0.7 / 0.9 (strictly greater, as the
  CRIS code); `no_target_acc` = fraction of samples where "any pixel predicted" equals "any target
  pixel" (VisTA's no-change confusion, as an accuracy).
- All of them again per expression type (`per_type`), over the samples of that type.

Predictions are binary here: binarise logits first (`binarize`; CRIS and VisTA threshold the sigmoid at
0.35). Every state is a per-type sum with `dist_reduce_fx="sum"`, so `compute()` under DDP equals the
single-process result (the IoU sum is float64: equal up to rounding order).

`ReferringChangeMetrics` is the Referring-Change-Detection protocol (Korkmaz et al., WACV 2026) for
SECOND-style data: every land-cover class is queried, the per-class answers are assembled into a
semantic map (`assemble_semantic_map`) and scored with the SECOND SCD formulas (SeK, ...) of
`metrics.semantic_change`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_confusion_matrix

from changeagent.data.constants import IGNORE_INDEX
from changeagent.errors import ChangeAgentError
from changeagent.metrics.segmentation import _ratio, check_class_map, check_same_shape
from changeagent.metrics.semantic_change import semantic_change_scores

THRESHOLDS = (0.5, 0.7, 0.9)
GROUNDING_KEYS = ("miou", "oiou", "pr50", "pr70", "pr90", "no_target_acc")
REFERENCE_THRESHOLD = 0.35  # sigmoid threshold of the CRIS / VisTA evaluation code


def binarize(logits: torch.Tensor, threshold: float = REFERENCE_THRESHOLD) -> torch.Tensor:
    """Mask logits (any shape) -> bool mask of the same shape: sigmoid(logits) >= threshold."""
    if not 0 < threshold < 1:
        raise ChangeAgentError(f"grounding threshold must be in (0, 1), got {threshold}")
    return torch.sigmoid(logits.float()) >= threshold


def _check_binary(name: str, x: torch.Tensor, ignore_index: int | None) -> None:
    if not isinstance(x, torch.Tensor):
        raise ChangeAgentError(f"{name} must be a torch.Tensor mask, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex():
        raise ChangeAgentError(f"{name} must be a bool or 0/1 integer mask, got dtype {x.dtype} "
                               "(binarise logits first: metrics.grounding.binarize)")
    if x.dtype != torch.bool and x.numel():
        bad = (x != 0) & (x != 1)
        if ignore_index is not None:
            bad &= x != ignore_index
        if bool(bad.any()):
            allowed = "0/1" + (f" or {ignore_index}" if ignore_index is not None else "")
            raise ChangeAgentError(f"{name} holds value {int(x[bad].flatten()[0])}; expected {allowed}")


def sample_iou(pred: torch.Tensor, target: torch.Tensor, ignore_index: int | None = IGNORE_INDEX
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample intersection, union and IoU of binary masks `[N, H, W]` (or `[N, ...]`).

    Target pixels equal to `ignore_index` are left out of both. Returns (inter int64 [N], union int64
    [N], iou float64 [N]) with iou = 1 where the union is empty (empty prediction, empty target).
    """
    _check_binary("pred", pred, None)
    _check_binary("target", target, ignore_index)
    check_same_shape(pred=pred, target=target)
    if pred.ndim < 2:
        raise ChangeAgentError(f"pred must be [N, H, W] masks, got shape {list(pred.shape)}")
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None or target.dtype == torch.bool \
        else target != ignore_index
    p = pred.bool() & valid
    t = (target == 1) & valid
    inter = (p & t).flatten(1).sum(1)
    union = (p | t).flatten(1).sum(1)
    iou = torch.where(union > 0, inter.double() / union.clamp_min(1).double(), torch.ones_like(union, dtype=torch.float64))
    return inter, union, iou


def grounding_scores(count: float, iou_sum: float, inter: float, union: float, hits: Sequence[float],
                     nt_correct: float) -> dict:
    """The SPEC §9 keys from summed states (NaN when `count` is 0; `oiou` NaN when `union` is 0)."""
    return {
        "miou": _ratio(iou_sum, count),
        "oiou": _ratio(inter, union),
        **{f"pr{round(t * 100)}": _ratio(h, count) for t, h in zip(THRESHOLDS, hits)},
        "no_target_acc": _ratio(nt_correct, count),
        "n": int(count),
    }


class GroundingMetrics(Metric):
    """Referring change segmentation scores, exact under DDP.

    Args:
        types: the expression types samples may carry (state rows are fixed so that ranks sum them);
            e.g. `changeagent.data.grounding.EXPRESSION_TYPES`, or QAG-360K's question types.
        ignore_index: target value of unlabelled pixels (left out of I and U).

    update(pred, target, types=None): pred bool / 0-1 int `[B, H, W]` (or `[B, 1, H, W]`), target the
    same (0/1, or `ignore_index`), types list[str] of length B (None: every sample of `types[0]`).
    compute() -> {"miou", "oiou", "pr50", "pr70", "pr90", "no_target_acc", "n",
                  "per_type": {type: {same keys}}} (only types that occurred), fractions.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    count: torch.Tensor
    iou_sum: torch.Tensor
    inter: torch.Tensor
    union: torch.Tensor
    hits: torch.Tensor
    nt_correct: torch.Tensor

    def __init__(self, types: Sequence[str] | None = None, ignore_index: int | None = IGNORE_INDEX,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if types is None:
            from changeagent.data.grounding.query import EXPRESSION_TYPES

            types = EXPRESSION_TYPES
        types = tuple(types)
        if not types or len(set(types)) != len(types) or not all(isinstance(t, str) and t for t in types):
            raise ChangeAgentError(f"grounding metrics: types must be distinct non-empty names, got {types}")
        if ignore_index is not None and ignore_index in (0, 1):
            raise ChangeAgentError(f"grounding metrics: ignore_index {ignore_index} collides with a mask value")
        self.types = types
        self.ignore_index = ignore_index
        k = len(types)
        self.add_state("count", default=torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("iou_sum", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("inter", default=torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("union", default=torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("hits", default=torch.zeros(k, len(THRESHOLDS), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("nt_correct", default=torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")

    def _type_rows(self, types: Sequence[str] | None, n: int, device: torch.device) -> torch.Tensor:
        if types is None:
            return torch.zeros(n, dtype=torch.long, device=device)
        if isinstance(types, str) or len(types) != n:
            raise ChangeAgentError(f"grounding metrics: got {1 if isinstance(types, str) else len(types)} "
                                   f"types for {n} samples")
        unknown = sorted({t for t in types if t not in self.types})
        if unknown:
            raise ChangeAgentError(f"grounding metrics: unknown expression type(s) {unknown}; known: {list(self.types)}")
        return torch.tensor([self.types.index(t) for t in types], dtype=torch.long, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor, types: Sequence[str] | None = None) -> None:
        if isinstance(pred, torch.Tensor) and pred.ndim == 4 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if isinstance(target, torch.Tensor) and target.ndim == 4 and target.shape[1] == 1:
            target = target[:, 0]
        inter, union, iou = sample_iou(pred, target, self.ignore_index)
        rows = self._type_rows(types, pred.shape[0], self.count.device)
        valid = torch.ones_like(target, dtype=torch.bool) if self.ignore_index is None or target.dtype == torch.bool \
            else target != self.ignore_index
        pred_any = (pred.bool() & valid).flatten(1).any(1)
        target_any = ((target == 1) & valid).flatten(1).any(1)
        dev = self.count.device
        self.count.index_add_(0, rows, torch.ones_like(rows))
        self.iou_sum.index_add_(0, rows, iou.to(dev))
        self.inter.index_add_(0, rows, inter.to(dev))
        self.union.index_add_(0, rows, union.to(dev))
        over = torch.stack([iou > t for t in THRESHOLDS], dim=1).long().to(dev)  # [B, 3]
        self.hits.index_add_(0, rows, over)
        self.nt_correct.index_add_(0, rows, (pred_any == target_any).long().to(dev))

    def compute(self) -> dict:
        def scores(sel: slice | int) -> dict:
            def total(x: torch.Tensor) -> float:
                return float(x[sel].sum()) if isinstance(sel, slice) else float(x[sel])

            hits = self.hits[sel].sum(0) if isinstance(sel, slice) else self.hits[sel]
            return grounding_scores(total(self.count), total(self.iou_sum), total(self.inter),
                                    total(self.union), [float(h) for h in hits], total(self.nt_correct))

        out = scores(slice(None))
        out["per_type"] = {t: scores(i) for i, t in enumerate(self.types) if int(self.count[i])}
        return out


def assemble_semantic_map(logits: torch.Tensor, threshold: float = 0.5, aggregation: str = "overwrite"
                          ) -> torch.Tensor:
    """Per-class grounding logits `[B, K, H, W]` (class k+1 answers channel k) -> int64 `[B, H, W]`.

    A pixel gets class k+1 when sigmoid(logit_k) > threshold; 0 (unchanged) when no class passes.
    `overwrite` (the RCD evaluation code's default, with threshold 0.5): the last passing class in id
    order wins; `max_prob`: the most probable passing class wins.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4 or not logits.is_floating_point():
        shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ChangeAgentError(f"assemble_semantic_map: logits must be float [B, K, H, W], got {shape}")
    if aggregation not in ("max_prob", "overwrite"):
        raise ChangeAgentError(f"assemble_semantic_map: aggregation must be 'max_prob' or 'overwrite', got {aggregation!r}")
    prob = torch.sigmoid(logits.float())
    passing = prob > threshold
    if aggregation == "max_prob":
        best, idx = prob.masked_fill(~passing, -1.0).max(dim=1)
        return torch.where(best >= 0, idx + 1, torch.zeros_like(idx)).long()
    k = logits.shape[1]
    ids = torch.arange(1, k + 1, device=logits.device).view(1, k, 1, 1)
    return (passing.long() * ids).amax(dim=1)  # the highest passing id = the last one written


class ReferringChangeMetrics(Metric):
    """Referring Change Detection on SECOND-style maps, scored by the SCD formulas (SeK, mIoU, Fscd...).

    Args:
        num_classes: classes of the map including 0 = unchanged (SECOND: 7).
        ignore_index: target value of unlabelled pixels.

    update(pred, target): int64 assembled maps `[B, H, W]` (`assemble_semantic_map`) and the label
    maps of the same date(s); call it once per date scored. The RCD protocol scores the date-2 map
    (the class a pixel became); calling it for both dates gives the per-date SCD protocol of §2.1.
    compute() -> `semantic_change_scores` of the summed confusion matrix (oa, miou, sek, fscd, score...).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confmat: torch.Tensor

    def __init__(self, num_classes: int = 7, ignore_index: int | None = IGNORE_INDEX, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ChangeAgentError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.add_state("confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long),
                       dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        check_class_map("pred", pred, self.num_classes)
        check_class_map("target", target, self.num_classes, self.ignore_index)
        check_same_shape(pred=pred, target=target)
        self.confmat += multiclass_confusion_matrix(
            pred.reshape(-1), target.reshape(-1), self.num_classes, ignore_index=self.ignore_index,
            validate_args=False,
        ).to(self.confmat)

    def update_logits(self, logits: dict[int, torch.Tensor], target: torch.Tensor, threshold: float = 0.5,
                      aggregation: str = "overwrite") -> None:
        """Assemble and score per date: logits {date (1, 2): [B, K, H, W] class-query logits, channel k =
        class k+1}, target int64 [B, 2, H, W] (date-1, date-2 label maps). Give {2: ...} for the RCD protocol."""
        if not logits or set(logits) - {1, 2}:
            raise ChangeAgentError(f"referring change metrics: logits must be keyed by date 1 and/or 2, got {sorted(logits)}")
        if not isinstance(target, torch.Tensor) or target.ndim != 4 or target.shape[1] != 2:
            shape = list(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
            raise ChangeAgentError(f"referring change metrics: target must be [B, 2, H, W], got {shape}")
        for date, x in sorted(logits.items()):
            self.update(assemble_semantic_map(x, threshold, aggregation), target[:, date - 1])

    def compute(self) -> dict:
        return semantic_change_scores(self.confmat)
