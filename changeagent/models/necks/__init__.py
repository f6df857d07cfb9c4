"""Bi-temporal fusion necks and their interchangeable temporal blocks."""

from __future__ import annotations

from typing import Any

from changeagent.errors import ChangeAgentError
from changeagent.models.necks.base import BlockFactory, FusionNeck
from changeagent.models.necks.diff import DiffFusion
from changeagent.models.necks.transformer import TransformerTemporalBlock

NECKS = ("diff", "transformer", "mamba")
# keys of a neck config read by FusionNeck; every other key goes to the temporal block
NECK_KEYS = ("name", "dim", "block_levels", "fuse_kernel")


def temporal_block(name: str) -> BlockFactory | None:
    """Block class of a neck name (None for `diff`); mamba is imported only when asked for."""
    if name == "diff":
        return None
    if name == "transformer":
        return TransformerTemporalBlock
    if name == "mamba":
        from changeagent.models.necks.mamba import MambaTemporalBlock

        return MambaTemporalBlock
    raise ChangeAgentError(f"unknown neck {name!r}; choices: {', '.join(NECKS)}")


def build_neck(cfg: dict[str, Any], in_channels: list[int], levels: list[int] | None = None) -> FusionNeck:
    """FusionNeck from a config dict such as `{name: transformer, depth: 3, heads: 8, dim: 256}`."""
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise ChangeAgentError(f"neck config must be a mapping with a `name`, got {cfg!r}")
    block = temporal_block(str(cfg["name"]))
    block_cfg = {k: v for k, v in cfg.items() if k not in NECK_KEYS}
    if block is None:
        block_cfg = {}  # options of another neck left over from a `model.neck.name=diff` override
    return FusionNeck(
        in_channels, block, block_cfg,
        block_levels=cfg.get("block_levels", 1), dim=cfg.get("dim"),
        fuse_kernel=cfg.get("fuse_kernel", 1), levels=levels,
    )


__all__ = ["NECKS", "DiffFusion", "FusionNeck", "TransformerTemporalBlock", "build_neck", "temporal_block"]
