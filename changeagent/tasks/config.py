"""The `loss` section of the run config: the weighting strategy plus one section per task with options.

Built from the task registry each time it is asked for (a task added to the registry adds its
`loss.<name>` section, as a dataset adds its `data.<id>` section)."""

from __future__ import annotations

import dataclasses
from typing import Any

from changeagent.losses.factory import WeightingSection
from changeagent.tasks.registry import REGISTRY, get_task, task_ids
from changeagent.typed import convert, opt

_LOSS_CFG: dict[tuple[tuple[str, str], ...], type] = {}


def loss_config_class() -> type:
    """`loss`: `weighting` (losses/factory.py) and `loss.<task>` for every task with a `loss_config`."""
    state = tuple(REGISTRY.items())
    if state not in _LOSS_CFG:
        fields = [(name, spec.loss_config, opt(help=f"the {name} loss", factory=spec.loss_config))
                  for name in task_ids() if (spec := get_task(name)).loss_config is not None]
        cls = dataclasses.make_dataclass("LossCfg", fields, bases=(WeightingSection,))
        cls.__doc__ = "`loss`: each task's loss terms and their multi-task weighting."
        _LOSS_CFG[state] = cls
    return _LOSS_CFG[state]


def loss_config(cfg: Any, key: str = "loss") -> Any:
    """The typed `loss` section, checked strictly."""
    cls = loss_config_class()
    return cfg if isinstance(cfg, cls) else convert(cls, cfg or {}, key)
