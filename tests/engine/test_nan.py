"""A NaN/inf loss stops training with the step and the batch's pair names; optionally it is skipped."""

from __future__ import annotations

from engine_helpers import read_jsonl, write_config

from changeagent.cli import main


def test_nonfinite_loss_is_an_error_naming_step_and_pairs(tmp_path, synth_roots, capsys):
    # AdamW with lr 1e30 moves every weight by ~1e30 in step 1: step 2's loss is NaN
    cfg = write_config(tmp_path / "c.yaml", synth_roots, optim={"lr": 1e30}, train={"clip_grad": None})
    assert main(["train", "-c", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "non-finite loss at step 2" in err
    assert "train_0" in err  # the pair names of the batch (synthetic LEVIR names: train_000001.png ...)
    assert "Traceback" not in err


def test_skip_nonfinite_batches(tmp_path, synth_roots):
    cfg = write_config(tmp_path / "c.yaml", synth_roots, optim={"lr": 1e30},
                       train={"clip_grad": None, "skip_nonfinite": True, "steps": 3})
    out = tmp_path / "run"
    assert main(["train", "-c", str(cfg), "--json", str(tmp_path / "s.json")]) == 0
    skips = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "skip"]
    assert [r["step"] for r in skips] == [2, 3]
    assert "train_0" in skips[0]["message"]
