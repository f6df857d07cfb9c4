"""`create_weighting`: the loss-weighting strategy named in the config (a plain dict of classes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from changeagent.errors import ChangeAgentError
from changeagent.losses.gradnorm import GradNorm
from changeagent.losses.weighting import DWA, Fixed, MultiTaskWeighting, Normalized, Uncertainty


def create_weighting(cfg: Mapping[str, Any] | None, task_names: Sequence[str]) -> MultiTaskWeighting:
    """Build a strategy from its config dict; `cfg["name"]` (default "normalized") selects it.

    Keys per name (all optional):
      fixed:       weights: {task: float}            (default 1.0 each)
      normalized:  eps: 1e-8                         (floor of the detached divisor)
      uncertainty: init: 0.0 (initial s_i), lr: null (engine's base lr when null)
      dwa:         temperature: 2.0, period_steps: 0 (0 = epochs via end_period())
      gradnorm:    alpha: 1.5, lr: null
    """
    cfg = dict(cfg or {})
    name = cfg.pop("name", "normalized")
    classes: dict[str, type[MultiTaskWeighting]] = {
        "fixed": Fixed, "normalized": Normalized, "uncertainty": Uncertainty, "dwa": DWA, "gradnorm": GradNorm,
    }
    keys = {"fixed": {"weights"}, "normalized": {"eps"}, "uncertainty": {"init", "lr"},
            "dwa": {"temperature", "period_steps"}, "gradnorm": {"alpha", "lr"}}
    if name not in classes:
        raise ChangeAgentError(f"loss weighting: unknown name {name!r}; choose from {sorted(classes)}")
    unknown = sorted(set(cfg) - keys[name])
    if unknown:
        raise ChangeAgentError(f"loss weighting {name}: unknown key(s) {unknown}; known: {sorted(keys[name])}")
    return classes[name](task_names, **cfg)
