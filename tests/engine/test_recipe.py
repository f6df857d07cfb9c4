"""Recipes that learn on the device they run on: model recipes under the run file, autocast only on
CUDA, loader workers capped by the cores, EMA warm-up, budget-driven cosine, validation time share."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from engine_helpers import TINY_MODEL, read_jsonl

from changeagent.cli import main
from changeagent.config import config_dir
from changeagent.engine import device
from changeagent.engine.optim import EMA, ema_decay, ema_warmup_steps, lr_factor
from changeagent.engine.schema import load_run_config
from changeagent.errors import ChangeAgentError


def test_model_recipe_sits_under_the_run_file():
    joint = config_dir() / "joint.yaml"
    fast = load_run_config(joint, ["model=fast"])
    assert (fast.optim.lr, fast.data.batch_size, fast.train.grad_accum, fast.sched.warmup_steps) == (1.5e-3, 16, 1, 100)
    assert fast.optim.name == "adamw" and fast.train.budget_schedule  # the run file's own keys stay
    mci = load_run_config(joint)  # joint.yaml's model is mci: the reference's lr and accumulation
    assert (mci.optim.lr, mci.train.grad_accum) == (1e-4, 4)
    assert load_run_config(config_dir() / "levir_mci.yaml", ["model=fast"]).optim.lr == 1.5e-3
    # the run file beats the recipe, key=value beats both
    assert load_run_config(config_dir() / "demo.yaml").data.batch_size == 16
    assert load_run_config(joint, ["model=fast", "optim.lr=0.01"]).optim.lr == 0.01
    assert load_run_config(None, []).optim.lr == 1.5e-3  # the default model brings its recipe too


def test_model_recipe_from_a_file_and_bad_recipe(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({**TINY_MODEL, "recipe": {"optim": {"lr": 0.02}, "train": {"grad_accum": 3}}}))
    cfg = load_run_config(config_dir() / "joint.yaml", [f"model={path}"])
    assert cfg.optim.lr == 0.02 and cfg.train.grad_accum == 3 and "recipe" not in cfg.model
    path.write_text(yaml.safe_dump({**TINY_MODEL, "recipe": [1]}))
    with pytest.raises(ChangeAgentError, match="recipe"):
        load_run_config(None, [f"model={path}"])


def test_autocast_only_on_cuda(capsys):
    device.reset_notes()
    assert device.autocast_dtype("none", torch.device("cpu")) is None
    assert device.autocast_dtype("bf16", torch.device("cpu")) is None
    assert device.autocast_dtype("bf16", torch.device("cpu")) is None
    assert capsys.readouterr().out.count("train.amp=bf16 is off on cpu") == 1
    assert device.autocast_dtype("fp16", torch.device("cuda")) is torch.float16


def test_loader_workers_capped_by_cores(monkeypatch, capsys):
    device.reset_notes()
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert device.loader_workers(8) == 1
    assert device.loader_workers(8) == 1
    assert device.loader_workers(0) == 0
    assert capsys.readouterr().out.count("data.num_workers=8 capped to 1") == 1
    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # 4 processes share 16 cores
    assert device.loader_workers(8) == 3


def test_ema_warms_up():
    assert ema_decay(0, 0.999) == pytest.approx(0.1)
    assert ema_decay(90, 0.999) == pytest.approx(0.91)
    assert ema_decay(10**6, 0.999) == 0.999
    n = ema_warmup_steps(0.999)
    assert ema_decay(n, 0.999) == 0.999 > ema_decay(n - 1, 0.999)
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, 0.999)
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update_parameters(model)
    # without warm-up the average would still sit within 0.003 of the first copy
    first = model.weight - 3.0
    assert float((ema.module.weight - first).detach().min()) > 0.5
    assert not ema.warmed_up
    ema.n_averaged.fill_(n)
    assert ema.warmed_up


def test_budget_cosine_keeps_the_warmup_in_steps():
    cos = {"name": "cosine", "warmup_steps": 10, "min_lr_ratio": 0.0}
    assert lr_factor(4, 1000, cos, time_progress=0.9) == pytest.approx(0.5)  # still warming up
    assert lr_factor(20, 1000, cos, time_progress=0.5) == pytest.approx(0.5)  # time is further than steps
    assert lr_factor(20, 1000, cos, time_progress=1.0) == pytest.approx(0.0)
    assert lr_factor(505, 1000, cos, time_progress=0.1) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_gpu_recipe_on_cpu_learns_and_says_so(tmp_path, synth_roots, capsys, monkeypatch):
    """joint.yaml as shipped (bf16, 8 workers, EMA 0.999) on a 1-core CPU: float32, no workers,
    validation and best/ on the raw weights, each adaptation said once."""
    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    model_yaml = tmp_path / "tiny.yaml"
    model_yaml.write_text(yaml.safe_dump({**TINY_MODEL, "recipe": {"data": {"batch_size": 4}}}))
    out = tmp_path / "run"
    rc = main(["train", "-c", str(config_dir() / "joint.yaml"), f"model={model_yaml}", f"run.out_dir={out}",
               *(f"data.{n}.root={r}" for n, r in synth_roots.items()), "run.device=cpu", "run.threads=1",
               "data.eval_batch_size=5", "data.min_count=0", "wandb.mode=disabled", "eval.meteor=false",
               "model.encoder_weights=null", "eval.select=miou+bleu4", "train.stages=[{name: joint, steps: 3}]", "eval.every_epochs=null",
               "eval.every_steps=1", "eval.time_share=null", "train.log_every=1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.count("train.amp=bf16 is off on cpu") == 1
    assert printed.count("data.num_workers=8 capped to 0") == 1
    assert printed.count("until the EMA (train.ema=0.999) has warmed up at step 8990") == 1
    val = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "val"]
    assert len(val) == 3 and {r["weights"] for r in val} == {"model"}
    # a last.pt whose EMA has not warmed up evaluates the raw weights, as validation did
    from changeagent.models import load

    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["ema_ready"] is False
    loaded = load(out / "last.pt").model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in ck["model"].items())


def test_validation_time_share(tmp_path, synth_roots, capsys):
    out = tmp_path / "run"
    model_yaml = tmp_path / "tiny.yaml"
    model_yaml.write_text(yaml.safe_dump(TINY_MODEL))
    rc = main(["train", "-c", str(config_dir() / "joint.yaml"), f"model={model_yaml}", f"run.out_dir={out}",
               *(f"data.{n}.root={r}" for n, r in synth_roots.items()), "run.device=cpu", "run.threads=1",
               "data.batch_size=4", "data.num_workers=0", "data.eval_batch_size=5", "data.min_count=0",
               "wandb.mode=disabled", "eval.meteor=false", "eval.select=miou+bleu4", "train.ema=null", "model.encoder_weights=null",
               "train.stages=[{name: joint, steps: 4}]", "eval.every_epochs=null", "eval.every_steps=1",
               "eval.time_share=0.01"])
    assert rc == 0
    val = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "val"]
    assert val[0] == 1 and val[-1] == 4 and len(val) < 4  # some due validations skipped, the last one kept
    assert capsys.readouterr().out.count("eval.time_share=0.01") == 1
    with pytest.raises(ChangeAgentError, match="time_share"):
        load_run_config(None, ["eval.time_share=1.5"])
