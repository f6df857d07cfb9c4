"""The per-level fusion neck: a temporal block on the deepest level(s), A/B fusion at every level."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from changeagent.errors import ChangeAgentError
from changeagent.models.necks.diff import DiffFusion
from changeagent.typed import fail, opt


@dataclass
class NeckCfg:
    """Keys every neck has (read by `FusionNeck`); each neck type subclasses it with its block's keys."""

    name: str = opt("diff", "neck type: diff | transformer | mamba (each has its own keys below)")
    dim: int | None = opt(None, "project the block levels to this width first (null: keep the encoder's)",
                          gt=0)
    block_levels: int = opt(1, "how many of the deepest levels get a temporal block", ge=0)
    fuse_kernel: int = opt(1, "kernel of the per-level A/B fusion conv", choices=(1, 3))


@dataclass
class DiffNeckCfg(NeckCfg):
    """`diff`: no temporal block, only the per-level fusion of A, B, |A-B| and cos(A, B)."""

    name: str = opt("diff", "neck type")


def check_heads(cfg: Any, key: str) -> None:
    """`heads` must divide the block width when `dim` fixes it (else checked when the model is built)."""
    if cfg.dim is not None and cfg.dim % cfg.heads:
        fail(f"{key}.heads", f"{cfg.heads} does not divide {key}.dim={cfg.dim}")


# a temporal block: Block(dim, **cfg) with forward(xa [B,C,H,W], xb [B,C,H,W]) -> (xa', xb')
BlockFactory = Callable[..., nn.Module]


class FusionNeck(nn.Module):
    """Bi-temporal fusion of the encoder's feature pyramid.

    Args:
        in_channels: channels of the encoder levels (finest first).
        block: temporal block class (None: no block, the `diff` baseline).
        block_cfg: keyword arguments of the block.
        block_levels: how many of the deepest output levels get a block (own weights per level).
        dim: if set, those deepest levels are first projected to this width (1x1 conv, shared by
            both dates) so attention/SSM cost does not scale with wide encoders such as resnet50.
        fuse_kernel: kernel size of the per-level fusion conv (1 or 3).
        levels: indices of the levels to output (default: all); a caption-only neck needs the deepest.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        block: BlockFactory | None = None,
        block_cfg: dict[str, Any] | None = None,
        block_levels: int = 1,
        dim: int | None = None,
        fuse_kernel: int = 1,
        levels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        n = len(in_channels)
        self.levels = list(range(n) if levels is None else levels)
        if not self.levels or any(not 0 <= lv < n for lv in self.levels):
            raise ChangeAgentError(f"neck: levels {self.levels} must be indices of {n} encoder levels")
        if fuse_kernel not in (1, 3):
            raise ChangeAgentError(f"neck: fuse_kernel must be 1 or 3, got {fuse_kernel!r}")
        if not isinstance(block_levels, int) or block_levels < 0:
            raise ChangeAgentError(f"neck: block_levels must be a non-negative integer, got {block_levels!r}")
        deepest = set(self.levels[len(self.levels) - block_levels:]) if block_levels else set()
        self.proj = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        self.fuse = nn.ModuleDict()
        self.out_channels: list[int] = []
        for lv in self.levels:
            c = in_channels[lv]
            if lv in deepest and dim is not None and dim != c:
                self.proj[str(lv)] = nn.Conv2d(c, dim, 1)
                c = dim
            if lv in deepest and block is not None:
                try:
                    self.blocks[str(lv)] = block(c, **(block_cfg or {}))  # type: ignore[misc]
                except TypeError as e:  # an unknown option in the config
                    raise ChangeAgentError(f"neck: bad temporal block options {block_cfg}: {e}") from None
            self.fuse[str(lv)] = DiffFusion(c, c, fuse_kernel)
            self.out_channels.append(c)

    def forward(self, feats_a: Sequence[Tensor], feats_b: Sequence[Tensor]) -> list[Tensor]:
        """feats_a/b: encoder maps per level [B, C_l, H_l, W_l] -> fused maps of `self.levels`."""
        out = []
        for lv in self.levels:
            xa, xb, key = feats_a[lv], feats_b[lv], str(lv)
            if key in self.proj:
                xa, xb = self.proj[key](xa), self.proj[key](xb)
            if key in self.blocks:
                xa, xb = self.blocks[key](xa, xb)
            out.append(self.fuse[key](xa, xb))
        return out
