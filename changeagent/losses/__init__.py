"""Loss functions (mask, caption, contrastive) and multi-task weighting strategies.

The task layer (`changeagent.tasks`) names which loss each task uses and sums them per step:
    losses = compute_losses(out, batch, inputs, cfg["loss"], tasks)   # changeagent.tasks
    total, weights = weighting(losses, shared_params=shared)           # shared: needed by gradnorm only
    total.backward(); optimizer.step()                                 # optimizer holds weighting.parameters()
                                                                       # when weighting.trainable
Per epoch: weighting.end_period() on every rank (DWA with period_steps=0; a no-op otherwise).
Checkpoints: weighting.state_dict() / load_state_dict().
"""

from changeagent.losses.caption import CaptionLossCfg, caption_loss
from changeagent.losses.contrastive import contrastive_loss
from changeagent.losses.factory import create_weighting, weighting_config
from changeagent.losses.gradnorm import GradNorm
from changeagent.losses.mask import MaskLossCfg, binary_change_loss, mask_task_loss, semantic_loss
from changeagent.losses.weighting import (
    DWA,
    Fixed,
    MultiTaskWeighting,
    Normalized,
    Uncertainty,
)

__all__ = [
    "DWA",
    "CaptionLossCfg",
    "Fixed",
    "GradNorm",
    "MaskLossCfg",
    "MultiTaskWeighting",
    "Normalized",
    "Uncertainty",
    "binary_change_loss",
    "caption_loss",
    "contrastive_loss",
    "create_weighting",
    "mask_task_loss",
    "semantic_loss",
    "weighting_config",
]
