"""The retrieval task: text-to-pair retrieval by a pair embedding and a caption embedding (SPEC §2.4).

Head: `models/retrieval.py` (teacher forcing: "pair_emb", "text_emb" [B, D], "logit_scale";
predictions: "pair_emb", and "text_emb" of the input "texts"). A training step embeds the caption
the caption task trains on (the same `choose_captions` draw), except that no-change pairs of the
reference trick get one of the five no-change sentences (`retrieval_captions`). Loss:
`losses.contrastive.contrastive_loss`. Scores: R@1/5/10, MRR@10 over every reference caption as a
query (`metrics.retrieval.retrieval_report`); the per-pair embeddings are gathered to rank 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from changeagent.data.constants import CANONICAL_NO_CHANGE, NO_CHANGE_SENTENCES
from changeagent.data.spec import DatasetSpec
from changeagent.losses.contrastive import contrastive_loss
from changeagent.models.retrieval import encode_texts
from changeagent.tasks.caption import RETRIEVAL_TABLE, choose_captions
from changeagent.tasks.spec import EvalContext, StepKey, TaskContext, TaskSpec, TaskTable


def retrieval_captions(caps: Tensor, vocab: Any, key: StepKey) -> Tensor | None:
    """int64 [B, L] -> the captions the retrieval head is trained on, or None when they are `caps`.

    The reference trick gives every no-change train pair five copies of CANONICAL_NO_CHANGE, so the
    caption encoder would never see the other four no-change sentences that are half of the
    no-change queries at test time: those rows get one of the five, drawn like `choose_captions`.
    """
    width = caps.shape[1]
    canon = torch.tensor(vocab.encode(CANONICAL_NO_CHANGE, max_len=width), dtype=caps.dtype)
    rows = (caps.cpu() == canon).all(1)
    if not bool(rows.any()):
        return None
    choices = torch.tensor([vocab.encode(s, max_len=width) for s in NO_CHANGE_SENTENCES], dtype=caps.dtype)
    pick = torch.randint(len(NO_CHANGE_SENTENCES), (caps.shape[0],), generator=key.generator("retrieval"))
    out = caps.cpu().clone()
    out[rows] = choices[pick[rows]]
    return out.to(caps.device)


class RetrievalMetric:
    """Per pair: its embedding and its reference captions' embeddings, gathered to rank 0."""

    def __init__(self, ctx: EvalContext) -> None:
        self.ctx = ctx
        self.items: list[tuple[list[str], int, np.ndarray, np.ndarray]] = []  # refs, flag, pair [D], texts [R, D]

    def update(self, pred: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        if pred.get("pair_emb") is None or pred.get("text_emb") is None:
            return
        pair = pred["pair_emb"].float().cpu().numpy()
        text = pred["text_emb"].float().cpu().numpy()
        at = 0
        for i, refs in enumerate(batch["captions"]):
            self.items.append((list(refs), int(batch["changeflag"][i]), pair[i], text[at:at + len(refs)]))
            at += len(refs)

    def compute(self) -> dict[str, Any]:
        from changeagent.metrics.retrieval import retrieval_report

        gathered = [it for part in self.ctx.sync.gather(self.items) for it in part]
        if not self.ctx.sync.is_main or not gathered:
            return {}
        return retrieval_report([g[0] for g in gathered], [g[1] for g in gathered], None,
                                np.stack([g[2] for g in gathered]), np.concatenate([g[3] for g in gathered]))


class RetrievalTask(TaskSpec):
    name = "retrieval"
    title = "text-to-pair retrieval"
    targets = "captions"
    tables = (TaskTable(RETRIEVAL_TABLE.title, RETRIEVAL_TABLE.columns, (("retrieval", "learned"),),
                        RETRIEVAL_TABLE.count),)

    def enabled_for(self, dataset: DatasetSpec) -> bool:
        return dataset.has_captions

    def train_inputs(self, batch: Mapping[str, Any], key: StepKey, ctx: TaskContext) -> dict[str, Tensor]:
        if "caption_ids" not in batch:
            return {}
        caps = choose_captions(batch["caption_ids"], key)  # the caption task's draw: the same captions
        texts = retrieval_captions(caps, ctx.vocab, key)
        return {"captions": caps, **({"retrieval_captions": texts} if texts is not None else {})}

    def loss(self, out: Mapping[str, Any], batch: Mapping[str, Any], inputs: Mapping[str, Tensor],
             cfg: Any) -> dict[str, Tensor]:
        if out.get("pair_emb") is None or out.get("text_emb") is None:
            return {}
        texts = inputs.get("retrieval_captions")  # the text side's captions when they differ from captions
        return {self.name: contrastive_loss(out["pair_emb"], out["text_emb"], out.get("logit_scale", 1.0),
                                            inputs["captions"] if texts is None else texts, batch.get("changeflag"))}

    def eval_inputs(self, batch: Mapping[str, Any], ctx: TaskContext) -> dict[str, Tensor]:
        """Every reference caption of the batch, in item order: "texts" int64 [sum of R_i, L]."""
        flat = [r for refs in batch["captions"] for r in refs]
        return {"texts": encode_texts(ctx.vocab, flat)} if flat else {}

    def metric(self, ctx: EvalContext) -> RetrievalMetric:
        return RetrievalMetric(ctx)


SPEC = RetrievalTask()
