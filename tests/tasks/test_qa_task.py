"""The qa task through the real CLI on tiny synthetic SECOND-CC and LEVIR-MCI: questions derived per
sample, trained with the other tasks and balanced, scored (learned, measured, both baselines) in
metrics.json and the eval table; the vocabularies are saved with the model; a model without the
task is unchanged."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from changeagent.cli import main
from changeagent.data.qa.rules import CDVQA_TYPES
from changeagent.data.registry import get_spec
from changeagent.tasks.qa import EVAL_QUESTIONS, TRAIN_QUESTIONS, derive_questions

TINY = {"encoder": "tu-mobilenetv3_small_050", "neck": {"name": "diff", "dim": 32}, "mask_decoder": {"channels": 16},
        "memory": {"dim": 32}, "caption_decoder": {"layers": 1, "heads": 2},
        "qa": {"dim": 32, "text_layers": 1, "fusion_layers": 1, "heads": 2}}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("qa_roots")
    out = {n: base / n for n in ("levir_mci", "second_cc")}
    for i, (name, root) in enumerate(out.items()):
        get_spec(name).synth(root, 6, 3, 3, size=32, seed=i, progress=False)
    return out


def _cfg(tmp_path, roots, tasks, weighting="dwa"):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {**TINY, "tasks": tasks},
        "run": {"out_dir": str(tmp_path / "run"), "device": "cpu", "threads": 1},
        "data": {"datasets": list(roots), "batch_size": 4, "eval_batch_size": 3, "min_count": 0,
                 **{n: {"root": str(r)} for n, r in roots.items()}},
        "optim": {"lr": 1e-3}, "loss": {"weighting": {"name": weighting}},
        "train": {"steps": 3, "log_every": 1, "save_every": 100},
        "eval": {"meteor": False, "select": "miou+bleu4"}}))
    return cfg


def _in_range(scores):
    assert scores["n"] > 0 and 0.0 <= scores["aa"] <= 1.0 and 0.0 <= scores["oa"] <= 1.0
    assert all(0.0 <= v <= 1.0 for v in scores["per_type"].values())


def test_derived_questions_are_few_spread_and_seeded():
    spec = get_spec("second_cc")
    sem = np.zeros((2, 32, 32), np.int64)
    sem[0, :10, :10], sem[1, :10, :10] = 3, 1  # low vegetation (3) -> water (1)
    sem[:, 20:, 20:] = 255  # augmented pixels: dropped
    a = derive_questions(sem, spec, np.random.default_rng(1), TRAIN_QUESTIONS)
    b = derive_questions(sem, spec, np.random.default_rng(1), TRAIN_QUESTIONS)
    assert a == b and len(a) == TRAIN_QUESTIONS and len({q["type"] for q in a}) == TRAIN_QUESTIONS
    many = derive_questions(sem, spec, np.random.default_rng(2), EVAL_QUESTIONS)
    assert len({q["type"] for q in many}) == 8  # every CDVQA type of a tile first
    to_what = [q for q in many if q["type"] == "change_to_what" and q["question"]["cls"] == 3]
    assert to_what and all(q["answer"] == "water" for q in to_what)
    levir = derive_questions(np.array([[[0, 2], [2, 0]]]).repeat(16, 1).repeat(16, 2), get_spec("levir_mci"),
                             np.random.default_rng(0), EVAL_QUESTIONS)
    assert {q["type"] for q in levir} >= {"change_count", "change_location", "change_or_not"}


def test_qa_trains_and_evaluates_through_the_cli(tmp_path, roots, capsys):
    cfg = _cfg(tmp_path, roots, ["mask", "caption", "qa"])
    assert main(["train", "-c", str(cfg)]) == 0
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"][-1]
    assert train["loss/qa"] > 0 and "weight/qa" in train and train["loss/qa/question_only"] > 0
    assert math.isclose(train["loss/qa"], train["loss/qa/learned"], rel_tol=1e-5)  # the weighting sees the learned loss
    saved = json.loads((run / "best" / "config.json").read_text())["model"]["qa"]
    assert len(saved["question_words"]) > 50 and saved["answers"][:2] == ["yes", "no"]

    capsys.readouterr()
    ev = tmp_path / "ev"
    assert main(["eval", "-c", str(cfg), "--checkpoint", str(run / "best"), "--split", "test", "--out", str(ev)]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    for name in roots:
        m = metrics[name]
        for scores in (m["qa"], m["qa_measured"], m["qa_baselines"]["majority"], m["qa_baselines"]["question_only"]):
            _in_range(scores)
        assert m["qa"]["n"] == m["qa_measured"]["n"] == m["qa_baselines"]["majority"]["n"] >= 3 * 8
        assert {"miou"} <= set(m)
    assert set(metrics["second_cc"]["qa"]["per_type"]) <= set(CDVQA_TYPES)
    assert "change_count" in metrics["levir_mci"]["qa"]["per_type"]
    out = capsys.readouterr().out
    assert "change question answering" in out and "majority per type" in out and "question only" in out


def test_a_model_without_qa_is_unchanged(tmp_path, roots):
    from changeagent.models.factory import create_model

    cfg = {**TINY, "tasks": ["mask", "caption"]}
    model = create_model(cfg, 20)
    assert "qa" not in model.tasks and not any(k.startswith("qa.") for k in model.state_dict())
    assert model.config["qa"]["question_words"] is None  # nothing recorded for a model without the head


class _Sync:
    is_main = True

    def gather(self, obj):
        return [obj]

    def broadcast(self, obj):
        return obj


def test_the_learned_head_beats_both_baselines_where_the_answer_is_in_the_image():
    """Tokens of a pair say whether buildings appeared; the question alone cannot tell (half yes), so
    only a head that reads the memory can beat the majority and question-only baselines."""
    import torch

    from changeagent.models.qa_head import QAConfig, QATaskHead
    from changeagent.tasks.qa import QAMetric
    from changeagent.tasks.spec import EvalContext

    torch.manual_seed(0)
    cfg = QAConfig(dim=32, text_layers=1, fusion_layers=1, heads=2, dropout=0.0)
    head = QATaskHead(16, cfg)
    texts = ["were buildings built?", "has a building appeared?"]

    def batch(n, gen):
        flag = torch.randint(2, (n,), generator=gen)
        memory = torch.randn(n, 5, 16, generator=gen) * 0.1
        memory[:, :, 0] += flag[:, None].float() * 2 - 1  # the image's evidence
        rows = [{"text": texts[i % 2], "type": "change_or_not", "answer": "yes" if int(f) else "no",
                 "question": None} for i, f in enumerate(flag)]
        return memory, rows

    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    head.train()
    for _ in range(60):
        memory, rows = batch(16, gen)
        out = head.outputs({"memory": memory}, {"qa_questions": [r["text"] for r in rows], "qa_item": torch.arange(16),
                                                "qa_types": [r["type"] for r in rows],
                                                "qa_answers": [r["answer"] for r in rows]})
        from changeagent.tasks.registry import get_task

        loss = get_task("qa").loss(out, {}, {}, None)["qa"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert int(head.answer_counts.sum()) == 60 * 16  # the majority baseline counted every training answer
    head.eval()
    metric = QAMetric(EvalContext(dataset=get_spec("levir_mci"), vocab=None, options=None, device=torch.device("cpu"),
                                  sync=_Sync()))
    memory, rows = batch(64, torch.Generator().manual_seed(2))
    with torch.no_grad():
        pred = head.predictions({"memory": memory}, {"qa_questions": [r["text"] for r in rows],
                                                     "qa_item": torch.arange(64), "qa_types": [r["type"] for r in rows]},
                                {})
    metric.update(pred, {"qa": [[r] for r in rows]})
    scores = metric.compute()
    learned, base = scores["qa"]["oa"], scores["qa_baselines"]
    assert learned >= 0.9 and "qa_measured" not in scores  # no maps in this pass: nothing measured
    assert learned > base["majority"]["oa"] + 0.2 and learned > base["question_only"]["oa"] + 0.2


def test_ask_a_pair_and_bad_questions(tmp_path, roots, capsys):
    cfg = _cfg(tmp_path, {"levir_mci": roots["levir_mci"]}, ["mask", "caption", "qa"])
    assert main(["train", "-c", str(cfg), "train.steps=1"]) == 0
    best = tmp_path / "run" / "best"
    a = sorted((roots["levir_mci"] / "images" / "test" / "A").glob("*.png"))[0]
    b = a.parents[1] / "B" / a.name
    capsys.readouterr()
    out_json = tmp_path / "ans.json"
    assert main(["ask", "--checkpoint", str(best), str(a), str(b), "how many buildings were built?",
                 "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    rec = json.loads(out_json.read_text())
    assert rec["type"] == "change_count" and "question type: change_count" in printed
    from changeagent.data.qa.answers import TYPE_ANSWERS

    assert rec["answer"] in TYPE_ANSWERS["change_count"] and 0 < rec["probability"] <= 1
    assert rec["measured"]["answer"] in TYPE_ANSWERS["change_count"] and "objects" in json.dumps(rec["measured"])
    from changeagent.inference.predictor import Predictor

    api = Predictor.from_pretrained(best).ask(str(a), str(b), "how many buildings were built?")
    assert api["answer"] == rec["answer"] and api["measured"] == rec["measured"]
    for question, needle in (("what is the weather like?", "cannot tell what the question"),
                             ("", "empty question"), ("how many zebras were built?", "zebras")):
        assert main(["ask", "--checkpoint", str(best), str(a), str(b), question]) == 2
        err = capsys.readouterr().err
        assert "error:" in err and needle in err
        if question == "what is the weather like?":
            assert "change_count" in err  # the types it answers are listed
    (tmp_path / "noqa").mkdir()  # a model without the qa head
    cfg2 = _cfg(tmp_path / "noqa", {"levir_mci": roots["levir_mci"]}, ["mask", "caption"])
    assert main(["train", "-c", str(cfg2), "train.steps=1"]) == 0
    capsys.readouterr()
    assert main(["ask", "--checkpoint", str(tmp_path / "noqa" / "run" / "best"), str(a), str(b), "was a road built?"]) == 2
    assert "no qa head" in capsys.readouterr().err
