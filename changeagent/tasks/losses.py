"""`compute_losses`: every task's loss of one step, from the model output and the batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from changeagent.tasks.config import loss_config
from changeagent.tasks.registry import get_task


def compute_losses(out: Mapping[str, Any], batch: Mapping[str, Any], inputs: Mapping[str, Tensor],
                   cfg: Any, tasks: Sequence[str]) -> dict[str, Tensor]:
    """{task: float32 scalar} for each of `tasks` whose head gave outputs, plus "<task>/<part>" parts.

    out: `model(...)`'s dict; batch: the collated batch on the device; inputs: the model inputs of the
    step (`TaskSpec.train_inputs`); cfg: the `loss` section (plain or typed). The task keys are what
    the weighting strategy balances; keys with a "/" are for the logs.
    """
    typed = loss_config(cfg)
    losses: dict[str, Tensor] = {}
    for name in tasks:
        spec = get_task(name)
        losses.update(spec.loss(out, batch, inputs, getattr(typed, name, None)))
    return losses
