"""LEVIR-MCI mask metrics (SPEC §2.1): one confusion matrix over every evaluated pixel.

`SegmentationMetrics` keeps a summed `[C, C]` int64 confusion matrix as a torchmetrics state with
`dist_reduce_fx="sum"`, so `compute()` under DDP gives exactly the single-process result (as long
as the sampler does not duplicate items). `segmentation_scores` is the same computation on a given
confusion matrix. Every value is a fraction in [0, 1]; undefined ratios (0/0) are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import multiclass_confusion_matrix

from changeagent.data.constants import IGNORE_INDEX
from changeagent.errors import ChangeAgentError


def _ratio(num: float, den: float) -> float:
    """num / den, NaN when den is 0 (the quantity is undefined, not zero)."""
    return float(num) / float(den) if den else math.nan


def nanmean(values: Sequence[float]) -> float:
    """Mean of the non-NaN values; NaN when all are NaN."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def check_class_map(
    name: str, x: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> None:
    """Raise ChangeAgentError unless `x` is an integer tensor of ids in [0, num_classes) (or ignore)."""
    if not isinstance(x, torch.Tensor):
        raise ChangeAgentError(f"{name} must be a torch.Tensor of class ids, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise ChangeAgentError(
            f"{name} must hold integer class ids, got dtype {x.dtype} (take the argmax of logits first)"
        )
    if x.numel() == 0:
        return
    bad = (x < 0) | (x >= num_classes)
    if ignore_index is not None:
        bad &= x != ignore_index
    if bool(bad.any()):
        value = int(x[bad].flatten()[0])
        allowed = f"0..{num_classes - 1}" + (f" or {ignore_index}" if ignore_index is not None else "")
        raise ChangeAgentError(f"{name} holds class id {value}; expected {allowed}")


def check_same_shape(**tensors: torch.Tensor) -> None:
    """Raise ChangeAgentError unless all tensors have one shape."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{n} {list(s)}" for n, s in shapes.items())
        raise ChangeAgentError(f"shape mismatch: {listed}")


def segmentation_scores(confmat: torch.Tensor, class_names: Sequence[str] | None = None) -> dict:
    """Scores of a `[C, C]` confusion matrix (rows = target, columns = prediction; class 0 = no change).

    Returns fractions: `miou` (mean IoU over all classes incl. background, NaN classes ignored),
    `iou_per_class` (list, NaN for a class absent from both prediction and target), `oa`, the binary
    change scores `change_iou`, `change_f1`, `change_precision`, `change_recall` (change = class > 0,
    whatever its class), and `iou_<name>` per class when `class_names` is given.
    """
    cm = torch.as_tensor(confmat).detach().to("cpu", torch.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 2:
        raise ChangeAgentError(f"confusion matrix must be square [C, C] with C >= 2, got {list(cm.shape)}")
    if class_names is not None and len(class_names) != cm.shape[0]:
        raise ChangeAgentError(f"{len(class_names)} class names for a {cm.shape[0]}-class confusion matrix")
    tp = cm.diag()
    fp = cm.sum(0) - tp  # predicted as c, target is another class
    fn = cm.sum(1) - tp
    iou = [_ratio(t, t + p + n) for t, p, n in zip(tp.tolist(), fp.tolist(), fn.tolist())]
    change_tp = float(cm[1:, 1:].sum())
    change_fp = float(cm[0, 1:].sum())
    change_fn = float(cm[1:, 0].sum())
    precision = _ratio(change_tp, change_tp + change_fp)
    recall = _ratio(change_tp, change_tp + change_fn)
    out: dict = {
        "miou": nanmean(iou),
        "oa": _ratio(float(tp.sum()), float(cm.sum())),
        "iou_per_class": iou,
        "change_iou": _ratio(change_tp, change_tp + change_fp + change_fn),
        "change_f1": _ratio(2 * change_tp, 2 * change_tp + change_fp + change_fn),
        "change_precision": precision,
        "change_recall": recall,
    }
    for name, value in zip(class_names or (), iou):
        out[f"iou_{name}"] = value
    return out


def binary_scores(scores: dict) -> dict:
    """The change-detection papers' keys from a 2-class confusion matrix's `segmentation_scores`:
    precision, recall, f1, iou (of the change class), oa, miou, iou_no_change."""
    return {"precision": scores["change_precision"], "recall": scores["change_recall"], "f1": scores["change_f1"],
            "iou": scores["change_iou"], "oa": scores["oa"], "miou": scores["miou"],
            "iou_no_change": scores["iou_per_class"][0]}


class SegmentationMetrics(Metric):
    """LEVIR-MCI MIoU and binary change scores, exact under DDP.

    update(pred, target): int64 class maps of one shape, e.g. `[B, H, W]`; `pred` in [0, C),
    `target` in [0, C) or `ignore_index` (those pixels are skipped). compute() -> dict as in
    `segmentation_scores`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    confmat: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = IGNORE_INDEX,
        class_names: Sequence[str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ChangeAgentError(f"num_classes must be >= 2, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ChangeAgentError(f"{len(class_names)} class names given for {num_classes} classes")
        if ignore_index is not None and 0 <= ignore_index < num_classes:
            raise ChangeAgentError(f"ignore_index {ignore_index} collides with a class id (0..{num_classes - 1})")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names) if class_names is not None else None
        self.add_state(
            "confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        check_class_map("pred", pred, self.num_classes)
        check_class_map("target", target, self.num_classes, self.ignore_index)
        check_same_shape(pred=pred, target=target)
        self.confmat += multiclass_confusion_matrix(
            pred.reshape(-1), target.reshape(-1), self.num_classes,
            ignore_index=self.ignore_index, validate_args=False,
        ).to(self.confmat)

    def compute(self) -> dict:
        return segmentation_scores(self.confmat, self.class_names)
