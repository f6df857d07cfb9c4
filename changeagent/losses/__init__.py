"""Mask and caption losses, per-dataset task losses and multi-task weighting strategies.

Per training step (the engine):
    losses = compute_losses(out, batch, cfg["loss"])            # {"mask", "caption"?, "mask/..."}
    total, weights = weighting(losses, shared_params=shared)    # shared: needed by gradnorm only
    total.backward(); optimizer.step()                          # optimizer holds weighting.parameters()
                                                                # when weighting.trainable
Per epoch: weighting.end_period() on every rank (DWA with period_steps=0; a no-op otherwise).
Checkpoints: weighting.state_dict() / load_state_dict().
"""

from changeagent.losses.caption import caption_loss
from changeagent.losses.factory import create_weighting
from changeagent.losses.gradnorm import GradNorm
from changeagent.losses.mask import binary_change_loss, semantic_loss
from changeagent.losses.multitask import TASKS, compute_losses, parse_loss_config
from changeagent.losses.weighting import (
    DWA,
    Fixed,
    MultiTaskWeighting,
    Normalized,
    Uncertainty,
)

__all__ = [
    "DWA",
    "TASKS",
    "Fixed",
    "GradNorm",
    "MultiTaskWeighting",
    "Normalized",
    "Uncertainty",
    "binary_change_loss",
    "caption_loss",
    "compute_losses",
    "create_weighting",
    "parse_loss_config",
    "semantic_loss",
]
