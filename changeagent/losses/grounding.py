"""The grounding task's loss: BCE + Dice on the expressions' target masks (`loss.grounding`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from changeagent.losses.mask import binary_change_loss
from changeagent.typed import fail, opt


@dataclass
class GroundingLossCfg:
    """`loss.grounding`: the terms of the referring-mask loss."""

    bce: float = opt(1.0, "weight of BCE-with-logits over the valid pixels", ge=0)
    dice: float = opt(1.0, "weight of the Dice loss (smp, pooled over the batch's expressions)", ge=0)

    def validate(self, key: str) -> None:
        if not self.bce and not self.dice:
            fail(key, "bce and dice are both 0: the head would learn nothing")


def grounding_loss(logits: Tensor, target: Tensor, cfg: GroundingLossCfg) -> tuple[Tensor, dict[str, Tensor]]:
    """logits float [N, 1, H, W], target int64 [N, H, W] (0/1/IGNORE_INDEX) -> (total, {"bce", "dice"})."""
    bce = binary_change_loss(logits, target, ce=1.0, dice=0.0, what="grounding mask")
    dice = binary_change_loss(logits, target, ce=0.0, dice=1.0, what="grounding mask")
    return cfg.bce * bce + cfg.dice * dice, {"bce": bce.detach(), "dice": dice.detach()}
