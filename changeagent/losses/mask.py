"""Mask losses: semantic (multi-class) and binary change, all skipping `IGNORE_INDEX` pixels.

Cross-entropy is torch's; Dice and Lovász come from `segmentation_models_pytorch.losses`, whose
`ignore_index` handling drops ignored pixels from both prediction and target. What is added here:
target validation, a float32 cast (AMP logits), and a graph-connected zero when every pixel is
ignored (torch's mean CE would be 0/0 = NaN, smp's Lovász an empty tensor).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss, LovaszLoss
from torch import Tensor

from changeagent.data.constants import IGNORE_INDEX
from changeagent.errors import ChangeAgentError


def zero_like_graph(logits: Tensor) -> Tensor:
    """A scalar 0 that still depends on `logits`, so every head's parameters get a (zero) gradient.

    Keeps DDP with `find_unused_parameters=False` working when a batch gives a head nothing to learn.
    """
    return logits.sum() * 0.0


def check_target(logits: Tensor, target: Tensor, num_classes: int, what: str) -> None:
    """Raise ChangeAgentError unless `target` fits `logits` and holds only 0..num_classes-1 or IGNORE."""
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ChangeAgentError(f"{what}: target must be an integer tensor, got {target.dtype}")
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ChangeAgentError(
            f"{what}: logits {tuple(logits.shape)} do not match target {tuple(target.shape)} "
            "(expected logits [N, C, H, W] and target [N, H, W])"
        )
    valid = target[target != IGNORE_INDEX]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= num_classes):
        bad = int(valid.min()) if int(valid.min()) < 0 else int(valid.max())
        raise ChangeAgentError(
            f"{what}: target holds class {bad}, outside 0..{num_classes - 1} (and not {IGNORE_INDEX})"
        )


def semantic_loss(
    logits: Tensor,
    target: Tensor,
    ce: float = 1.0,
    dice: float = 0.0,
    lovasz: float = 0.0,
    class_weights: Sequence[float] | None = None,
    classes: Sequence[int] | None = None,
    what: str = "semantic mask",
) -> Tensor:
    """ce * CE + dice * Dice + lovasz * Lovász-softmax over non-ignored pixels.

    logits: float [N, C, H, W]; target: int64 [N, H, W] with values in 0..C-1 or IGNORE_INDEX.
    class_weights: C floats for CE and Dice (Lovász has no class weights).
    classes: the classes Dice averages over (default all); a class that can never be a target
    (SECOND's "unchanged") is left out so its always-zero term does not dilute the mean.
    Returns a float32 scalar; 0 (graph-connected) when every pixel is ignored.
    """
    num_classes = logits.shape[1]
    check_target(logits, target, num_classes, what)
    if class_weights is not None and len(class_weights) != num_classes:
        raise ChangeAgentError(f"{what}: {len(class_weights)} class weights given for {num_classes} classes")
    logits = logits.float()  # AMP: keep softmax/log in full precision
    if not bool((target != IGNORE_INDEX).any()):
        return zero_like_graph(logits)
    total = zero_like_graph(logits)
    if ce:
        weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32,
                                                                    device=logits.device)
        total = total + ce * F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX)
    if dice:
        dice_fn = DiceLoss("multiclass", classes=None if classes is None else list(classes),
                           ignore_index=IGNORE_INDEX,
                           class_weights=None if class_weights is None else list(class_weights))
        total = total + dice * dice_fn(logits, target)
    if lovasz:
        total = total + lovasz * LovaszLoss("multiclass", ignore_index=IGNORE_INDEX)(logits, target)
    return total


def binary_change_loss(
    logits: Tensor,
    target: Tensor,
    ce: float = 1.0,
    dice: float = 0.0,
    lovasz: float = 0.0,
    what: str = "change mask",
) -> Tensor:
    """ce * BCE-with-logits + dice * Dice + lovasz * Lovász hinge over non-ignored pixels.

    logits: float [B, 1, H, W] (the shared change head); target: int64 [B, H, W] of 0/1/IGNORE_INDEX.
    Returns a float32 scalar; 0 (graph-connected) when every pixel is ignored.
    """
    if logits.dim() != 4 or logits.shape[1] != 1:
        raise ChangeAgentError(f"{what}: logits must be [B, 1, H, W], got {tuple(logits.shape)}")
    check_target(logits, target, 2, what)
    logits = logits.float()
    valid = target != IGNORE_INDEX
    if not bool(valid.any()):
        return zero_like_graph(logits)
    flat = logits[:, 0]
    total = zero_like_graph(logits)
    if ce:
        total = total + ce * F.binary_cross_entropy_with_logits(flat[valid], target[valid].float())
    if dice:
        total = total + dice * DiceLoss("binary", ignore_index=IGNORE_INDEX)(logits, target)
    if lovasz:
        total = total + lovasz * LovaszLoss("binary", ignore_index=IGNORE_INDEX)(flat, target)
    return total
