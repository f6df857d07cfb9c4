"""Per-step batch preparation: moving a batch (or a task's model inputs) to the device. What a task's
head reads at a step comes from its spec (`TaskSpec.train_inputs`, changeagent/tasks/)."""

from __future__ import annotations

from typing import Any

import torch


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
