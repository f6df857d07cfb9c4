"""`changeagent demo` end to end on a shrunken configuration (the full demo is `make demo`)."""

from __future__ import annotations

import json

import pytest

from changeagent.cli import main

SMALL = ["data.synth.size=32", "data.synth.n_train=16", "data.synth.n_val=4", "data.synth.n_test=4",
         "data.batch_size=4", "data.eval_batch_size=4", "train.steps=3", "eval.every_steps=null",
         "model.encoder=tu-mobilenetv3_small_050", "model.neck.dim=32", "model.memory.dim=32",
         "model.caption_decoder.heads=2", "model.mask_decoder.channels=16", "data.min_count=0", "run.threads=1"]


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *SMALL, "--json", str(tmp_path / "report.json")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"levir_mci", "second_cc", "eval"} and metrics["eval"]["caption_level"] == "word"
    assert metrics["levir_mci"]["n_pairs"] == 4 and "sek" in metrics["second_cc"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["train"]["step"] == 3 and report["minutes"] > 0
    assert (out / "data" / "levir_mci" / "LevirCCcaptions.json").is_file()
    assert (out / "data" / "second_cc" / "SECOND-CC-AUG.json").is_file()
    printed = capsys.readouterr().out
    assert "test split" in printed and "demo finished" in printed
