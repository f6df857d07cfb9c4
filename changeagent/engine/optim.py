"""Per-stage training parts: frozen submodules, optimizer, lr schedule (warm-up + cosine/step), EMA."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel

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


def lr_factor(step: int, total: int, sched_cfg: dict[str, Any], time_progress: float = 0.0) -> float:
    """Multiplier of the stage's lr after `step` optimizer steps (LambdaLR calls it with 0, 1, ...).

    `time_progress` (0..1, `train.budget_schedule`): the share of the time budget left after the
    warm-up that has been used; the cosine then follows whichever is further, steps or time, so a
    slow machine still anneals by the budget's end while the warm-up keeps its length in steps.
    """
    warm = int(sched_cfg["warmup_steps"])
    if warm > 0 and step < warm:
        return (step + 1) / warm
    name = sched_cfg["name"]
    if name == "constant":
        return 1.0
    if name == "step":
        return float(sched_cfg["gamma"]) ** ((step - warm) // max(int(sched_cfg["step_size"]), 1))
    floor = float(sched_cfg["min_lr_ratio"])
    progress = min(max(max(step - warm, 0) / max(total - warm, 1), time_progress), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class StageSchedule(torch.optim.lr_scheduler.LambdaLR):
    """Warm-up + cosine/step/constant over `total` steps; the trainer sets `time_progress`."""

    def __init__(self, opt: torch.optim.Optimizer, total_steps: int, sched_cfg: dict[str, Any]) -> None:
        self.time_progress = 0.0
        super().__init__(opt, lambda s: lr_factor(s, total_steps, sched_cfg, self.time_progress))


def build_scheduler(opt: torch.optim.Optimizer, total_steps: int, sched_cfg: dict[str, Any]) -> StageSchedule:
    return StageSchedule(opt, total_steps, sched_cfg)


@dataclass
class StageParts:
    weighting: Any  # losses.MultiTaskWeighting
    opt: torch.optim.Optimizer
    sched: StageSchedule
    scaler: torch.amp.GradScaler
    net: nn.Module  # what the loop calls: the model, or its DDP wrapper
    ddp: DDP | None
    shared_params: list[nn.Parameter] | None


def build_stage(model: nn.Module, st: dict[str, Any], cfg: dict[str, Any], info: Any, total: int) -> StageParts:
    """Freeze the stage's parts; a fresh loss weighting, optimizer, schedule, scaler and DDP wrapper
    (DDP must be rebuilt whenever the set of trainable parameters changes)."""
    from changeagent.losses import GradNorm, create_weighting

    apply_freeze(model, st["freeze"])
    # a model without the retrieval head has no such task: its weighting (and checkpointed weighting
    # state) stays the two-task one it had before the head existed
    tasks = [t for t in st["tasks"] if t != "retrieval" or getattr(model, "retrieval", None) is not None]
    if not tasks:
        raise ChangeAgentError(f"stage {st['name']!r} trains only 'retrieval', but the model has no retrieval "
                               "head (model.retrieval.enabled: false)")
    weighting = create_weighting(cfg["loss"].get("weighting"), tasks).to(info.device)
    lr = st["lr"] if st["lr"] is not None else cfg["optim"]["lr"]
    opt = build_optimizer(model, weighting, cfg["optim"], lr)
    sched = build_scheduler(opt, total, cfg["sched"])
    # fp16 needs loss scaling only where autocast runs (CUDA, see engine.device.autocast_dtype)
    scaler = torch.amp.GradScaler(info.device.type, enabled=cfg["train"]["amp"] == "fp16"
                                  and info.device.type == "cuda")
    shared_name, shared = shared_layer(model)
    if isinstance(weighting, GradNorm) and not shared.requires_grad:
        raise ChangeAgentError(f"stage {st['name']!r}: loss.weighting gradnorm balances on {shared_name}, "
                               f"which this stage freezes ({st['freeze']})")
    net: nn.Module = model
    ddp = None
    if info.enabled:
        ids = [info.device.index] if info.device.type == "cuda" else None
        ddp = DDP(model, device_ids=ids, find_unused_parameters=cfg["train"]["find_unused_parameters"])
        net = ddp
    # the encoder's last stage: the shared parameters GradNorm balances gradient norms on
    return StageParts(weighting, opt, sched, scaler, net, ddp, [shared])


def shared_layer(model: nn.Module) -> tuple[str, nn.Parameter]:
    """(name, weight) of the layer every task depends on: the encoder's last stage (its last weight
    matrix / conv kernel), whatever the neck layout (one neck, or `separate_necks`)."""
    own = getattr(model, "shared_layer", None)
    if callable(own):
        return own()
    found = [(f"encoder.{n}", p) for n, p in model.get_submodule("encoder").named_parameters() if p.ndim >= 2]
    if not found:
        raise ChangeAgentError("the model's encoder has no weight tensor to balance GradNorm on")
    return found[-1]


def check_shared_layer(model: nn.Module, stages: list[dict[str, Any]], weighting_name: str) -> None:
    """Before training: GradNorm's shared layer must be trainable in every stage (dotted freeze paths
    included; `freeze: [encoder]` is already a config error)."""
    if weighting_name != "gradnorm":
        return
    name, _ = shared_layer(model)
    for st in stages:
        for part in st["freeze"]:
            if name == part or name.startswith(part + "."):
                raise ChangeAgentError(f"train.stages: stage {st['name']!r} freezes {part}, which holds {name}, "
                                       "the shared layer loss.weighting gradnorm balances on")


def ema_decay(n: int, decay: float) -> float:
    """Decay of the EMA update after `n` earlier updates: min(decay, (1 + n) / (10 + n)).

    The warm-up of TF's ExponentialMovingAverage(num_updates=...) and timm's ModelEma: early
    updates follow the model closely (the average spans about the last 10 % of the steps), so the
    average is not dominated by the random initialisation of a short run.
    """
    return min(decay, (1.0 + n) / (10.0 + n))


def ema_warmup_steps(decay: float) -> int:
    """Updates after which the warm-up ramp has reached `decay` (0.99: 890, 0.999: 8,990)."""
    return max(math.ceil((10.0 * decay - 1.0) / (1.0 - decay) - 1e-9), 0)


class EMA(AveragedModel):
    """Exponential moving average of parameters and buffers with the `ema_decay` warm-up.

    `warmed_up` turns true once the decay has ramped up to its configured value; until then the
    average lags the model by a growing but short window, and the engine evaluates the raw model.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)

        @torch.no_grad()
        def update(ema: tuple[torch.Tensor, ...] | list[torch.Tensor],
                   cur: tuple[torch.Tensor, ...] | list[torch.Tensor], n: torch.Tensor | int) -> None:
            if torch.is_floating_point(ema[0]):
                torch._foreach_lerp_(list(ema), list(cur), 1.0 - ema_decay(int(n), self.decay))
            else:  # integer buffers (BatchNorm's num_batches_tracked): a count, not an average
                for e, c in zip(ema, cur, strict=True):
                    e.copy_(c)

        super().__init__(model, multi_avg_fn=update, use_buffers=True)

    @property
    def warmed_up(self) -> bool:
        return int(self.n_averaged) >= ema_warmup_steps(self.decay)


def build_ema(model: nn.Module, decay: float | None) -> EMA | None:
    """EMA of the model (None when `train.ema` is null); decay must be in (0, 1)."""
    if decay is None:
        return None
    if not 0.0 < decay < 1.0:
        raise ChangeAgentError(f"train.ema must be in (0, 1), got {decay}")
    return EMA(model, decay)
