"""Bi-temporal fusion necks and their interchangeable temporal blocks.

One registry: neck name -> (config dataclass, temporal block class or None). A new neck type adds a
`NeckCfg` subclass with its block's keys and one entry here; the config schema picks it up.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from changeagent.errors import ChangeAgentError
from changeagent.models.necks.base import BlockFactory, DiffNeckCfg, FusionNeck, NeckCfg
from changeagent.models.necks.diff import DiffFusion
from changeagent.models.necks.mamba import MambaNeckCfg, MambaTemporalBlock
from changeagent.models.necks.transformer import TransformerNeckCfg, TransformerTemporalBlock
from changeagent.typed import convert

NECK_TYPES: dict[str, tuple[type[NeckCfg], BlockFactory | None]] = {
    "diff": (DiffNeckCfg, None),
    "transformer": (TransformerNeckCfg, TransformerTemporalBlock),
    "mamba": (MambaNeckCfg, MambaTemporalBlock),
}
NECKS = tuple(NECK_TYPES)
# keys of a neck config read by FusionNeck; every other key goes to the temporal block
NECK_KEYS = tuple(f.name for f in dataclasses.fields(NeckCfg))


def neck_configs() -> dict[str, type[NeckCfg]]:
    """Neck name -> its config dataclass (the `variants` of `model.neck`)."""
    return {name: cfg for name, (cfg, _) in NECK_TYPES.items()}


def temporal_block(name: str) -> BlockFactory | None:
    """Block class of a neck name (None for `diff`)."""
    if name not in NECK_TYPES:
        raise ChangeAgentError(f"unknown neck {name!r}; choices: {', '.join(NECKS)}")
    return NECK_TYPES[name][1]


def neck_config(cfg: dict[str, Any] | NeckCfg, key: str = "model.neck") -> NeckCfg:
    """The typed config of a neck dict (`{name: transformer, depth: 3, ...}`), checked strictly."""
    raw = dataclasses.asdict(cfg) if isinstance(cfg, NeckCfg) else cfg
    if not isinstance(raw, dict) or "name" not in raw:
        raise ChangeAgentError(f"{key}: must be a mapping with a `name` ({', '.join(NECKS)}), got {cfg!r}")
    if raw["name"] not in NECK_TYPES:
        from changeagent.typed import suggest

        raise ChangeAgentError(f"{key}.name: {raw['name']!r} is not one of {', '.join(NECKS)}"
                               f"{suggest(str(raw['name']), list(NECKS))}")
    return convert(NECK_TYPES[raw["name"]][0], raw, key)


def build_neck(cfg: dict[str, Any] | NeckCfg, in_channels: list[int], levels: list[int] | None = None,
               key: str = "model.neck") -> FusionNeck:
    """FusionNeck from a neck config such as `{name: transformer, depth: 3, heads: 8, dim: 256}`."""
    typed = neck_config(cfg, key)
    block = temporal_block(typed.name)
    block_cfg = {k: v for k, v in dataclasses.asdict(typed).items() if k not in NECK_KEYS}
    return FusionNeck(in_channels, block, block_cfg, block_levels=typed.block_levels, dim=typed.dim,
                      fuse_kernel=typed.fuse_kernel, levels=levels)


__all__ = ["NECKS", "NECK_TYPES", "DiffFusion", "FusionNeck", "NeckCfg", "TransformerTemporalBlock", "build_neck",
           "neck_config", "neck_configs", "temporal_block"]
