"""GradNorm (Chen et al. 2018): learn task weights so that weighted gradient norms train at equal rates.

Per step, with W the shared parameters passed in and w the learned weights (renormalised so that
sum_i w_i = K, the number of tasks):
    G_i    = || grad_W (w_i L_i) ||_2 = w_i || grad_W L_i ||_2
    r_i    = (L_i / L_i(0)) / mean_j (L_j / L_j(0))          relative inverse training rate
    target = mean_j G_j * r_i ** alpha                         held constant
    L_grad = sum_i | G_i - target_i |                          gradient flows to w only
The returned `total` has the value sum_i w_i L_i (w detached, so the network sees the weighted sum)
plus `L_grad - stopgrad(L_grad)`, which is 0 in value but gives w exactly dL_grad/dw. So the engine
only does `total.backward()` and an optimizer step that includes `weighting.parameters()`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from changeagent.errors import ChangeAgentError
from changeagent.losses.weighting import MultiTaskWeighting, WeightingCfg, all_reduce_sum
from changeagent.typed import opt


@dataclass
class GradNormCfg(WeightingCfg):
    name: str = opt("gradnorm", "GradNorm (Chen et al.) on the encoder's last stage; needs >= 2 tasks")
    alpha: float = opt(1.5, "restoring force towards equal training rates", ge=0)
    lr: float | None = opt(None, "lr of the task weights (null: the stage's lr)", gt=0)


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class GradNorm(MultiTaskWeighting):
    """Learned weights `task_weights` [K] (init 1) updated by the GradNorm loss; see module docstring.

    `shared_params`: the parameters whose gradient norms are balanced: a layer every task depends on
    (the engine passes the encoder's last stage, shared by the heads whatever the neck layout); each
    step costs one extra backward per task down to them. Under DDP the per-task gradients w.r.t.
    them and the losses are averaged over ranks, so every rank computes the same weight update. The
    initial losses L_i(0) are recorded the first time a task appears (finite and > 0).
    `grad_scale`: under fp16 the engine sets the GradScaler's current scale here; each task's loss
    is multiplied by it before the extra backward (so small fp16 gradients do not underflow) and the
    gradients are divided by it again: the norms are those of the unscaled gradients. A step whose
    scaled gradients overflow leaves the weights unchanged (as the scaler skips the step).
    """

    grad_scale: float = 1.0

    trainable = True
    initial_losses: Tensor  # [K] float32, L_i(0); NaN until the task is first seen

    def __init__(self, task_names: Sequence[str], alpha: float = 1.5, lr: float | None = None) -> None:
        super().__init__(task_names)
        if alpha < 0:
            raise ChangeAgentError(f"loss weighting gradnorm: alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.lr = lr
        k = len(self.task_names)
        self.task_weights = nn.Parameter(torch.ones(k))
        self.register_buffer("initial_losses", torch.full((k,), math.nan))

    @torch.no_grad()
    def renormalize(self) -> None:
        """Keep w_i > 0 and sum_i w_i = K (done at every call, i.e. right after each optimizer step)."""
        w = self.task_weights
        w.clamp_(min=1e-6)
        w.mul_(len(self.task_names) / w.sum())

    def combine(self, present, shared_params):
        if not shared_params:
            raise ChangeAgentError(
                "loss weighting gradnorm: pass shared_params= (e.g. the last shared layer's parameters)"
            )
        params = [p for p in shared_params if p.requires_grad]
        self.renormalize()
        idx = torch.tensor([self._index(k) for k in present], device=self.task_weights.device)
        w = self.task_weights[idx]
        losses = torch.stack([v.float() for v in present.values()])

        if not params:
            raise ChangeAgentError("loss weighting gradnorm: the shared layer is frozen in this stage")
        scale = float(self.grad_scale)
        norms = []
        for v in present.values():
            grads = torch.autograd.grad(v * scale if scale != 1.0 else v, params, retain_graph=True,
                                        allow_unused=True)
            flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                              for g, p in zip(grads, params)])
            norms.append(all_reduce_sum(flat).div_(_world() * scale).norm())
        norms_t = torch.stack(norms).to(w.device)
        overflow = not bool(torch.isfinite(norms_t).all())
        if overflow:  # fp16 overflow of the scaled gradients: no weight update this step
            norms_t = torch.zeros_like(norms_t)

        with torch.no_grad():
            mean_loss = all_reduce_sum(losses.detach().clone()).div_(_world()).to(w.device)
            init = self.initial_losses[idx]
            fresh = torch.isnan(init) & torch.isfinite(mean_loss) & (mean_loss > 0)
            self.initial_losses[idx] = torch.where(fresh, mean_loss, init)
            rel = mean_loss / self.initial_losses[idx]
            rate = rel / rel.mean()
            rate = torch.where(torch.isfinite(rate), rate, torch.ones_like(rate))
        g = w * norms_t
        target = (g.mean() * rate.pow(self.alpha)).detach()
        gradnorm_loss = (g - target).abs().sum() * (0.0 if overflow else 1.0)

        weighted = (w.detach().to(losses.device) * losses).sum()
        total = weighted + (gradnorm_loss - gradnorm_loss.detach()).to(weighted.device)
        return total, {k: float(w[i].detach()) for i, k in enumerate(present)}
