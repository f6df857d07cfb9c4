"""`ModelTypeCfg`: the keys every model config has. Each model type of `factory.MODEL_TYPES` subclasses
it with its own keys, so the run config's `model` section is typed whichever model it holds.
Imports no torch: configs are checked before anything is built."""

from __future__ import annotations

from dataclasses import dataclass

from changeagent.typed import opt


@dataclass
class ModelTypeCfg:
    type: str = opt("change_captioner", "model type (registry `MODEL_TYPES`; each type has its own keys)")
    name: str | None = opt(None, "informative only (e.g. the configs/model file it came from)")
