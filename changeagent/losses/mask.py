"""Mask losses: semantic (multi-class) and binary change, all skipping `IGNORE_INDEX` pixels, and the
mask task's loss (`mask_task_loss`: the change head plus each dataset's semantic head).

Cross-entropy is torch's; Dice and Lovász come from `segmentation_models_pytorch.losses`, whose
`ignore_index` handling drops ignored pixels from both prediction and target. What is added here:
target validation, a float32 cast (AMP logits), and a graph-connected zero when every pixel is
ignored (torch's mean CE would be 0/0 = NaN, smp's Lovász an empty tensor).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses import DiceLoss, LovaszLoss
from torch import Tensor

from changeagent.data.constants import IGNORE_INDEX
from changeagent.data.registry import dataset_ids, get_spec
from changeagent.errors import ChangeAgentError
from changeagent.typed import fail, opt, suggest


@dataclass
class MaskLossCfg:
    """`loss.mask`: terms of the binary change loss and of the semantic losses."""

    ce: float = opt(1.0, "weight of cross-entropy (BCE for the change head)", ge=0)
    dice: float = opt(0.0, "weight of Dice", ge=0)
    lovasz: float = opt(0.0, "weight of Lovasz (softmax / hinge)", ge=0)
    change_weight: float = opt(1.0, "factor of the binary change loss in the mask task", ge=0)
    class_weights: dict[str, list[float] | None] | None = opt(
        None, "per dataset, one CE/Dice weight per class, e.g. {levir_mci: [1, 2, 4]}")

    def validate(self, key: str) -> None:
        for name, w in (self.class_weights or {}).items():
            if name not in dataset_ids():
                fail(f"{key}.class_weights.{name}", f"unknown dataset{suggest(name, dataset_ids())}; "
                     f"known: {', '.join(dataset_ids())}")
            k = get_spec(name).num_classes
            if w is not None and k and len(w) != k:  # a custom head's class count comes from its data
                fail(f"{key}.class_weights.{name}", f"has {len(w)} values, need {k}")
            if w is not None and any(x < 0 for x in w):
                fail(f"{key}.class_weights.{name}", f"weights must be >= 0, got {w}")


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


def _rows(datasets: Sequence[str], name: str, device: torch.device) -> Tensor:
    return torch.tensor([i for i, d in enumerate(datasets) if d == name], dtype=torch.long, device=device)


def mask_task_loss(out: Mapping[str, Any], batch: Mapping[str, Any], cfg: MaskLossCfg) -> tuple[Tensor, dict[str, Tensor]]:
    """The mask task's loss and its parts (for logging).

    out: "change" float [B,1,H,W]; "masks" {dataset id: [B,K,H,W] (one map) or [B,2,K,H,W] (per date)}.
    batch: "change" int64 [B,H,W]; "mask" int64 [B,H,W]; "sem" int64 [B,2,H,W]; "dataset" list[str].

    Label spaces (SPEC §1.4) and partial supervision: every item with a change map supervises the
    shared binary change head; an item of a dataset with a semantic head also supervises that head,
    with one class map (`mask`, e.g. LEVIR-MCI) or one land-cover map per date (`sem`, e.g. SECOND-CC).
    Rows of a head whose dataset differs from the item's never contribute (collate fills missing
    targets with IGNORE_INDEX). SECOND land cover is labelled only on changed pixels, so class 0
    ("unchanged") is dropped from that head's loss: it learns to rank classes 1..6, and at prediction
    time a pixel is "unchanged" when the change head says so (`mask_decoder.class_maps`); keeping the
    7-wide layout means outputs, targets and metrics share SECOND's class ids without re-indexing.

    Returns (change_weight * change part + one part per semantic head present in the batch, parts):
    parts "change" and "<dataset id>"; a head without items in the batch adds a graph-connected zero
    (DDP sees the head used). ce/dice/lovasz weight the terms of every part; class_weights apply to
    CE and Dice of the semantic heads.
    """
    datasets = list(batch["dataset"])
    unknown = sorted(set(datasets) - set(dataset_ids()))
    if unknown:
        raise ChangeAgentError(f"batch: unknown dataset id(s) {unknown}; known: {dataset_ids()}")
    terms = {"ce": cfg.ce, "dice": cfg.dice, "lovasz": cfg.lovasz}
    class_weights = cfg.class_weights or {}
    change = binary_change_loss(out["change"], batch["change"], ce=cfg.ce, dice=cfg.dice, lovasz=cfg.lovasz)
    parts = {"change": change}
    total = cfg.change_weight * change
    for name, logits in (out.get("masks") or {}).items():
        if name not in dataset_ids():
            raise ChangeAgentError(f"model output: unknown mask head {name!r}; known: {dataset_ids()}")
        idx = _rows(datasets, name, logits.device)
        if idx.numel() == 0:
            total = total + zero_like_graph(logits)
            continue
        if logits.dim() == 4:  # one class map per item: target "mask"
            lg, target, classes = logits[idx], batch["mask"][idx], None
        elif logits.dim() == 5 and logits.shape[1] == 2:  # one land-cover map per date: target "sem"
            lg = logits[idx].flatten(0, 1)  # both dates as separate images: [2n, K, H, W]
            target = batch["sem"][idx].flatten(0, 1)
            # land cover is labelled only on changed pixels: unchanged is "no label" for this head
            target = torch.where(target == 0, torch.full_like(target, IGNORE_INDEX), target)
            classes = list(range(1, logits.shape[2]))
        else:
            raise ChangeAgentError(f"model output: {name} head must be [B,K,H,W] or [B,2,K,H,W], "
                                   f"got {tuple(logits.shape)}")
        part = semantic_loss(lg, target, class_weights=class_weights.get(name), classes=classes,
                             what=f"{name} semantic mask", **terms)
        parts[name] = part
        total = total + part
    return total, parts
