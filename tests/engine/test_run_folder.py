"""A run never silently replaces another (run.out_dir), ends with one line naming its best model, and
its best/ records what it was trained on (`model-info --checkpoint`, the synthetic-only note of predict)."""

import json

from engine_helpers import read_jsonl, write_config

from changeagent.cli import main
from changeagent.models.hub import training_record


def test_non_empty_run_folder_is_refused_unless_resume_or_overwrite(tmp_path, synth_roots, capsys):
    cfg = write_config(tmp_path / "c.yaml", synth_roots, train={"steps": 2})
    run = tmp_path / "run"
    assert main(["train", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    # the last line: where the best model is and the score it was chosen on
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"best model: {run / 'best'} (val miou+bleu4 ") and "at step 2" in last
    best_before = (run / "best" / "model.safetensors").stat().st_mtime_ns
    assert training_record(run / "best")["synthetic_only"] is False  # an unmarked folder counts as real data

    assert main(["train", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"run.out_dir {run} is not empty" in err and "resume=true" in err and "run.overwrite=true" in err
    assert (run / "best" / "model.safetensors").stat().st_mtime_ns == best_before  # untouched
    assert max(r["step"] for r in read_jsonl(run / "metrics.jsonl")) == 2

    assert main(["train", "-c", str(cfg), "run.overwrite=true", "train.steps=1"]) == 0
    assert "deleted the earlier run's" in capsys.readouterr().out
    assert max(r["step"] for r in read_jsonl(run / "metrics.jsonl")) == 1  # a fresh log

    assert main(["train", "-c", str(cfg), "run.overwrite=true", "resume=true"]) == 2
    assert "not both" in capsys.readouterr().err


def test_resume_true_needs_a_last_pt_in_a_non_empty_folder(tmp_path, synth_roots, capsys):
    cfg = write_config(tmp_path / "c.yaml", synth_roots, train={"steps": 1})
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine\n")
    assert main(["train", "-c", str(cfg), "resume=true"]) == 2
    assert "has no last.pt to continue" in capsys.readouterr().err


def test_best_records_what_it_was_trained_on(tmp_path, synth_roots, capsys):
    (synth_roots["levir_mci"] / ".synth.json").write_text("{}")  # as `changeagent data synth` marks it
    try:
        cfg = write_config(tmp_path / "c.yaml", synth_roots, train={"steps": 2})
        assert main(["train", "-c", str(cfg)]) == 0
    finally:
        (synth_roots["levir_mci"] / ".synth.json").unlink()
    best = tmp_path / "run" / "best"
    rec = training_record(best)
    assert rec["datasets"] == {"levir_mci": {"synthetic": True, "root": str(synth_roots["levir_mci"].absolute())}}
    assert rec["synthetic_only"] is True and rec["steps"] == 2
    assert rec["selected_on"]["select"] == "miou+bleu4" and rec["selected_on"]["split"] == "val"
    assert rec["selected_on"]["score"] == json.loads((best / "metrics.json").read_text())["score"]
    assert training_record(tmp_path / "run" / "last.pt")["datasets"] == rec["datasets"]
    capsys.readouterr()

    assert main(["model-info", "--checkpoint", str(tmp_path / "run"), "--json", str(tmp_path / "i.json")]) == 0
    out = capsys.readouterr().out
    assert "trained on: levir_mci (synthetic" in out and "only synthetic data" in out
    assert "steps: 2; chosen on val miou+bleu4 = " in out
    info = json.loads((tmp_path / "i.json").read_text())
    assert info["training"]["synthetic_only"] and info["params"]["total"] > 0

    # predict says it once, on stderr
    a = sorted((synth_roots["levir_mci"] / "images" / "test" / "A").iterdir())[0]
    b = synth_roots["levir_mci"] / "images" / "test" / "B" / a.name
    assert main(["predict", "-k", str(best), str(a), str(b), "-o", str(tmp_path / "p"), "--max-len", "3",
                 "--no-vis", "--device", "cpu"]) == 0
    cap = capsys.readouterr()
    assert cap.err.count("was trained only on synthetic data (levir_mci)") == 1
    assert "synthetic" not in cap.out


def test_progress_bar_total_follows_the_time_budget(tmp_path, synth_roots, capsys):
    from changeagent.engine.trainer import steps_in_budget

    assert steps_in_budget(10, 1000, 0.5, 20.0) == 50  # 10 done + 40 more fit in 20 s
    assert steps_in_budget(10, 30, 0.5, 20.0) == 30  # never past the stage
    assert steps_in_budget(10, 1000, 0.5, -5.0) == 10  # the budget is spent
    cfg = write_config(tmp_path / "c.yaml", synth_roots, train={"steps": 100000, "max_minutes": 0.04, "log_every": 1})
    assert main(["train", "-c", str(cfg), "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stop_reason"] == "time_budget" and summary["step"] < 100000
    bars = [b for b in capsys.readouterr().err.replace("\r", "\n").splitlines() if b.startswith("joint:")]
    n = summary["step"]
    assert f"| {n}/{n} [" in bars[-1]  # ends full at the step the budget stopped, not at n/100000
    assert sum("/100000 [" in b for b in bars) < len(bars) / 2
