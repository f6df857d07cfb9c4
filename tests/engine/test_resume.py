"""Exact resume: 2N steps in one go == N steps, stop, resume for N more (weights, EMA, learned loss
weights and logged losses), across an epoch boundary, a stage boundary, dropout, augmentation and the
per-step random caption choice."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import read_jsonl, write_config

from changeagent.cli import main
from changeagent.engine.resume import STATE

STAGES = [
    {"name": "joint", "steps": 3},
    {"name": "caption", "steps": 3, "tasks": ["caption"], "freeze": ["encoder"]},
]


def _losses(run) -> dict[int, dict[str, float]]:
    return {r["step"]: {k: v for k, v in r.items() if k.startswith("loss/")}
            for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "train"}


@pytest.mark.parametrize("stop_at", [3, 4])
def test_resume_is_exact(tmp_path, synth_roots, stop_at):
    # 12 train pairs, batch 4: 3 batches per epoch, so 6 steps cross two epoch boundaries
    cfg = write_config(tmp_path / "c.yaml", synth_roots, run={"deterministic": True},
                       train={"stages": STAGES, "ema": 0.9}, loss={"weighting": {"name": "uncertainty"}},
                       sched={"name": "cosine", "warmup_steps": 2})
    full, split = tmp_path / "full", tmp_path / "split"
    assert main(["train", "-c", str(cfg), f"run.out_dir={full}"]) == 0
    assert main(["train", "-c", str(cfg), f"run.out_dir={split}", f"train.stop_at_step={stop_at}"]) == 0
    assert torch.load(split / "last.pt", weights_only=True)["step"] == stop_at
    assert main(["train", "-c", str(cfg), f"run.out_dir={split}", "--resume", str(split / "last.pt")]) == 0

    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(split / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    assert list(a) == list(b) == ["format", *STATE]  # engine.resume owns every key, nothing else writes one
    for part in ("model", "ema"):
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)
    assert a["weighting"].keys() == b["weighting"].keys()
    for name in a["weighting"]:
        assert torch.equal(a["weighting"][name], b["weighting"][name]), name
    la, lb = _losses(full), _losses(split)
    assert sorted(la) == sorted(lb) == list(range(1, 7))  # the resumed log continues, no duplicates
    assert la == lb


def test_resume_true_without_checkpoint_starts_fresh(tmp_path, synth_roots):
    cfg = write_config(tmp_path / "c.yaml", synth_roots, train={"steps": 1})
    assert main(["train", "-c", str(cfg), "resume=true"]) == 0
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 1


def test_fp16_amp_on_cpu_trains_in_float32_without_scaler(tmp_path, synth_roots, capsys):
    """fp16 autocast and its GradScaler run on CUDA only; on the CPU the run says so and resumes."""
    cfg = write_config(tmp_path / "c.yaml", synth_roots, train={"steps": 1, "amp": "fp16"})
    assert main(["train", "-c", str(cfg)]) == 0
    assert capsys.readouterr().out.count("train.amp=fp16 is off on cpu") == 1
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["scaler"] == {}  # disabled scaler
    assert main(["train", "-c", str(cfg), "train.steps=2", "resume=true"]) == 0
