"""The grounding task: a mask for a referring change expression (SPEC §9, docs/models.md "Grounding head").

Head: `models/grounding_head.GroundingModule` (input "expressions": texts, "expression_pairs": the
pair of each; output "grounding" [N, 1, H, W] logits). Targets (`derive`, on the fly per sample):
datasets with class maps (LEVIR-MCI, SECOND-CC, SECOND) get `PER_PAIR` expressions drawn by
`data.grounding.derive` (training: new ones each epoch; evaluation: `derive_sample` seeded by the
item's name, so every evaluation scores the same expressions), QAG-360K items their question with its
answer mask. Batch keys: "g_texts" list[list[str]], "g_masks" int64 [B, E, H, W] and "g_types" int64
[B, E] (index into `TYPES`, -1 = padding). Loss: `losses.grounding` (BCE + Dice, `loss.grounding`).

Scores (`metrics.grounding.GroundingMetrics`, each {miou, oiou, pr50, pr70, pr90, no_target_acc,
per_type, n}): "grounding" the learned head (sigmoid >= 0.35, the CRIS/VisTA threshold),
"grounding_program" the program route (`data.grounding.parse` + `cut` on the model's own maps,
decoded by `models.mask_decoder.class_maps` as eval and predict do; an expression it cannot parse
answers empty and is counted in `unparsed`), "grounding_baseline" the whole predicted change mask for
every expression; on SECOND-style data "grounding_rcd" the Referring-Change-Detection protocol for
the learned head (every class prompted on date 2, assembled, SeK).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from changeagent.data.constants import IGNORE_INDEX
from changeagent.data.grounding.expressions import derive, derive_sample, maps_of, rcd_prompts
from changeagent.data.grounding.query import DATASET_SPACE, EXPRESSION_TYPES, MAP_DATES, cut, space_of
from changeagent.data.spec import DatasetSpec
from changeagent.losses.grounding import GroundingLossCfg, grounding_loss
from changeagent.losses.mask import zero_like_graph
from changeagent.metrics.grounding import (
    REFERENCE_THRESHOLD,
    GroundingMetrics,
    ReferringChangeMetrics,
    binarize,
)
from changeagent.tasks.spec import EvalContext, StepKey, TaskContext, TaskSpec, TaskTable

TYPES = (*EXPRESSION_TYPES, "question")  # "question": a QAG-360K question grounded by its answer mask
PER_PAIR = 4  # expressions derived per pair (training and evaluation)
ROUTES = (("grounding", "learned"), ("grounding_program", "program"), ("grounding_baseline", "baseline"))
GROUNDING_TABLE = TaskTable(
    "Change grounding", (("miou", "mIoU"), ("oiou", "oIoU"), ("pr50", "Pr@0.5"), ("pr70", "Pr@0.7"),
                         ("pr90", "Pr@0.9"), ("no_target_acc", "NT-acc")), ROUTES, ("n", "n"))


def has_maps(dataset: DatasetSpec) -> bool:
    return dataset.id in DATASET_SPACE


def _valid(maps: np.ndarray) -> np.ndarray:
    """Pixels every class map labels: bool [H, W]."""
    return (maps != IGNORE_INDEX) if maps.ndim == 2 else (maps != IGNORE_INDEX).all(0)


def flatten(batch: Mapping[str, Any]) -> tuple[list[str], Tensor, Tensor]:
    """The batch's expressions in (pair, expression) order: (texts, pairs int64 [N], keep bool [B, E])."""
    keep = batch["g_types"] >= 0
    texts = [t for i, row in enumerate(batch["g_texts"]) for e, t in enumerate(row) if bool(keep[i, e])]
    pairs = keep.nonzero()[:, 0]
    return texts, pairs, keep


class GroundingMetric:
    """The three routes' `GroundingMetrics` (+ RCD on SECOND-style data) of one dataset (summed states)."""

    def __init__(self, ctx: EvalContext) -> None:
        self.ctx, self.spec = ctx, ctx.dataset
        self.routes = {key: GroundingMetrics(TYPES).to(ctx.device) for key, _ in ROUTES}
        self.seen = dict.fromkeys(self.routes, 0)
        self.unparsed = 0
        self.rcd = ReferringChangeMetrics(len(rcd_prompts(self.spec.id)[2]) + 1).to(ctx.device) \
            if has_maps(self.spec) and MAP_DATES[space_of(self.spec.id)] == 2 else None

    def _add(self, key: str, pred: Tensor, target: Tensor, types: list[str]) -> None:
        self.routes[key].update(pred.to(self.ctx.device), target.to(self.ctx.device), types)
        self.seen[key] += len(types)

    def update(self, pred: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        from changeagent.data.grounding.parser import try_parse

        texts, pairs, keep = flatten(batch)
        if not texts:
            return
        target = batch["g_masks"][keep]  # [N, H, W]
        types = [TYPES[int(t)] for t in batch["g_types"][keep]]
        n = len(texts)
        if pred.get("grounding") is not None:
            logits = pred["grounding"][:n, 0].float().cpu()
            self._add("grounding", binarize(logits, REFERENCE_THRESHOLD), target, types)
            if self.rcd is not None and pred["grounding"].shape[0] > n:  # the date-2 class prompts (eval_inputs)
                b, k = keep.shape[0], self.rcd.num_classes - 1
                rcd = pred["grounding"][n:, 0].float().reshape(b, k, *target.shape[-2:])
                self.rcd.update_logits({2: rcd.to(self.ctx.device)}, batch["sem"].to(self.ctx.device))
        if pred.get("change") is None:
            return
        change = (pred["change"][:, 0] > 0).cpu()
        self._add("grounding_baseline", change[pairs], target, types)
        if not has_maps(self.spec) or (self.spec.dates and not pred.get("masks")):
            return
        from changeagent.tasks.mask import predicted_maps

        maps = predicted_maps(pred, self.spec).cpu().numpy()
        answers = []
        for text, p in zip(texts, pairs.tolist()):
            q = try_parse(text, self.spec.id)
            if isinstance(q, Exception):
                self.unparsed += 1
                answers.append(np.zeros(target.shape[-2:], dtype=bool))
            else:
                answers.append(cut(q, maps[p]))
        self._add("grounding_program", torch.from_numpy(np.stack(answers)), target, types)

    def compute(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        seen = {k: sum(v) for k, v in zip(self.seen, zip(*self.ctx.sync.gather(list(self.seen.values()))))}
        for key, metric in self.routes.items():
            if seen[key]:  # torchmetrics sums the states over the ranks
                out[key] = metric.compute()
        if "grounding_program" in out:
            out["grounding_program"]["unparsed"] = sum(self.ctx.sync.gather(self.unparsed))
        if self.rcd is not None and int(self.rcd.confmat.sum()):
            out["grounding_rcd"] = self.rcd.compute()
        return out


class GroundingTask(TaskSpec):
    name = "grounding"
    title = "change grounding"
    targets = "class maps (LEVIR-MCI, SECOND-CC, SECOND) or QAG-360K answer masks"
    loss_config = GroundingLossCfg
    collate_pad = {"g_masks": IGNORE_INDEX, "g_types": -1}
    tables = (GROUNDING_TABLE,)

    def enabled_for(self, dataset: DatasetSpec) -> bool:
        return has_maps(dataset) or "answer_masks" in dataset.targets

    def derive(self, sample: dict[str, Any], rng: np.random.Generator, ctx: TaskContext) -> dict[str, Any]:
        if "answer_mask" in sample and "question" in sample:  # QAG-360K: the question is the expression
            mask = np.asarray(sample["answer_mask"], dtype=np.int64)
            return {"g_texts": [str(sample["question"])], "g_masks": mask[None],
                    "g_types": np.array([TYPES.index("question")], dtype=np.int64)}
        maps, dataset = maps_of(sample)
        exprs = derive(maps, dataset, rng, n=PER_PAIR) if ctx.train else derive_sample(sample, n=PER_PAIR)
        valid = _valid(np.asarray(maps))
        h, w = valid.shape
        masks = np.stack([np.where(valid, e.mask, IGNORE_INDEX) for e in exprs]).astype(np.int64) if exprs \
            else np.zeros((0, h, w), dtype=np.int64)
        return {"g_texts": [e.text for e in exprs], "g_masks": masks,
                "g_types": np.array([TYPES.index(e.type) for e in exprs], dtype=np.int64)}

    def train_inputs(self, batch: Mapping[str, Any], key: StepKey, ctx: TaskContext) -> dict[str, Any]:
        if "g_types" not in batch:
            return {}
        texts, pairs, _ = flatten(batch)
        return {"expressions": texts, "expression_pairs": pairs.to(batch["g_types"].device)} if texts else {}

    def loss(self, out: Mapping[str, Any], batch: Mapping[str, Any], inputs: Mapping[str, Any],
             cfg: Any) -> dict[str, Tensor]:
        if out.get("grounding") is None:
            return {}
        keep = batch["g_types"] >= 0
        target = batch["g_masks"][keep].to(out["grounding"].device)
        if target.shape[0] != out["grounding"].shape[0]:
            raise AssertionError("grounding: outputs and targets differ in count")
        if not target.numel():
            return {self.name: zero_like_graph(out["grounding"])}
        total, parts = grounding_loss(out["grounding"], target, cfg or GroundingLossCfg())
        return {self.name: total, **{f"{self.name}/{k}": v for k, v in parts.items()}}

    def eval_inputs(self, batch: Mapping[str, Any], ctx: TaskContext) -> dict[str, Any]:
        """The batch's expressions, then (SECOND-style data) every class's date-2 prompt per pair (RCD)."""
        if "g_types" not in batch:
            return {}
        texts, pairs, keep = flatten(batch)
        spec = ctx.dataset
        if spec is not None and has_maps(spec) and MAP_DATES[space_of(spec.id)] == 2:
            prompts = [p for _, _, p in rcd_prompts(spec.id)[2]]
            b = keep.shape[0]
            texts = texts + prompts * b
            pairs = torch.cat([pairs, torch.arange(b).repeat_interleave(len(prompts))])
        return {"expressions": texts, "expression_pairs": pairs} if texts else {}

    def metric(self, ctx: EvalContext) -> GroundingMetric:
        return GroundingMetric(ctx)

    def note(self, options: Any) -> str | None:
        return (f"grounding: {PER_PAIR} derived expressions per pair (seeded by name); mIoU counts an empty "
                "prediction on an empty target as 1; program = parse + cut on the predicted maps; baseline = "
                "the whole predicted change mask")


SPEC = GroundingTask()
