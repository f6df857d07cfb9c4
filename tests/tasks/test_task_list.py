"""The model is built from its task list: a model without a task trains, evaluates, predicts and is
counted like the others, and an old config (no `model.tasks`, `retrieval.enabled`) means what it did."""

from __future__ import annotations

import json

import yaml

from changeagent.cli import main
from changeagent.data.registry import get_spec

TINY = {"encoder": "tu-mobilenetv3_small_050", "neck": {"name": "diff", "dim": 32}, "mask_decoder": {"channels": 16},
        "memory": {"dim": 32}, "caption_decoder": {"layers": 1, "heads": 2}}


def _config(tmp_path, root, model):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": model, "run": {"out_dir": str(tmp_path / "run"), "device": "cpu", "threads": 1},
        "data": {"datasets": ["levir_mci"], "batch_size": 4, "eval_batch_size": 3, "min_count": 0,
                 "levir_mci": {"root": str(root)}},
        "train": {"steps": 2, "log_every": 1}, "eval": {"meteor": False, "select": "miou"}}))
    return cfg


def test_a_mask_only_model_works_everywhere(tmp_path, capsys):
    root = tmp_path / "levir_mci"
    get_spec("levir_mci").synth(root, 8, 3, 3, size=32, seed=0, progress=False)
    cfg = _config(tmp_path, root, {**TINY, "tasks": ["mask"]})
    assert main(["train", "-c", str(cfg)]) == 0
    logs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logs if r["kind"] == "train"][-1]
    assert "loss/mask" in train and not [k for k in train if k.startswith(("loss/caption", "weight/caption"))]
    saved = json.loads((tmp_path / "run" / "best" / "config.json").read_text())["model"]
    assert saved["tasks"] == ["mask"]
    ev = tmp_path / "ev"
    assert main(["eval", "-c", str(cfg), "--checkpoint", str(tmp_path / "run" / "best"), "--split", "test",
                 "--out", str(ev)]) == 0
    m = json.loads((ev / "metrics.json").read_text())["levir_mci"]
    assert "miou" in m and "bleu4" not in m and "retrieval_baseline" not in m and m["n_pairs"] == 3
    a = next((root / "images" / "test" / "A").glob("*.png"))
    out = tmp_path / "pred"
    assert main(["predict", "-k", str(tmp_path / "run" / "best"), str(a), str(a.parent.parent / "B" / a.name),
                 "-o", str(out)]) == 0
    record = json.loads((out / f"{a.stem}.json").read_text())
    assert "caption" not in record and (out / f"{a.stem}_mask.png").is_file() and record["changed_fraction"]
    capsys.readouterr()
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({**TINY, "tasks": ["mask"]}))
    assert main(["model-info", f"model={tmp_path / 'm.yaml'}"]) == 0
    printed = capsys.readouterr().out
    assert "tasks mask" in printed and "mask_decoder" in printed and "caption_decoder" not in printed


def test_an_old_config_keeps_its_tasks(tmp_path, capsys):
    old = {**TINY, "caption_decoder": {"dim": 32, "layers": 1, "heads": 2, "levels": 1}, "retrieval": {"enabled": True}}
    old.pop("memory")
    cfg = _config(tmp_path, tmp_path, old)
    assert main(["config", "show", "-c", str(cfg)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)["model"]
    assert shown["tasks"] == ["mask", "caption", "retrieval"] and shown["retrieval"]["enabled"] is True
    assert shown["memory"]["dim"] == 32 and "dim" not in shown["caption_decoder"]
    # the stage trains every task the model has unless it says otherwise
    assert main(["config", "show", "-c", str(cfg), "model.retrieval.enabled=false"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["tasks"] == ["mask", "caption"]
    assert main(["config", "show", "-c", str(cfg), "model.tasks=[mask]"]) == 2
    assert "model.retrieval.enabled: is true but model.tasks ['mask'] lacks retrieval" in capsys.readouterr().err
    assert main(["config", "show", "-c", str(_config(tmp_path, tmp_path, {**TINY, "tasks": ["mask"]})),
                 "train.stages=[{name: s, steps: 1, tasks: [caption]}]"]) == 2
    assert "train.stages[0].tasks[0]: stage 's' trains 'caption', but the model has no caption head" \
        in capsys.readouterr().err
