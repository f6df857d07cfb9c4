"""Per-stage training parts: frozen submodules, optimizer, lr schedule (warm-up + cosine/step), EMA."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from changeagent.errors import ChangeAgentError


def apply_freeze(model: nn.Module, freeze: list[str]) -> None:
    """requires_grad=False for the named submodules (`encoder`, `neck`, ...), True for everything else.

    Frozen parts also run in eval mode (see `set_train_mode`) so their BatchNorm statistics stay put.
    """
    for p in model.parameters():
        p.requires_grad_(True)
    for part in freeze:
        try:
            sub = model.get_submodule(part)  # dotted paths work too, e.g. neck.mask
        except AttributeError:
            raise ChangeAgentError(f"cannot freeze {part!r}: the model has no such submodule") from None
        for p in sub.parameters():
            p.requires_grad_(False)


def set_train_mode(model: nn.Module, freeze: list[str]) -> None:
    model.train()
    for part in freeze:
        model.get_submodule(part).eval()


def build_optimizer(model: nn.Module, weighting: nn.Module, optim_cfg: dict[str, Any], lr: float) -> torch.optim.Optimizer:
    """AdamW/Adam over the trainable parameters; no weight decay on biases and norm weights (1-D
    tensors), nor on the loss-weighting parameters (which may have their own lr)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    wd = float(optim_cfg["weight_decay"])
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": wd},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    wparams = [p for p in weighting.parameters() if p.requires_grad]
    if wparams:
        groups.append({"params": wparams, "weight_decay": 0.0, "lr": getattr(weighting, "lr", None) or lr})
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ChangeAgentError("this stage trains nothing: every model part is frozen")
    for g in groups:
        g.setdefault("lr", lr)
    b1, b2 = (float(b) for b in optim_cfg["betas"])
    betas = (b1, b2)
    if optim_cfg["name"] == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=wd)
    return torch.optim.Adam(groups, lr=lr, betas=betas)


def lr_factor(step: int, total: int, sched_cfg: dict[str, Any]) -> float:
    """Multiplier of the stage's lr after `step` optimizer steps (LambdaLR calls it with 0, 1, ...)."""
    warm = int(sched_cfg["warmup_steps"])
    if warm > 0 and step < warm:
        return (step + 1) / warm
    name = sched_cfg["name"]
    if name == "constant":
        return 1.0
    if name == "step":
        return float(sched_cfg["gamma"]) ** ((step - warm) // max(int(sched_cfg["step_size"]), 1))
    floor = float(sched_cfg["min_lr_ratio"])
    progress = min(max(step - warm, 0) / max(total - warm, 1), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(opt: torch.optim.Optimizer, total_steps: int, sched_cfg: dict[str, Any]) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps, sched_cfg))


@dataclass
class StageParts:
    weighting: Any  # losses.MultiTaskWeighting
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    net: nn.Module  # what the loop calls: the model, or its DDP wrapper
    ddp: DDP | None
    shared_params: list[nn.Parameter] | None


def build_stage(model: nn.Module, st: dict[str, Any], cfg: dict[str, Any], info: Any, total: int) -> StageParts:
    """Freeze the stage's parts; a fresh loss weighting, optimizer, schedule, scaler and DDP wrapper
    (DDP must be rebuilt whenever the set of trainable parameters changes)."""
    from changeagent.losses import create_weighting

    apply_freeze(model, st["freeze"])
    weighting = create_weighting(cfg["loss"].get("weighting"), st["tasks"]).to(info.device)
    lr = st["lr"] if st["lr"] is not None else cfg["optim"]["lr"]
    opt = build_optimizer(model, weighting, cfg["optim"], lr)
    sched = build_scheduler(opt, total, cfg["sched"])
    scaler = torch.amp.GradScaler(info.device.type, enabled=cfg["train"]["amp"] == "fp16")
    trainable = [p for p in model.get_submodule("neck").parameters() if p.requires_grad]
    net: nn.Module = model
    ddp = None
    if info.enabled:
        ids = [info.device.index] if info.device.type == "cuda" else None
        ddp = DDP(model, device_ids=ids, find_unused_parameters=cfg["train"]["find_unused_parameters"])
        net = ddp
    if cfg["train"]["compile"]:
        net.compile()
    # the neck's last layer: the shared parameters GradNorm balances gradient norms on
    return StageParts(weighting, opt, sched, scaler, net, ddp, trainable[-2:] or None)


def build_ema(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """Exponential moving average of parameters and buffers (torch.optim.swa_utils)."""
    if decay is None:
        return None
    if not 0.0 < decay < 1.0:
        raise ChangeAgentError(f"train.ema must be in (0, 1), got {decay}")
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
