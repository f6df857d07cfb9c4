"""The mask task: the shared binary change head and one semantic head per dataset with class maps.

Head: `models/mask_decoder.py` (outputs "change" [B,1,H,W], "masks" {dataset: logits}). Loss:
`losses.mask.mask_task_loss` (`loss.mask`). Scores per dataset by its spec (`DatasetSpec.metrics`,
`decoding`): binary change (precision, recall, F1, IoU of the change class, OA from one confusion
matrix over all pixels), class maps (MIoU, per-class IoU), SECOND's SCD protocol (SeK, Fscd). Maps
are decoded by `models.mask_decoder.class_maps`, the one rule `predict` uses too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from changeagent.data.constants import IGNORE_INDEX
from changeagent.data.spec import DatasetSpec
from changeagent.fileio import atomic_path
from changeagent.losses.mask import MaskLossCfg, mask_task_loss
from changeagent.metrics import SegmentationMetrics, SemanticChangeMetrics
from changeagent.metrics.segmentation import binary_scores
from changeagent.models.mask_decoder import class_maps
from changeagent.tasks.spec import EvalContext, TaskContext, TaskSpec, VisMask

# the batch key of each decoding's target (docs/design.md, "Samples")
TARGET_KEY = {"binary": "change", "classes": "mask", "semantic_pair": "sem"}


def predicted_maps(pred: Mapping[str, Any], spec: DatasetSpec) -> Tensor:
    """Class maps of `model.predict`'s mask outputs for `spec`'s head: int64 [B, H, W] (binary,
    classes) or [B, 2, H, W] (semantic_pair); see `class_maps`."""
    return class_maps(pred["change"][:, 0], (pred.get("masks") or {}).get(spec.id), spec.decoding)[1]


def split_dense(logits: Tensor, spec: DatasetSpec) -> tuple[Tensor, Tensor | None]:
    """Stacked dense logits [..., 1 + dates*K, H, W] (`MaskTask.dense`'s layout) -> (change logits
    [..., H, W], the head's [..., K, H, W] or [..., 2, K, H, W] or None)."""
    change = logits[..., 0, :, :]
    if not spec.dates:
        return change, None
    head = logits[..., 1:, :, :]
    if spec.dates == 2:
        head = head.unflatten(-3, (2, spec.num_classes))
    return change, head


class MaskMetric:
    """Confusion matrices of one dataset (torchmetrics states: summed over DDP ranks in `compute`)."""

    def __init__(self, ctx: EvalContext) -> None:
        self.ctx, self.spec = ctx, ctx.dataset
        classes = ("no_change", "change") if self.spec.decoding == "binary" else self.spec.classes
        self.seg = SegmentationMetrics(len(classes), class_names=classes).to(ctx.device)
        self.scd = SemanticChangeMetrics().to(ctx.device) if "scd" in self.spec.metrics else None

    def update(self, pred: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        maps = predicted_maps(pred, self.spec)
        target = batch[TARGET_KEY[self.spec.decoding]].to(maps.device)
        if self.scd is not None:
            self.scd.update_stacked(maps, target)
        self.seg.update(maps.flatten(0, 1) if maps.dim() == 4 else maps,
                        target.flatten(0, 1) if target.dim() == 4 else target)
        if self.ctx.predictions_dir is not None:
            save_masks(self.ctx.predictions_dir, list(batch["name"]), maps.cpu(), self.spec)

    def compute(self) -> dict[str, Any]:
        scores = self.seg.compute()
        if "binary" in self.spec.metrics:
            return binary_scores(scores)
        if self.scd is not None:  # SECOND: the SCD protocol's headline keys plus per-class IoU over both dates
            return {**{k: v for k, v in scores.items() if k.startswith("iou")}, **self.scd.compute()}
        return scores


def save_masks(folder: Path, names: list[str], maps: Tensor, spec: DatasetSpec) -> None:
    """Palette PNGs in the dataset's colours: one map `<name>`; per-date maps `<stem>_A.png`, `<stem>_B.png`."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    pal = [v for c in spec.palette for v in c]
    for name, m in zip(names, maps.numpy().astype(np.uint8)):
        stem = Path(name).stem
        items = [(f"{stem}.png", m)] if m.ndim == 2 else [(f"{stem}_A.png", m[0]), (f"{stem}_B.png", m[1])]
        for fname, arr in items:
            img = Image.fromarray(arr, mode="P")
            img.putpalette(pal)
            with atomic_path(folder / fname) as tmp:
                img.save(tmp, format="PNG")


class MaskTask(TaskSpec):
    name = "mask"
    title = "change masks"
    targets = "change masks"
    loss_config = MaskLossCfg
    columns = (("miou", "MIoU"), ("oa", "OA"), ("precision", "P"), ("recall", "R"), ("f1", "F1"), ("iou", "IoU"),
               ("sek", "SeK"), ("fscd", "Fscd"), ("score", "Score"))
    shared_part = "the shared change head"

    def enabled_for(self, dataset: DatasetSpec) -> bool:
        return dataset.has_mask

    def own_part(self, dataset: DatasetSpec) -> str | None:
        """Class maps need the dataset's semantic head; binary change masks the shared change head alone."""
        return "a semantic head" if dataset.dates else None

    def loss(self, out: Mapping[str, Any], batch: Mapping[str, Any], inputs: Mapping[str, Tensor],
             cfg: Any) -> dict[str, Tensor]:
        if out.get("change") is None:
            return {}
        total, parts = mask_task_loss(out, batch, cfg)
        return {self.name: total, **{f"{self.name}/{k}": v for k, v in parts.items()}}

    def metric(self, ctx: EvalContext) -> MaskMetric:
        return MaskMetric(ctx)

    def visual(self, pred: Mapping[str, Any], batch: Mapping[str, Any], i: int, ctx: EvalContext) -> dict[str, Any]:
        """The item's predicted and true maps (SECOND: date B's land cover) and its change IoU."""
        spec = ctx.dataset
        maps = predicted_maps({"change": pred["change"][i:i + 1],
                               "masks": {k: v[i:i + 1] for k, v in (pred.get("masks") or {}).items()}}, spec)[0]
        p, t = maps.cpu().numpy(), batch[TARGET_KEY[spec.decoding]][i].cpu().numpy()
        if p.ndim == 3:  # SECOND: show the post-change land cover on image B
            p, t = p[1], t[1]
        valid = t != IGNORE_INDEX
        inter = np.logical_and(p > 0, t > 0)[valid].sum()
        union = np.logical_or(p > 0, t > 0)[valid].sum()
        return {"GT mask": VisMask(t.astype(np.uint8), "ground_truth"),
                "pred mask": VisMask(p.astype(np.uint8), "prediction"), "iou": float(inter / union) if union else 1.0}

    def dense_channels(self, dataset: DatasetSpec) -> int:
        """[change] plus the dataset's semantic head: 1 + dates x classes (levir_mci: 4, second_cc: 15)."""
        return 1 + dataset.dates * dataset.num_classes

    def dense(self, pred: Mapping[str, Any], dataset: DatasetSpec) -> Tensor | None:
        if pred.get("change") is None:
            return None
        change = pred["change"].float()
        b, _, h, w = change.shape
        parts = [change]
        if dataset.dates:  # a semantic head; binary change and caption-only heads use `change` alone
            parts.append(pred["masks"][dataset.id].float().reshape(b, -1, h, w))
        return torch.cat(parts, dim=1)

    def window(self, pred: Mapping[str, Any], i: int, ctx: TaskContext) -> dict[str, Any]:
        return {}


SPEC = MaskTask()
