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
