"""Multi-task loss weighting: fixed, normalized (reference), uncertainty, DWA; GradNorm in gradnorm.py.

Every strategy is an `nn.Module` called as

    total, weights = weighting(losses, shared_params=None)

losses: dict of float scalars keyed by task name (the `compute_losses` dict can be passed as is:
keys with a "/" are logging parts and are skipped; a task missing from the dict, e.g. "caption" in a
mask-only stage, simply does not contribute). `weights` maps each present task to the float factor
its loss was multiplied by this step (for logging). `state_dict()` holds everything needed to resume.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from changeagent.errors import ChangeAgentError
from changeagent.typed import opt


@dataclass
class WeightingCfg:
    """`loss.weighting`: the strategy (`name`) and its keys, below per strategy."""

    name: str = opt("normalized", "fixed | normalized | uncertainty | dwa | gradnorm")


@dataclass
class FixedCfg(WeightingCfg):
    name: str = opt("fixed", "constant weights")
    weights: dict[str, float] = opt(help="weight per task, e.g. {mask: 1, caption: 0.5} (default 1 each)",
                                    factory=dict)


@dataclass
class NormalizedCfg(WeightingCfg):
    name: str = opt("normalized", "reference (SPEC §3): each loss over its detached value")
    eps: float = opt(1e-8, "floor of the detached divisor", gt=0)


@dataclass
class UncertaintyCfg(WeightingCfg):
    name: str = opt("uncertainty", "learned homoscedastic uncertainty (Kendall et al.)")
    init: float = opt(0.0, "initial log-variance s_i")
    lr: float | None = opt(None, "lr of the log-variances (null: the stage's lr)", gt=0)


@dataclass
class DWACfg(WeightingCfg):
    name: str = opt("dwa", "Dynamic Weight Average (Liu et al.)")
    temperature: float = opt(2.0, "softmax temperature", gt=0)
    period_steps: int = opt(0, "period of the loss means in steps (0: one epoch)", ge=0)


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum `t` in place over DDP ranks (no-op in a single process) so every rank derives equal weights."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


class MultiTaskWeighting(nn.Module):
    """Base class. Subclasses implement `combine(present)`; `trainable` says whether the engine
    must put `parameters()` into an optimizer (with weight_decay=0; lr=`self.lr` or the base lr)."""

    trainable = False

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__()
        names = list(task_names)
        if not names or len(set(names)) != len(names) or any("/" in n for n in names):
            raise ChangeAgentError(f"loss weighting: task names must be unique, non-empty, without '/': {names}")
        self.task_names = names
        self.lr: float | None = None

    def select(self, losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The task losses present in `losses`, in `task_names` order."""
        unknown = sorted(k for k in losses if "/" not in k and k not in self.task_names)
        if unknown:
            raise ChangeAgentError(f"loss weighting: unknown task(s) {unknown}; configured: {self.task_names}")
        present = {k: losses[k] for k in self.task_names if k in losses}
        if not present:
            raise ChangeAgentError(f"loss weighting: none of the tasks {self.task_names} is in the losses")
        for k, v in present.items():
            if not isinstance(v, Tensor) or v.dim() != 0:
                raise ChangeAgentError(f"loss weighting: loss {k!r} must be a scalar tensor")
        return present

    def forward(self, losses: Mapping[str, Tensor],
                shared_params: Sequence[nn.Parameter] | None = None) -> tuple[Tensor, dict[str, float]]:
        return self.combine(self.select(losses), shared_params)

    def combine(self, present: dict[str, Tensor],
                shared_params: Sequence[nn.Parameter] | None) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def end_period(self) -> None:
        """Called by the engine at the end of every epoch, on every rank; only DWA uses it."""

    def _index(self, name: str) -> int:
        return self.task_names.index(name)


class Fixed(MultiTaskWeighting):
    """total = sum_i w_i L_i with constant w_i (default 1)."""

    def __init__(self, task_names: Sequence[str], weights: Mapping[str, float] | None = None) -> None:
        super().__init__(task_names)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.task_names))
        if unknown:
            raise ChangeAgentError(f"loss weighting fixed: weights for unknown task(s) {unknown}")
        self.weights = {n: float(weights.get(n, 1.0)) for n in self.task_names}

    def combine(self, present, shared_params):
        total = sum(self.weights[k] * v for k, v in present.items())
        return total, {k: self.weights[k] for k in present}


class Normalized(MultiTaskWeighting):
    """Reference weighting (SPEC §3): total = sum_i L_i / stopgrad(L_i).

    Its value is the number of tasks; its gradient is sum_i grad(L_i) / L_i = grad(sum_i log L_i).
    """

    def __init__(self, task_names: Sequence[str], eps: float = 1e-8) -> None:
        super().__init__(task_names)
        self.eps = float(eps)

    def combine(self, present, shared_params):
        scale = {k: 1.0 / v.detach().clamp_min(self.eps) for k, v in present.items()}
        total = sum(v * scale[k] for k, v in present.items())
        return total, {k: float(s) for k, s in scale.items()}


class Uncertainty(MultiTaskWeighting):
    """Kendall et al. 2018 homoscedastic uncertainty: total = sum_i exp(-s_i) L_i + s_i.

    s_i = log sigma_i^2 are learned (`log_vars`, init `init`); d total / d s_i = 1 - exp(-s_i) L_i,
    so s_i tends to log L_i. (The common form without the paper's 1/2 factors.)
    """

    trainable = True

    def __init__(self, task_names: Sequence[str], init: float = 0.0, lr: float | None = None) -> None:
        super().__init__(task_names)
        self.log_vars = nn.Parameter(torch.full((len(self.task_names),), float(init)))
        self.lr = lr

    def combine(self, present, shared_params):
        total = 0.0
        weights = {}
        for k, v in present.items():
            s = self.log_vars[self._index(k)]
            total = total + torch.exp(-s) * v + s
            weights[k] = float(torch.exp(-s.detach()))
        return total, weights


class DWA(MultiTaskWeighting):
    """Dynamic Weight Average (Liu et al. 2019).

    w_i = K exp(r_i / T) / sum_j exp(r_j / T), r_i = Lbar_i(t-1) / Lbar_i(t-2), where Lbar is the
    mean of the task's loss over a period: an epoch (`period_steps=0`, the engine calls
    `end_period()` after each epoch) or a window of `period_steps` forward calls (ends by itself).
    Weights are 1 for the first two periods. Losses are recorded only in training mode; the
    period sums are summed over DDP ranks at each period end so all ranks share the weights.
    A task with no loss in either of the last two periods gets r_i = 1.
    """

    loss_sum: Tensor  # [K] float64, this period's sum of each task's loss
    loss_count: Tensor  # [K] float64, how many losses were summed
    history: Tensor  # [2, K] float64 period means, rows t-2 and t-1 (NaN = not yet)
    periods: Tensor  # long scalar, completed periods
    steps: Tensor  # long scalar, forward calls in the current period
    weights: Tensor  # [K] float64, the weights in use

    def __init__(self, task_names: Sequence[str], temperature: float = 2.0, period_steps: int = 0) -> None:
        super().__init__(task_names)
        if temperature <= 0 or period_steps < 0 or int(period_steps) != period_steps:
            raise ChangeAgentError(
                f"loss weighting dwa: need temperature > 0 and integer period_steps >= 0, "
                f"got {temperature}, {period_steps}"
            )
        self.temperature = float(temperature)
        self.period_steps = int(period_steps)
        k = len(self.task_names)
        self.register_buffer("loss_sum", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("loss_count", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("history", torch.full((2, k), math.nan, dtype=torch.float64))  # rows t-2, t-1
        self.register_buffer("periods", torch.zeros((), dtype=torch.long))  # completed periods
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # forward calls in this period
        self.register_buffer("weights", torch.ones(k, dtype=torch.float64))

    def combine(self, present, shared_params):
        total = sum(float(self.weights[self._index(k)]) * v for k, v in present.items())
        out = {k: float(self.weights[self._index(k)]) for k in present}
        if self.training:
            with torch.no_grad():
                for k, v in present.items():
                    if torch.isfinite(v):  # one NaN step must not poison the whole period
                        i = self._index(k)
                        self.loss_sum[i] += v.detach().to(self.loss_sum)
                        self.loss_count[i] += 1
                self.steps += 1
            if self.period_steps and int(self.steps) >= self.period_steps:
                self.end_period()
        return total, out

    @torch.no_grad()
    def end_period(self) -> None:
        all_reduce_sum(self.loss_sum)
        all_reduce_sum(self.loss_count)
        mean = torch.where(self.loss_count > 0, self.loss_sum / self.loss_count.clamp_min(1),
                           torch.full_like(self.loss_sum, math.nan))
        self.history[0] = self.history[1]
        self.history[1] = mean
        self.periods += 1
        self.loss_sum.zero_()
        self.loss_count.zero_()
        self.steps.zero_()
        if int(self.periods) >= 2:
            ratio = self.history[1] / self.history[0]
            ratio = torch.where(torch.isfinite(ratio), ratio, torch.ones_like(ratio))
            self.weights.copy_(len(self.task_names) * torch.softmax(ratio / self.temperature, dim=0))
