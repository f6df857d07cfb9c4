"""Checkpoints: atomic writes, exact RNG round trip, and clear errors for corrupt or truncated files."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from engine_helpers import write_config

from changeagent.cli import main
from changeagent.engine.checkpoint import load_checkpoint, save_checkpoint
from changeagent.engine.resume import rng_state, set_rng_state
from changeagent.errors import ChangeAgentError


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synth_roots):
    tmp = tmp_path_factory.mktemp("ckpt")
    cfg = write_config(tmp / "c.yaml", synth_roots, train={"steps": 1})
    torch.set_num_threads(1)
    assert main(["train", "-c", str(cfg)]) == 0
    return cfg, tmp / "run" / "last.pt"


def test_last_pt_holds_everything_to_resume(trained):
    _, last = trained
    state = load_checkpoint(last)
    for key in ("model", "optimizer", "scheduler", "scaler", "weighting", "step", "epoch", "stage",
                "batch_in_epoch", "rng", "config", "vocab"):
        assert key in state, key
    assert state["config"]["model"]["encoder"] == "tu-mobilenetv3_small_050"
    assert state["vocab"]["<START>"] == 2
    assert len(state["rng"]) == 1 and set(state["rng"][0]) >= {"python", "numpy", "torch"}


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoint_is_a_clear_error(trained, tmp_path, capsys, damage):
    cfg, last = trained
    data = last.read_bytes()
    bad = tmp_path / "last.pt"
    bad.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 100, "empty": b""}[damage])
    with pytest.raises(ChangeAgentError, match=str(bad)):
        load_checkpoint(bad)
    rc = main(["train", "-c", str(cfg), f"run.out_dir={tmp_path / 'run'}", "--resume", str(bad)])
    assert rc == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "corrupt or truncated" in err and "Traceback" not in err
    assert main(["eval", "-c", str(cfg), "--checkpoint", str(bad)]) == 2


def test_foreign_and_missing_files(tmp_path):
    other = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, other)
    with pytest.raises(ChangeAgentError, match="not a changeagent training checkpoint"):
        load_checkpoint(other)
    with pytest.raises(ChangeAgentError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "last.pt"
    good = {"model": {}, "optimizer": {}, "scheduler": {}, "step": 1, "stage": 0, "config": {}, "vocab": {},
            "rng": []}
    save_checkpoint(good, path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - any pickling error
        save_checkpoint({**good, "step": 2, "model": {"x": lambda: 0}}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


def test_rng_round_trip_through_a_file(tmp_path):
    state = rng_state()
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {}, "optimizer": {}, "scheduler": {}, "step": 0, "stage": 0, "config": {},
                     "vocab": {}, "rng": [state]}, path)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(load_checkpoint(path)["rng"][0])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
