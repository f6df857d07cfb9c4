"""The qa task: change question answering over a closed answer set, by the CDVQA protocol (SPEC §8).

Head: `models/qa_head.QATaskHead` (the learned `QAHead` over the token memory, its question-only
twin, the training answers counted per type); inputs are texts (`qa_questions`, `qa_item`,
`qa_types`, `qa_answers`), so the saved model's vocabularies (`model.qa.question_words`,
`answers`) are the only ones used.

Targets (`derive`, per sample, in the data pipeline): an item of a QA dataset (CDVQA, QAG-360K)
brings its own question and answer; an item of a dataset with per-date land-cover maps (SECOND-CC,
SECOND: the eight CDVQA types) or one change-class map (LEVIR-MCI: change or not, ratios, counts,
largest/smallest, 3x3 positions) gets questions derived from its (augmented) maps by
`data.qa.derive` with the hook's seeded rng: every question of the tile, then a few of them, spread
over the types (`TRAIN_QUESTIONS` a training step, `EVAL_QUESTIONS` at evaluation) so a step costs
little. Loss: cross-entropy over the answers the question's type allows (`qa/learned`), plus the
question-only baseline's own cross-entropy (`qa/question_only`) added with its value taken out
(`q - q.detach()`): the weighting sees the learned head's loss, the baseline still trains.

Scores per dataset (`metrics.json[<dataset>]`): "qa" (the learned head: aa, oa, per_type, n,
n_per_type), "qa_measured" (the rules of data/qa/rules.py on the model's own maps of the same pass,
decoded by `models.mask_decoder.class_maps`; datasets with a semantic head only) and "qa_baselines"
{"majority": the most frequent training answer per type, "question_only": the question-only head}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from changeagent.data.lexicon import DATASET_LEXICON, lexicon_for
from changeagent.data.qa.derive import derive_one_map, derive_two_dates
from changeagent.data.qa.parse import ParseError, parse_question
from changeagent.data.qa.rules import Evidence, Question, RuleError, answer, split_nodata
from changeagent.data.spec import DatasetSpec
from changeagent.tasks.spec import EvalContext, StepKey, TaskContext, TaskSpec, TaskTable, VisText

TRAIN_QUESTIONS = 4  # questions per pair a training step (a few: the head is cheap, the trunk pass shared)
EVAL_QUESTIONS = 16  # questions per pair at evaluation (every type of a tile, then more of each)

QA_TABLE = TaskTable(
    title="change question answering (percent; AA = mean over types, OA = pooled)",
    columns=(("aa", "AA"), ("oa", "OA")),
    rows=(("qa", "learned"), ("qa_measured", "measured (rules on predicted maps)"),
          ("qa_baselines.majority", "majority per type"), ("qa_baselines.question_only", "question only")),
    count=("n", "questions"))


def _spread(items: list[Any], types: list[str], k: int, rng: np.random.Generator) -> list[Any]:
    """Up to k of `items`, the types taken in turn (a random order of types, a random order within
    each), so each type is asked about as often as it can be."""
    by_type: dict[str, list[Any]] = {}
    for it, t in zip(items, types):
        by_type.setdefault(t, []).append(it)
    order = [by_type[t] for t in sorted(by_type)]
    rng.shuffle(order)
    for group in order:
        rng.shuffle(group)
    out: list[Any] = []
    depth = 0
    while len(out) < k and any(depth < len(g) for g in order):
        out.extend(g[depth] for g in order if depth < len(g))
        depth += 1
    return out[:k]


def derive_questions(maps: np.ndarray, dataset: DatasetSpec, rng: np.random.Generator, k: int) -> list[dict[str, Any]]:
    """Up to k questions of a tile's label maps (int [T, H, W], IGNORE_INDEX = 255 dropped) as
    {"text", "type", "answer", "question": Question dict}."""
    arr, valid = split_nodata(maps)
    ev = Evidence(arr, lexicon_for(dataset.id), valid)
    if not valid.any():
        return []
    groups = derive_two_dates(ev, rng) if ev.dates == 2 else derive_one_map(ev, rng)
    items = [it for g in groups for it in g]
    picked = _spread(items, [it.question.type for it in items], k, rng)
    return [{"text": it.text, "type": it.question.type, "answer": it.answer, "question": it.question.to_dict()}
            for it in picked]


def flat_questions(batch: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[int]]:
    """The batch's questions item after item, and the item of each."""
    rows, items = [], []
    for i, qs in enumerate(batch.get("qa") or []):
        for q in qs or []:
            rows.append(q)
            items.append(i)
    return rows, items


def _inputs(batch: Mapping[str, Any], answers: bool) -> dict[str, Any]:
    rows, items = flat_questions(batch)
    if not rows:
        return {}
    out: dict[str, Any] = {"qa_questions": [r["text"] for r in rows], "qa_types": [r["type"] for r in rows],
                           "qa_item": torch.tensor(items, dtype=torch.long)}
    if answers:
        out["qa_answers"] = [r["answer"] for r in rows]
    return out


class QAMetric:
    """Per-type accuracy of the learned head, the measured answers and the two baselines
    (torchmetrics states summed over DDP ranks)."""

    def __init__(self, ctx: EvalContext) -> None:
        from changeagent.metrics.qa import QAMetrics

        self.ctx, self.spec = ctx, ctx.dataset
        self.scores = {k: QAMetrics().to(ctx.device) for k in ("qa", "qa_measured", "majority", "question_only")}
        self.lexicon = lexicon_for(self.spec.id)
        self.measured_seen = 0

    def update(self, pred: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        rows, items = flat_questions(batch)
        if not rows or pred.get("qa_answers") is None:
            return
        types, target = [r["type"] for r in rows], [r["answer"] for r in rows]
        self.scores["qa"].update(types, pred["qa_answers"], target)
        self.scores["question_only"].update(types, pred["qa_qonly_answers"], target)
        self.scores["majority"].update(types, [a or "" for a in pred["qa_majority"]], target)
        measured = measured_answers(pred, rows, items, self.spec)
        if measured is not None:
            self.scores["qa_measured"].update(types, measured, target)
            self.measured_seen += len(rows)

    def compute(self) -> dict[str, Any]:
        s = {k: m.compute() for k, m in self.scores.items() if k != "qa_measured"}
        if not s["qa"]["n"]:
            return {}
        out = {"qa": s["qa"], "qa_baselines": {"majority": s["majority"], "question_only": s["question_only"]}}
        if self.ctx.sync.gather(self.measured_seen) and sum(self.ctx.sync.gather(self.measured_seen)):
            out["qa_measured"] = self.scores["qa_measured"].compute()
        return out


def measured_answers(pred: Mapping[str, Any], rows: list[dict[str, Any]], items: list[int],
                     spec: DatasetSpec) -> list[str] | None:
    """The rules' answers on the model's decoded maps of the same pass (None: the model has no map of
    this dataset's label space); a question the rules cannot answer there gets "" (wrong)."""
    if pred.get("change") is None or not spec.dates or spec.id not in DATASET_LEXICON:
        return None
    from changeagent.tasks.mask import predicted_maps  # the one decoder (models.mask_decoder.class_maps)

    maps = predicted_maps(pred, spec).cpu().numpy()
    lexicon = lexicon_for(spec.id)
    evidence: dict[int, Evidence] = {}
    out = []
    for r, i in zip(rows, items):
        if i not in evidence:
            m = maps[i] if maps.ndim == 4 else maps[i][None]
            evidence[i] = Evidence(m.astype(np.int64), lexicon)
        q = r.get("question")
        try:
            out.append(answer(Question.from_dict(q), evidence[i]).answer if q else "")
        except RuleError:
            out.append("")
    return out


class QATask(TaskSpec):
    name = "qa"
    title = "change question answering"
    targets = "questions (CDVQA, QAG-360K) or label maps to derive them from (SECOND-CC, SECOND, LEVIR-MCI)"
    tables = (QA_TABLE,)

    def enabled_for(self, dataset: DatasetSpec) -> bool:
        return dataset.id in DATASET_LEXICON and ("questions" in dataset.targets or dataset.dates > 0)

    def derive(self, sample: dict[str, Any], rng: np.random.Generator, ctx: TaskContext) -> dict[str, Any]:
        ds = ctx.dataset
        if ds is None:
            return {}
        if sample.get("question") is not None and sample.get("answer") is not None:  # a QA dataset's item
            try:
                q: dict[str, Any] | None = parse_question(sample["question"], lexicon_for(ds.id)).to_dict()
            except ParseError:
                q = None  # still trained and scored; the rules cannot answer it (measured: wrong)
            return {"qa": [{"text": sample["question"], "type": sample["question_type"], "answer": sample["answer"],
                            "question": q}]}
        if ds.dates == 2 and sample.get("sem") is not None:
            maps = np.asarray(sample["sem"])
        elif ds.dates == 1 and sample.get("mask") is not None:
            maps = np.asarray(sample["mask"])[None]
        else:
            return {}
        return {"qa": derive_questions(maps, ds, rng, TRAIN_QUESTIONS if ctx.train else EVAL_QUESTIONS)}

    def train_inputs(self, batch: Mapping[str, Any], key: StepKey, ctx: TaskContext) -> dict[str, Tensor]:
        return _inputs(batch, answers=True)

    def loss(self, out: Mapping[str, Any], batch: Mapping[str, Any], inputs: Mapping[str, Tensor],
             cfg: Any) -> dict[str, Tensor]:
        if out.get("qa_logits") is None or out.get("qa_target") is None:
            return {}
        target = out["qa_target"]
        learned = F.cross_entropy(out["qa_logits"].float(), target)
        qonly = F.cross_entropy(out["qa_qonly_logits"].float(), target)
        return {self.name: learned + (qonly - qonly.detach()), f"{self.name}/learned": learned.detach(),
                f"{self.name}/question_only": qonly.detach()}

    def eval_inputs(self, batch: Mapping[str, Any], ctx: TaskContext) -> dict[str, Tensor]:
        return _inputs(batch, answers=False)  # never the answers: they would widen the allowed set

    def metric(self, ctx: EvalContext) -> QAMetric:
        return QAMetric(ctx)

    def visual(self, pred: Mapping[str, Any], batch: Mapping[str, Any], i: int, ctx: EvalContext) -> dict[str, Any]:
        rows, items = flat_questions(batch)
        if pred.get("qa_answers") is None:
            return {}
        mine = [(r, a) for r, a, j in zip(rows, pred["qa_answers"], items) if j == i]
        if not mine:
            return {}
        r, a = mine[0]
        return {"question": VisText(r["text"], "reference"), "GT answer": VisText(r["answer"], "reference"),
                "pred answer": VisText(a), "answer right": a == r["answer"]}

    def predict_inputs(self, user: Mapping[str, Any], batch: int, ctx: TaskContext) -> dict[str, Any]:
        """{"question": text} -> the question for each of `batch` windows, parsed in the head dataset's
        label space (a question it cannot read is a ParseError that lists the types it answers)."""
        text = user.get("question")
        if text is None or ctx.dataset is None:
            return {}
        q = parse_question(str(text), lexicon_for(ctx.dataset.id))
        return {"qa_questions": [str(text)] * batch, "qa_types": [q.type] * batch,
                "qa_item": torch.arange(batch, dtype=torch.long)}

    def window(self, pred: Mapping[str, Any], i: int, ctx: TaskContext) -> dict[str, Any]:
        if pred.get("qa_answers") is None:
            return {}
        return {"qa_answer": pred["qa_answers"][i], "qa_probability": float(pred["qa_probs"][i])}


SPEC = QATask()
