"""The caption task: one change caption per pair, scored by the COCO metrics (SPEC §2.2).

Head: `models/caption_decoder.py` (teacher forcing: "caption" [B, L-1, V]; predictions: "tokens").
A training step trains each item on one of its five captions, drawn off the global RNG by the step
(`choose_captions`). Loss: `losses.caption.caption_loss` (`loss.caption`). Scores: BLEU-1..4,
METEOR, ROUGE-L, CIDEr, S*m and the no-change accuracy (`metrics.caption_report`), plus the
caption-matching retrieval baseline of SPEC §2.4 (BM25 of each reference caption against the
generated ones: "retrieval_baseline", which needs no retrieval head). The generated captions are
gathered to rank 0, scored there once (one METEOR Java process) and written to captions.json.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from changeagent.data.spec import DatasetSpec
from changeagent.fileio import write_text_atomic
from changeagent.losses.caption import CaptionLossCfg, caption_loss
from changeagent.tasks.spec import EvalContext, StepKey, TaskContext, TaskSpec, TaskTable, VisText

LEVELS = {"word": "caption metrics on words", "id": "caption metrics on vocabulary ids, as the reference code"}

# the text-to-pair retrieval table (SPEC §2.4); the retrieval task adds the learned head's row
RETRIEVAL_TABLE = TaskTable(
    title="text-to-pair retrieval (percent; chg = change queries only)",
    columns=(("r1", "R@1"), ("r5", "R@5"), ("r10", "R@10"), ("mrr10", "MRR@10"), ("change_r1", "chg R@1"),
             ("change_r5", "chg R@5"), ("change_r10", "chg R@10"), ("change_mrr10", "chg MRR@10")),
    rows=(("retrieval_baseline", "bm25 captions"),), count=("n_queries", "queries"))


def choose_captions(caption_ids: Tensor, key: StepKey) -> Tensor:
    """int64 [B, 5, L] -> [B, L]: one of each item's captions, drawn from a generator keyed on the
    step (`StepKey`) so the choice is reproducible and independent of the global RNG."""
    b, n = caption_ids.shape[:2]
    pick = torch.randint(n, (b,), generator=key.generator()).to(caption_ids.device)
    return caption_ids[torch.arange(b, device=caption_ids.device), pick]


class CaptionMetric:
    """Generated captions of one dataset, gathered to rank 0 and scored there."""

    def __init__(self, ctx: EvalContext) -> None:
        self.ctx = ctx
        self.items: list[tuple[str, str, list[str], int]] = []  # (name, generated, references, changeflag)

    def update(self, pred: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        if pred.get("tokens") is None:
            return
        vocab = self.ctx.vocab
        for i, (name, tokens) in enumerate(zip(batch["name"], pred["tokens"].cpu().tolist())):
            self.items.append((name, vocab.decode(tokens), list(batch["captions"][i]), int(batch["changeflag"][i])))

    def compute(self) -> dict[str, Any]:
        from changeagent.metrics import caption_report  # noqa: PLC0415  (heavy pycocoevalcap import)
        from changeagent.metrics.retrieval import retrieval_report

        ctx, opts = self.ctx, self.ctx.options
        gathered = [c for part in ctx.sync.gather(self.items) for c in part]
        if not ctx.sync.is_main:
            return {}
        ids = [f"{ctx.dataset.id}/{name}" for name, *_ in gathered]
        if len(set(ids)) != len(ids):
            raise RuntimeError(f"evaluation saw duplicate pairs in {ctx.dataset.id}; the sampler must not pad")
        hyps = {i: c[1] for i, c in zip(ids, gathered)}
        refs = {i: c[2] for i, c in zip(ids, gathered)}
        flags = {i: c[3] for i, c in zip(ids, gathered)}
        id_level = opts.caption_level == "id"
        report = caption_report(hyps, refs, flags, meteor=opts.meteor, id_level=id_level,
                                vocab=ctx.vocab if id_level else None)
        scores: dict[str, Any] = dict(report["all"] or {})
        scores.update(change=report["change"], no_change=report["no_change"], counts=report["counts"],
                      no_change_accuracy=report["no_change_accuracy"])
        scores.update(retrieval_report([c[2] for c in gathered], [c[3] for c in gathered], [c[1] for c in gathered]))
        if ctx.predictions_dir is not None:
            ctx.predictions_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(ctx.predictions_dir / "captions.json", json.dumps(
                {c[0]: {"prediction": c[1], "references": c[2]} for c in gathered}, indent=2) + "\n")
        return scores


class CaptionTask(TaskSpec):
    name = "caption"
    title = "change captions"
    targets = "captions"
    loss_config = CaptionLossCfg
    columns = (("bleu1", "B1"), ("bleu2", "B2"), ("bleu3", "B3"), ("bleu4", "B4"), ("meteor", "METEOR"),
               ("rouge_l", "ROUGE-L"), ("cider", "CIDEr"), ("s_m", "S*m"), ("no_change_accuracy", "NC-acc"))
    tables = (RETRIEVAL_TABLE,)

    def enabled_for(self, dataset: DatasetSpec) -> bool:
        return dataset.has_captions

    def train_inputs(self, batch: Mapping[str, Any], key: StepKey, ctx: TaskContext) -> dict[str, Tensor]:
        if "caption_ids" not in batch:  # no dataset of the run has captions
            return {}
        return {"captions": choose_captions(batch["caption_ids"], key)}

    def loss(self, out: Mapping[str, Any], batch: Mapping[str, Any], inputs: Mapping[str, Tensor],
             cfg: Any) -> dict[str, Tensor]:
        if out.get("caption") is None:
            return {}
        return {self.name: caption_loss(out["caption"], inputs["captions"], cfg.label_smoothing)}

    def metric(self, ctx: EvalContext) -> CaptionMetric:
        return CaptionMetric(ctx)

    def visual(self, pred: Mapping[str, Any], batch: Mapping[str, Any], i: int, ctx: EvalContext) -> dict[str, Any]:
        """The generated caption, the references, its BLEU-4 and whether it is one of them."""
        from pycocoevalcap.bleu.bleu import Bleu  # noqa: PLC0415

        hyp = ctx.vocab.decode(pred["tokens"][i].cpu().tolist())
        refs = list(batch["captions"][i])
        _, per = Bleu(4).compute_score({0: refs}, {0: [hyp or "<empty>"]}, verbose=0)
        return {"GT captions": VisText(" | ".join(refs), "reference"), "pred caption": VisText(hyp),
                "bleu4": float(per[3][0]), "caption match": hyp in refs}

    def note(self, options: Any) -> str | None:
        level = getattr(options, "caption_level", None)
        return LEVELS.get(level, level) if level else None

    def window(self, pred: Mapping[str, Any], i: int, ctx: TaskContext) -> dict[str, Any]:
        return {"caption": ctx.vocab.decode(pred["tokens"][i].cpu().tolist())} if "tokens" in pred else {}


SPEC = CaptionTask()
