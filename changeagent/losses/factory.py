"""The `loss` config section and `create_weighting`: the strategy named in it (one dict registry)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from changeagent.losses.gradnorm import GradNorm, GradNormCfg
from changeagent.losses.multitask import CaptionLossCfg, MaskLossCfg
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
class LossCfg:
    """`loss`: the mask and caption losses and their multi-task weighting."""

    mask: MaskLossCfg = opt(help="mask loss terms", factory=MaskLossCfg)
    caption: CaptionLossCfg = opt(help="caption loss", factory=CaptionLossCfg)
    weighting: WeightingCfg = opt(help="multi-task weighting strategy", factory=NormalizedCfg,
                                  variants=weighting_configs)


def loss_config(cfg: Mapping[str, Any] | LossCfg | None, key: str = "loss") -> LossCfg:
    """The typed `loss` section, checked strictly."""
    return cfg if isinstance(cfg, LossCfg) else convert(LossCfg, cfg or {}, key)


def create_weighting(cfg: Mapping[str, Any] | WeightingCfg | None, task_names: Sequence[str]) -> MultiTaskWeighting:
    """Build a strategy from its config (`name` selects it, default "normalized"; keys: `WEIGHTINGS`)."""
    typed = cfg if isinstance(cfg, WeightingCfg) else loss_config({"weighting": dict(cfg or {})}).weighting
    kwargs = to_plain(typed)
    name = kwargs.pop("name")
    return WEIGHTINGS[name][1](task_names, **kwargs)
