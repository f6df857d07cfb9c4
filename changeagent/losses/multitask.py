"""Per-task losses of the joint model: the "mask" group (change + per-dataset semantic heads) and "caption".

Label spaces (SPEC §1.4) and partial supervision: each loss uses only the items that carry its
target (the dataset registry says which targets a dataset supplies; collate fills missing ones with
IGNORE_INDEX / <NULL>). Every item with a change map supervises the shared binary change head; an
item of a dataset with a semantic head (`DatasetSpec.dates`) also supervises that head: one class
map (`mask`, e.g. LEVIR-MCI) or one land-cover map per date (`sem`, e.g. SECOND-CC). Rows of a head
whose dataset differs from the item's never contribute. Caption-only items (LEVIR-CC) give the
caption loss only; mask-only items (LEVIR-CD) give no caption loss.

Why the SECOND head keeps 7 outputs although class 0 ("unchanged") is never its target: SECOND
land cover is labelled only on changed pixels, so unchanged/IGNORE pixels are dropped from its loss
and the head only learns to rank classes 1..6. At prediction time a pixel is "unchanged" when the
change head says so, and otherwise takes the argmax over classes 1..6; keeping the 7-wide layout
means head outputs, targets and metrics share the SECOND class ids without any re-indexing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from changeagent.data.constants import IGNORE_INDEX
from changeagent.data.registry import dataset_ids, get_spec
from changeagent.errors import ChangeAgentError
from changeagent.losses.caption import caption_loss
from changeagent.losses.contrastive import contrastive_loss
from changeagent.losses.mask import binary_change_loss, semantic_loss, zero_like_graph
from changeagent.typed import fail, opt, suggest, to_plain

TASKS = ("mask", "caption", "retrieval")  # the groups the weighting strategies balance


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


@dataclass
class CaptionLossCfg:
    """`loss.caption`: the teacher-forced token cross-entropy."""

    label_smoothing: float = opt(0.0, "label smoothing", ge=0, lt=1)


def parse_loss_config(cfg: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validated (mask, caption) sections with defaults filled in; see `compute_losses`."""
    from changeagent.losses.factory import loss_config  # the whole section (weighting included)

    typed = loss_config(cfg)
    return to_plain(typed.mask), to_plain(typed.caption)


def _rows(datasets: list[str], name: str, device: torch.device) -> Tensor:
    return torch.tensor([i for i, d in enumerate(datasets) if d == name], dtype=torch.long, device=device)


def compute_losses(out: Mapping[str, Any], batch: Mapping[str, Any],
                   cfg: Mapping[str, Any] | None = None) -> dict[str, Tensor]:
    """Per-task losses from the model output and the collated batch.

    out: "change" float [B,1,H,W]; "masks" {dataset id: [B,K,H,W] (one map) or [B,2,K,H,W] (per date)},
    e.g. {"levir_mci": [B,3,H,W], "second_cc": [B,2,7,H,W]} (any head may be absent); "caption" float [B,L-1,V] or absent/None (mask-only stage).
    batch: "change" int64 [B,H,W]; "mask" int64 [B,H,W]; "sem" int64 [B,2,H,W];
    "caption_ids" int64 [B,L] (one caption per item); "dataset" list[str] of length B.
    cfg (the `loss` section; a "weighting" key is allowed and ignored here):
        mask:    {ce: 1.0, dice: 0.0, lovasz: 0.0, change_weight: 1.0,
                  class_weights: null | {levir_mci: [3 floats], second_cc: [7 floats]}}
        caption: {label_smoothing: 0.0}
    ce/dice/lovasz weight the terms of both the binary change loss and the semantic losses;
    class_weights apply to CE and Dice of the semantic heads.

    Returns float32 scalars: "mask" = change_weight * "mask/change" + "mask/<dataset id>" per
    semantic head; a semantic part is present only when the batch has items of that dataset
    (otherwise a graph-connected zero joins "mask" so DDP sees the head used); "caption" only when
    caption logits are given; "retrieval" (losses/contrastive.py) only when the model has a
    retrieval head and was given captions (uses batch["changeflag"] for the no-change rule and
    batch["retrieval_ids"], when present, as the captions the text embeddings came from).
    "mask", "caption" and "retrieval" are the tasks for the weighting; "mask/*" are for logging.
    """
    mcfg, ccfg = parse_loss_config(cfg)
    datasets = list(batch["dataset"])
    unknown = sorted(set(datasets) - set(dataset_ids()))
    if unknown:
        raise ChangeAgentError(f"batch: unknown dataset id(s) {unknown}; known: {dataset_ids()}")
    terms = {"ce": mcfg["ce"], "dice": mcfg["dice"], "lovasz": mcfg["lovasz"]}
    class_weights = mcfg["class_weights"] or {}

    losses: dict[str, Tensor] = {}
    change = binary_change_loss(out["change"], batch["change"], **terms)
    losses["mask/change"] = change
    mask_total = mcfg["change_weight"] * change

    for name, logits in (out.get("masks") or {}).items():
        if name not in dataset_ids():
            raise ChangeAgentError(f"model output: unknown mask head {name!r}; known: {dataset_ids()}")
        idx = _rows(datasets, name, logits.device)
        if idx.numel() == 0:
            mask_total = mask_total + zero_like_graph(logits)
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
        losses[f"mask/{name}"] = part
        mask_total = mask_total + part

    losses["mask"] = mask_total
    if out.get("caption") is not None:
        losses["caption"] = caption_loss(out["caption"], batch["caption_ids"], ccfg["label_smoothing"])
    if out.get("pair_emb") is not None and out.get("text_emb") is not None:
        flags = batch.get("changeflag")
        texts = batch.get("retrieval_ids")  # the text side's captions when they differ from caption_ids
        losses["retrieval"] = contrastive_loss(out["pair_emb"], out["text_emb"], out.get("logit_scale", 1.0),
                                               batch["caption_ids"] if texts is None else texts, flags)
    return losses
