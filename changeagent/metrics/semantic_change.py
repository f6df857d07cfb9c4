"""SECOND semantic change metrics (SPEC §2.1): OA, mIoU, SeK, Fscd and Score.

Inputs are land-cover maps of date A and date B with 0 = unchanged and 1..6 the SECOND classes.
Two confusion matrices are accumulated at once (both are torchmetrics states summed under DDP):

- `per_date` (the headline keys `oa`, `miou`, `sek`, `fscd`, `score`, ...): the 7 x 7 confusion matrix
  of the date-A maps plus that of the date-B maps (every pixel counted once per date). This is the
  protocol of the public SCD evaluation code (Bi-SRNet, SCanNet and successors) behind the published
  SECOND tables, so our numbers compare with theirs.
- `transition` (keys prefixed `transition_`): one 37-class label per pixel, 0 when unchanged, else
  `(a - 1) * 6 + b` for land-cover classes a, b in 1..6 (all 36 from-to pairs, a == b included); a
  37 x 37 confusion matrix. Stricter: a transition is right only when both dates are right.

Both are scored by `semantic_change_scores`, with the same formulas. See docs/metrics.md.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_confusion_matrix

from changeagent.data.constants import IGNORE_INDEX, NUM_CLASSES
from changeagent.errors import ChangeAgentError
from changeagent.metrics.segmentation import _ratio, check_class_map, check_same_shape, nanmean

NUM_LAND_COVER = NUM_CLASSES["second_cc"] - 1  # 6 land-cover classes, 0 is "unchanged"
NUM_TRANSITIONS = NUM_LAND_COVER * NUM_LAND_COVER + 1  # 37


def transition_labels(sem_a: torch.Tensor, sem_b: torch.Tensor) -> torch.Tensor:
    """int64 labels 0..36 of same shape: 0 where either date is 0, else (a - 1) * 6 + b."""
    changed = (sem_a > 0) & (sem_b > 0)
    return torch.where(changed, (sem_a - 1) * NUM_LAND_COVER + sem_b, torch.zeros_like(sem_a)).long()


def cohen_kappa(confmat: torch.Tensor) -> float:
    """Cohen's kappa of a confusion matrix; 0 when empty or when chance agreement is 1 (SCD convention)."""
    cm = confmat.to(torch.float64)
    n = float(cm.sum())
    if n == 0:
        return 0.0
    po = float(cm.diag().sum()) / n
    pe = float((cm.sum(0) * cm.sum(1)).sum()) / (n * n)
    return 0.0 if pe == 1 else (po - pe) / (1 - pe)


def semantic_change_scores(confmat: torch.Tensor) -> dict:
    """SCD scores of a `[K, K]` confusion matrix (rows = target, columns = prediction, 0 = unchanged).

    oa = trace / total; binary IoUs from the unchanged / changed split; miou = their mean (NaN
    ignored); sek = kappa(confmat with [0, 0] zeroed) * exp(iou_changed - 1); score = 0.3 miou +
    0.7 sek; fscd = harmonic mean of
    precision_sc = (correct changed pixels) / (predicted changed) and recall_sc = (same) /
    (target changed), where "correct" means the same non-zero class in prediction and target.
    """
    cm = torch.as_tensor(confmat).detach().to("cpu", torch.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 2:
        raise ChangeAgentError(f"confusion matrix must be square [K, K] with K >= 2, got {list(cm.shape)}")
    tn = float(cm[0, 0])
    fp = float(cm[0, 1:].sum())  # target unchanged, predicted changed
    fn = float(cm[1:, 0].sum())
    tp = float(cm[1:, 1:].sum())  # changed in both, whatever the classes
    iou_unchanged = _ratio(tn, tn + fp + fn)
    iou_changed = _ratio(tp, tp + fp + fn)
    n0 = cm.clone()
    n0[0, 0] = 0
    kappa_n0 = cohen_kappa(n0)
    sc_tp = float(cm[1:, 1:].diag().sum())
    precision = _ratio(sc_tp, tp + fp)
    recall = _ratio(sc_tp, tp + fn)
    if math.isnan(precision) or math.isnan(recall):
        fscd = math.nan
    else:
        fscd = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    miou = nanmean([iou_unchanged, iou_changed])
    sek = kappa_n0 * math.exp(iou_changed - 1)
    return {
        "oa": _ratio(float(cm.diag().sum()), float(cm.sum())),
        "miou": miou,
        "sek": sek,
        "fscd": fscd,
        "score": 0.3 * miou + 0.7 * sek,  # the SCD papers' ranking score
        "iou_unchanged": iou_unchanged,
        "iou_changed": iou_changed,
        "kappa_n0": kappa_n0,
        "precision_sc": precision,
        "recall_sc": recall,
    }


class SemanticChangeMetrics(Metric):
    """SECOND SCD metrics, exact under DDP.

    update(pred_a, pred_b, target_a, target_b): int64 maps of one shape (e.g. `[B, H, W]`), values
    0 (unchanged) .. 6; targets may hold `ignore_index` (a pixel is skipped when either target date is
    ignored). A predicted pixel is changed only when both dates carry a class; a target pixel with a
    class on one date and 0 on the other is an error (SECOND labels change on both dates).
    compute() -> dict: `oa, miou, sek, fscd, score, iou_unchanged, iou_changed, kappa_n0,
    precision_sc, recall_sc` (the per-date SCD protocol) and the same keys prefixed `transition_`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confmat: torch.Tensor
    confmat_per_date: torch.Tensor

    def __init__(self, ignore_index: int | None = IGNORE_INDEX, **kwargs) -> None:
        super().__init__(**kwargs)
        if ignore_index is not None and 0 <= ignore_index <= NUM_LAND_COVER:
            raise ChangeAgentError(f"ignore_index {ignore_index} collides with a class id (0..{NUM_LAND_COVER})")
        self.ignore_index = ignore_index
        k, d = NUM_TRANSITIONS, NUM_LAND_COVER + 1
        self.add_state("confmat", default=torch.zeros(k, k, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("confmat_per_date", default=torch.zeros(d, d, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self, pred_a: torch.Tensor, pred_b: torch.Tensor, target_a: torch.Tensor, target_b: torch.Tensor
    ) -> None:
        d = NUM_LAND_COVER + 1
        check_class_map("pred_a", pred_a, d)
        check_class_map("pred_b", pred_b, d)
        check_class_map("target_a", target_a, d, self.ignore_index)
        check_class_map("target_b", target_b, d, self.ignore_index)
        check_same_shape(pred_a=pred_a, pred_b=pred_b, target_a=target_a, target_b=target_b)
        valid = torch.ones_like(target_a, dtype=torch.bool)
        if self.ignore_index is not None:
            valid = (target_a != self.ignore_index) & (target_b != self.ignore_index)
        pa, pb, ta, tb = (x[valid] for x in (pred_a, pred_b, target_a, target_b))
        one_sided = int(((ta == 0) != (tb == 0)).sum())
        if one_sided:
            raise ChangeAgentError(
                f"target_a/target_b disagree on which pixels changed: {one_sided} pixel(s) are unchanged (0) "
                "on one date only"
            )
        self.confmat += multiclass_confusion_matrix(
            transition_labels(pa, pb), transition_labels(ta, tb), NUM_TRANSITIONS, validate_args=False
        ).to(self.confmat)
        self.confmat_per_date += multiclass_confusion_matrix(
            torch.cat([pa, pb]), torch.cat([ta, tb]), d, validate_args=False
        ).to(self.confmat_per_date)

    def update_stacked(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Same as update, with both dates stacked on dim 1: `pred`, `target` int64 `[B, 2, H, W]`."""
        for name, x in (("pred", pred), ("target", target)):
            if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[1] != 2:
                shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ChangeAgentError(f"{name} must be [B, 2, H, W] (date A, date B), got {shape}")
        self.update(pred[:, 0], pred[:, 1], target[:, 0], target[:, 1])

    def compute(self) -> dict:
        out = semantic_change_scores(self.confmat_per_date)
        out.update({f"transition_{k}": v for k, v in semantic_change_scores(self.confmat).items()})
        return out
