"""No silent fallbacks: synthetic data only when asked for, resume keeps the budget and refuses a
changed model / dataset list / batch size, start-up checks of what would otherwise fail late."""

from __future__ import annotations

import torch
from engine_helpers import read_jsonl, write_config

from changeagent.cli import main
from changeagent.config import config_dir


def test_missing_root_is_an_error_naming_the_key(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "-c", str(config_dir() / "levir_mci.yaml"), "model=fast", f"run.out_dir={out}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: data.levir_mci.root: not set")
    assert "data.levir_mci.synthetic=true" in err and not out.exists()
    # eval reads the checkpoint's statistics into the config first: a missing one is named
    code = main(["eval", "-c", str(config_dir() / "second_cc.yaml"), "--checkpoint", str(tmp_path / "none")])
    assert code == 2 and capsys.readouterr().err.startswith(f"error: checkpoint {tmp_path / 'none'} does not exist")
    code = main(["train", "-c", str(config_dir() / "levir_mci.yaml"), f"data.levir_mci.root={tmp_path / 'nope'}"])
    assert code == 2 and "error: data.levir_mci.root: " in capsys.readouterr().err


def test_resume_refuses_a_changed_config(tmp_path, synth_roots, capsys):
    cfg = write_config(tmp_path / "c.yaml", synth_roots, train={"steps": 2, "stop_at_step": 1})
    assert main(["train", "-c", str(cfg)]) == 0
    capsys.readouterr()
    code = main(["train", "-c", str(cfg), "resume=true", "data.batch_size=2", "model.mask_decoder.channels=8"])
    err = capsys.readouterr().err
    assert code == 2
    assert "data.batch_size: 4 -> 2" in err and "model.mask_decoder.channels: 16 -> 8" in err
    code = main(["train", "-c", str(cfg), "resume=true", "data.datasets=[levir_mci, second_cc]",
                 f"data.second_cc.root={synth_roots['second_cc']}"])
    assert code == 2 and "data.datasets" in capsys.readouterr().err


def test_resume_keeps_the_elapsed_time_budget(tmp_path, synth_roots):
    cfg = write_config(tmp_path / "c.yaml", synth_roots, train={"steps": 6, "stop_at_step": 1})
    run = tmp_path / "run"
    assert main(["train", "-c", str(cfg)]) == 0
    spent = torch.load(run / "last.pt", weights_only=True)["elapsed_s"]
    assert spent > 0
    # a budget the first run already used up: the resumed run stops after one more step
    budget = 0.99 * spent / 60
    assert main(["train", "-c", str(cfg), "resume=true", "train.stop_at_step=null",
                 f"train.max_minutes={budget}", "--json", str(tmp_path / "s.json")]) == 0
    import json

    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stop_reason"] == "time_budget" and summary["step"] == 2
    assert summary["minutes"] >= spent / 60
    assert max(r["step"] for r in read_jsonl(run / "metrics.jsonl")) == 2


def test_missing_java_is_reported_at_start(tmp_path, synth_roots, capsys, monkeypatch):
    import shutil

    from changeagent.engine import selection

    real_which = shutil.which
    monkeypatch.setattr(selection.shutil, "which", lambda name: None if name == "java" else real_which(name))
    cfg = write_config(tmp_path / "c.yaml", synth_roots, train={"steps": 1})
    out = tmp_path / "run"
    code = main(["train", "-c", str(cfg), "eval.meteor=true", "eval.select=miou+s_m", f"run.out_dir={out}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: eval.select: 'miou+s_m' needs s_m") and "'java' was not found" in err
    assert not out.exists()  # before anything was built
    # selection without METEOR: a warning at start, the run goes on
    assert main(["train", "-c", str(cfg), "eval.meteor=true", "eval.select=miou+bleu4", f"run.out_dir={out}"]) == 0
    assert "warning: eval.meteor is true but 'java' was not found" in capsys.readouterr().err
    # and selecting on METEOR while not computing it is a config error
    assert main(["train", "-c", str(cfg), "eval.meteor=false", "eval.select=miou+s_m"]) == 2
    assert "error: eval.select: 'miou+s_m' needs s_m (METEOR), but eval.meteor is false" in capsys.readouterr().err
