"""Run-config validation, the shipped configs, launcher environments, selection score, lr schedule."""

from __future__ import annotations

import math
import re

import pytest

from changeagent.config import config_dir, load_model_config
from changeagent.engine.batches import choose_captions
from changeagent.engine.distributed import launcher_env
from changeagent.engine.optim import lr_factor
from changeagent.engine.schema import load_run_config, stages_of
from changeagent.engine.selection import selection_score
from changeagent.errors import ChangeAgentError


@pytest.mark.parametrize("name", ["demo", "levir_mci", "second_cc", "joint"])
def test_shipped_configs_validate(name):
    cfg = load_run_config(config_dir() / f"{name}.yaml", ["model=fast"])
    assert cfg.model.encoder == load_model_config("fast")["encoder"]
    assert stages_of(cfg)


def test_reference_recipe_stages():
    stages = stages_of(load_run_config(config_dir() / "levir_mci.yaml"))
    assert [s["name"] for s in stages] == ["joint", "caption", "mask"]
    assert stages[1]["tasks"] == ["caption"] and set(stages[1]["freeze"]) == {"encoder", "neck.mask", "mask_decoder"}


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "train.lrr"),
    ("train.amp=fp8", "train.amp"),
    ("data.datasets=[levir]", "data.datasets[0]: 'levir' is not one of levir_mci, second_cc, levir_cd"),
    ("train.stages=[{name: x, steps: 1, freeze: [backbone]}]", "cannot freeze 'backbone'"),
    ("train.stages=[{name: x, steps: 1, tasks: [boxes]}]", "tasks"),
    ("train.stages=[{name: x}]", "needs `steps` or `epochs`"),
    ("data.batch_size=0", "data.batch_size"),
])
def test_bad_config_is_a_clear_error(override, message):
    with pytest.raises(ChangeAgentError, match=re.escape(message)):
        load_run_config(None, [override])


def test_launcher_env(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_PROCID",
              "SLURM_LOCALID"):
        monkeypatch.delenv(k, raising=False)
    assert launcher_env() == (0, 1, 0)
    monkeypatch.setenv("SLURM_NTASKS", "8")  # an sbatch script without srun: one process
    assert launcher_env() == (0, 1, 0)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert launcher_env() == (5, 8, 1)
    monkeypatch.setenv("WORLD_SIZE", "4")  # torchrun wins
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert launcher_env() == (3, 4, 3)


def test_selection_score_averages_datasets():
    results = {"levir_mci": {"miou": 0.8, "s_m": 0.6}, "second_cc": {"miou": 0.4, "s_m": float("nan")}}
    assert selection_score(results, "miou+s_m") == pytest.approx((1.4 + 0.4) / 2)
    with pytest.raises(ChangeAgentError, match="meteor"):
        selection_score({"levir_mci": {"meteor": None}}, "meteor")
    with pytest.raises(ChangeAgentError, match="none of .* reports"):
        selection_score(results, "sek")
    # partial supervision: each dataset adds the keys it reports (LEVIR-CD no captions, LEVIR-CC no masks)
    partial = {"levir_cd": {"miou": 0.5, "f1": 0.6}, "levir_cc": {"s_m": 0.4}}
    assert selection_score(partial, "miou+s_m") == pytest.approx((0.5 + 0.4) / 2)


def test_lr_schedules():
    cos = {"name": "cosine", "warmup_steps": 10, "min_lr_ratio": 0.1, "step_size": 1, "gamma": 1}
    assert lr_factor(0, 100, cos) == pytest.approx(0.1)
    assert lr_factor(9, 100, cos) == pytest.approx(1.0)
    assert lr_factor(55, 100, cos) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, 100, cos) == pytest.approx(0.1)
    step = {"name": "step", "warmup_steps": 0, "min_lr_ratio": 0, "step_size": 10, "gamma": 0.5}
    assert [lr_factor(s, 100, step) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]


def test_caption_choice_is_seeded_and_varies():
    import torch

    ids = torch.arange(4 * 5 * 3).reshape(4, 5, 3)
    a = choose_captions(ids, seed=0, step=1, micro=0, rank=0)
    assert torch.equal(a, choose_captions(ids, seed=0, step=1, micro=0, rank=0))
    picks = {tuple(choose_captions(ids, 0, s, 0, 0)[:, 0].tolist()) for s in range(20)}
    assert len(picks) > 5  # a different caption per step
