"""The grounding task through the real CLI on tiny data: trains with the other tasks (a fifth weighted
loss), evaluates the learned head, the program route and the baseline (+ RCD on SECOND-CC), saves
and restores the expression vocabulary; a model without the task is unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from changeagent.cli import main
from changeagent.data.registry import get_spec

TINY = {"encoder": "tu-mobilenetv3_small_050", "neck": {"name": "diff", "dim": 32}, "mask_decoder": {"channels": 16},
        "memory": {"dim": 32}, "caption_decoder": {"layers": 1, "heads": 2},
        "grounding": {"channels": 16, "text_dim": 32, "heads": 2}}
ROUTE_KEYS = {"miou", "oiou", "pr50", "pr70", "pr90", "no_target_acc", "per_type", "n"}


def _config(tmp_path, datasets, tasks, steps=3, select="miou+bleu4"):
    roots = {n: tmp_path / n for n in datasets}
    for i, (name, root) in enumerate(roots.items()):
        if not root.exists():
            get_spec(name).synth(root, 8, 3, 3, size=32, seed=i, progress=False)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {**TINY, "tasks": tasks},
        "run": {"out_dir": str(tmp_path / "run"), "device": "cpu", "threads": 1},
        "data": {"datasets": list(roots), "batch_size": 4, "eval_batch_size": 3, "min_count": 0,
                 **{n: {"root": str(r)} for n, r in roots.items()}},
        "optim": {"lr": 1e-3}, "loss": {"weighting": {"name": "uncertainty"}},
        "train": {"steps": steps, "log_every": 1, "save_every": 1000},
        "eval": {"meteor": False, "select": select}}))
    return cfg


def test_grounding_trains_evaluates_and_saves_its_vocabulary(tmp_path, capsys):
    cfg = _config(tmp_path, ["levir_mci", "second_cc"], ["mask", "caption", "grounding"])
    assert main(["train", "-c", str(cfg)]) == 0
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"][-1]
    assert train["loss/grounding"] > 0 and "weight/grounding" in train and "loss/grounding/dice" in train
    saved = json.loads((run / "best" / "expressions.json").read_text())
    assert "buildings" in saved["words"] and saved["words"][:2] == ["<pad>", "<unk>"]

    capsys.readouterr()
    ev = tmp_path / "ev"
    assert main(["eval", "-c", str(cfg), "--checkpoint", str(run / "best"), "--split", "test", "--out", str(ev)]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    for ds in ("levir_mci", "second_cc"):
        for route in ("grounding", "grounding_program", "grounding_baseline"):
            scores = metrics[ds][route]
            assert ROUTE_KEYS <= set(scores) and scores["n"] > 3, (ds, route)
            assert 0.0 <= scores["miou"] <= 1.0 and 0.0 <= scores["no_target_acc"] <= 1.0
        assert metrics[ds]["grounding_program"]["unparsed"] == 0  # derived expressions always parse
        assert metrics[ds]["grounding"]["n"] == metrics[ds]["grounding_baseline"]["n"]
    assert "sek" in metrics["second_cc"]["grounding_rcd"] and "grounding_rcd" not in metrics["levir_mci"]
    out = capsys.readouterr().out
    assert "Change grounding" in out and "program" in out and "baseline" in out
    again = tmp_path / "ev2"  # eval-time expressions are seeded per item: the same numbers again
    assert main(["eval", "-c", str(cfg), "--checkpoint", str(run / "best"), "--split", "test", "--out", str(again)]) == 0
    assert json.loads((again / "metrics.json").read_text())["levir_mci"]["grounding"] == metrics["levir_mci"]["grounding"]


def test_saved_expression_vocabulary_is_restored(tmp_path):
    from changeagent.data.qa.vocab import QuestionVocab
    from changeagent.models import create_model
    from changeagent.models.hub import load, save_pretrained

    model = create_model({**TINY, "tasks": ["mask", "grounding"], "datasets": ["levir_mci"],
                          "encoder_weights": None}, 10)
    head = model.head("grounding")
    words = list(head.vocab.words)
    words[5], words[6] = words[6], words[5]  # another order: the saved one must be used, not the built-in
    head.set_vocab(QuestionVocab(tuple(words)))
    save_pretrained(model, tmp_path / "m")
    loaded = load(tmp_path / "m").model
    assert loaded.head("grounding").vocab.words == tuple(words)
    (tmp_path / "m" / "expressions.json").write_text(json.dumps({"words": words[:-1]}))
    from changeagent.errors import ChangeAgentError

    with pytest.raises(ChangeAgentError, match="expression vocabulary"):
        load(tmp_path / "m")


def test_a_model_without_grounding_has_no_head_and_no_file(tmp_path):
    from changeagent.models import create_model
    from changeagent.models.hub import save_pretrained

    model = create_model({**TINY, "tasks": ["mask"], "datasets": ["levir_mci"], "encoder_weights": None}, 10)
    assert "grounding" not in model.tasks and not any(k.startswith("grounding") for k in model.state_dict())
    save_pretrained(model, tmp_path / "m")
    assert not (tmp_path / "m" / "expressions.json").exists()


def test_derive_pads_expressions_and_the_loss_sees_them_in_order():
    from changeagent.tasks.data import collate_for
    from changeagent.tasks.grounding import SPEC, flatten
    from changeagent.tasks.spec import TaskContext

    spec = get_spec("levir_mci")
    samples = []
    for k in range(2):
        m = np.zeros((16, 16), dtype=np.int64)
        m[:6, :6] = 2
        if k:
            m[10:, 10:] = 1
        s = {"image": torch.zeros(2, 3, 16, 16), "mask": torch.from_numpy(m), "dataset": "levir_mci", "name": f"p{k}"}
        s.update(SPEC.derive(s, np.random.default_rng(k), TaskContext(train=False, dataset=spec)))
        samples.append(s)
    batch = collate_for([SPEC])(samples)
    texts, pairs, keep = flatten(batch)
    assert len(texts) == int(keep.sum()) == len(pairs) and set(pairs.tolist()) == {0, 1}
    target = batch["g_masks"][keep]
    assert target.shape == (len(texts), 16, 16) and set(target.unique().tolist()) <= {0, 1}


@pytest.mark.slow
def test_learned_head_and_program_route_beat_the_baseline_when_overfit(tmp_path):
    """A few pairs, many steps, scored on the training split: the learned head beats 'the whole change
    mask'. (The program route is not asserted here: at 150 steps on 32 px the mask head has not learned
    the change yet, so its cut equals the baseline; see the branch report.)"""
    cfg = _config(tmp_path, ["levir_mci"], ["mask", "grounding"], steps=150, select="miou")
    assert main(["train", "-c", str(cfg), "data.batch_size=8", "optim.lr=3e-3"]) == 0
    ev = tmp_path / "ev"
    assert main(["eval", "-c", str(cfg), "--checkpoint", str(tmp_path / "run" / "best"), "--split", "train",
                 "--out", str(ev)]) == 0
    m = json.loads((ev / "metrics.json").read_text())["levir_mci"]
    base = m["grounding_baseline"]["miou"]
    assert m["grounding"]["miou"] > base, m
    assert m["grounding_program"]["miou"] >= 0.0 and m["grounding_program"]["unparsed"] == 0
