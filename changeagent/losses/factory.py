"""`create_weighting`: the multi-task weighting strategy of `loss.weighting` (one dict registry).

The rest of the `loss` section (one sub-section per task, e.g. `loss.mask`) is assembled from the task
registry (`changeagent.tasks.config.loss_config_class`): the strategies only see task names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from changeagent.losses.gradnorm import GradNorm, GradNormCfg
from changeagent.losses.weighting import (
    DWA,
    DWACfg,
    Fixed,
    FixedCfg,
    MultiTaskWeighting,
    Normalized,
    NormalizedCfg,
    Uncertainty,
    UncertaintyCfg,
    WeightingCfg,
)
from changeagent.typed import convert, opt, to_plain

# strategy name -> (its config dataclass, its class); a strategy's __init__ takes its config's keys
WEIGHTINGS: dict[str, tuple[type[WeightingCfg], type[MultiTaskWeighting]]] = {
    "fixed": (FixedCfg, Fixed),
    "normalized": (NormalizedCfg, Normalized),
    "uncertainty": (UncertaintyCfg, Uncertainty),
    "dwa": (DWACfg, DWA),
    "gradnorm": (GradNormCfg, GradNorm),
}


def weighting_configs() -> dict[str, type[WeightingCfg]]:
    return {name: cfg for name, (cfg, _) in WEIGHTINGS.items()}


@dataclass
class WeightingSection:
    """The part of `loss` the strategies own."""

    weighting: WeightingCfg = opt(help="multi-task weighting strategy", factory=NormalizedCfg,
                                  variants=weighting_configs)


def weighting_config(cfg: Mapping[str, Any] | WeightingCfg | None, key: str = "loss") -> WeightingCfg:
    """The typed `loss.weighting` section (`name` selects the strategy, default "normalized")."""
    if isinstance(cfg, WeightingCfg):
        return cfg
    return convert(WeightingSection, {"weighting": dict(cfg or {})}, key).weighting


def create_weighting(cfg: Mapping[str, Any] | WeightingCfg | None, task_names: Sequence[str]) -> MultiTaskWeighting:
    """Build a strategy from its config (`name` selects it, default "normalized"; keys: `WEIGHTINGS`)."""
    kwargs = to_plain(weighting_config(cfg))
    name = kwargs.pop("name")
    return WEIGHTINGS[name][1](task_names, **kwargs)
