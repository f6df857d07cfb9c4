"""GradNorm balances on the encoder's last stage, which every head depends on (with one neck or
separate necks), and its preconditions are config errors before training starts."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from changeagent.engine.optim import build_stage, check_shared_layer, shared_layer
from changeagent.engine.schema import load_run_config
from changeagent.errors import ChangeAgentError
from changeagent.losses import GradNorm, create_weighting
from changeagent.models import create_model

TINY = {"encoder": "resnet18", "neck": {"name": "transformer", "dim": 32, "depth": 1, "heads": 2},
        "mask_decoder": {"channels": 16}, "caption_decoder": {"dim": 32, "layers": 1, "heads": 2}}
CPU = SimpleNamespace(device=torch.device("cpu"), enabled=False)
STAGE_CFG = {"loss": {"weighting": {"name": "gradnorm"}}, "optim": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0,
             "betas": [0.9, 0.999]}, "sched": {"name": "constant", "warmup_steps": 0},
             "train": {"amp": "none", "find_unused_parameters": True, "compile": False}}


def _task_losses(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    image = torch.randn(2, 2, 3, 64, 64)
    caps = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]])
    out = model(image, captions=caps, dataset=["levir_mci", "levir_mci"])
    return {"mask": out["masks"]["levir_mci"].square().mean() + out["change"].mean(),
            "caption": out["caption"].logsumexp(-1).mean()}


@pytest.mark.parametrize("separate", [False, True])
def test_both_tasks_have_a_gradient_on_the_shared_layer(separate):
    cfg = {**TINY, "separate_necks": separate}
    model = create_model(cfg, vocab_size=12)
    name, param = shared_layer(model)
    assert name.startswith("encoder.") and param.ndim >= 2
    losses = _task_losses(model)
    for task, loss in losses.items():
        (grad,) = torch.autograd.grad(loss, [param], retain_graph=True)
        assert float(grad.norm()) > 0, f"{task} has no gradient on {name} (separate_necks={separate})"


def test_a_stage_with_a_frozen_neck_runs_gradnorm():
    model = create_model(TINY, vocab_size=12)
    st = {"name": "heads", "tasks": ["mask", "caption"], "freeze": ["neck"], "lr": None}
    parts = build_stage(model, st, STAGE_CFG, CPU, total=3)
    total, weights = parts.weighting(_task_losses(model), shared_params=parts.shared_params)
    total.backward()
    assert parts.weighting.task_weights.grad is not None and set(weights) == {"mask", "caption"}


@pytest.mark.parametrize("overrides, message", [
    (["loss.weighting.name=gradnorm", "train.stages=[{name: cap, steps: 2, tasks: [caption]}]"],
     "train.stages[0].tasks: gradnorm balances two or more tasks, but stage 'cap' trains only ['caption']"),
    (["loss.weighting.name=gradnorm", "train.stages=[{name: a, steps: 2, freeze: [encoder]}]"],
     "train.stages[0].freeze[0]: stage 'a' freezes the encoder"),
])
def test_gradnorm_preconditions_are_config_errors(overrides, message):
    with pytest.raises(ChangeAgentError, match=re.escape(message)):
        load_run_config(None, overrides)


def test_dotted_freeze_of_the_shared_layer_is_found_before_training():
    model = create_model(TINY, vocab_size=12)
    with pytest.raises(ChangeAgentError, match="body.layer4"):
        check_shared_layer(model, [{"name": "a", "freeze": ["encoder.body.layer4"]}], "gradnorm")
    check_shared_layer(model, [{"name": "a", "freeze": ["encoder.body.layer1", "neck"]}], "gradnorm")


def test_fp16_norms_are_taken_of_unscaled_gradients():
    """Tiny fp16 gradients underflow to 0 unless the loss is scaled first (as the GradScaler does)."""
    p = torch.nn.Parameter(torch.ones(4, 4, dtype=torch.float16))
    x = torch.full((4, 4), 1e-4, dtype=torch.float16)

    def losses():  # fp32 losses of fp16 activations, as under autocast
        act = (p * x).float().sum()
        return {"mask": act * 1e-6, "caption": act * 2e-6}

    def weight_grad(scale: float) -> torch.Tensor:
        gn = create_weighting({"name": "gradnorm"}, ["mask", "caption"])
        assert isinstance(gn, GradNorm)
        gn.grad_scale = scale
        total, _ = gn(losses(), shared_params=[p])
        total.float().backward()
        return gn.task_weights.grad.clone()

    unscaled_norms_zero = weight_grad(1.0)
    scaled = weight_grad(65536.0)
    assert float(unscaled_norms_zero.abs().sum()) == 0.0  # underflow: fp16 grads of 1e-10 are 0
    assert float(scaled.abs().sum()) > 0
    assert scaled[0] < 0 < scaled[1]  # the task with the larger gradient norm is weighted down
    overflow = weight_grad(1e30)  # scaled gradients overflow: no weight update, like a skipped step
    assert float(overflow.abs().sum()) == 0.0
