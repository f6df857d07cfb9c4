"""Cross-temporal attention block in the spirit of the reference BI3 neck.

Each layer: local depth-wise conv positional enhancement of both maps, then date A attends to B and
B attends to A with keys/values built from the feature difference, then a feed-forward network per
date. Pre-norm residual throughout, so stacking many layers stays trainable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from changeagent.errors import ChangeAgentError
from changeagent.models.necks.base import NeckCfg, check_heads
from changeagent.typed import opt


@dataclass
class TransformerNeckCfg(NeckCfg):
    """`transformer`: cross-temporal difference attention layers (MCI-like)."""

    name: str = opt("transformer", "neck type")
    depth: int = opt(3, "cross-temporal layers", ge=1)
    heads: int = opt(8, "attention heads (must divide the width)", ge=1)
    ffn_ratio: float = opt(4.0, "feed-forward width / block width", gt=0)
    dropout: float = opt(0.0, "dropout in attention and feed-forward", ge=0, lt=1)

    def validate(self, key: str) -> None:
        check_heads(self, key)


class _CrossAttention(nn.Module):
    """One direction: queries from one date, keys/values from its difference to the other date."""

    def __init__(self, dim: int, heads: int, ffn_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        hidden = max(1, int(round(dim * ffn_ratio)))
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, q: Tensor, other: Tensor) -> Tensor:
        """q, other: tokens [B, N, C] -> updated q [B, N, C]."""
        kv = self.norm_kv(other - q)
        q = q + self.drop(self.attn(self.norm_q(q), kv, kv, need_weights=False)[0])
        return q + self.ffn(self.norm_ffn(q))


class CrossTemporalLayer(nn.Module):
    """LPE (shared depth-wise 3x3 conv) + A<-B and B<-A difference attention + FFNs."""

    def __init__(self, dim: int, heads: int, ffn_ratio: float, dropout: float) -> None:
        super().__init__()
        self.lpe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.a_from_b = _CrossAttention(dim, heads, ffn_ratio, dropout)
        self.b_from_a = _CrossAttention(dim, heads, ffn_ratio, dropout)

    def forward(self, xa: Tensor, xb: Tensor) -> tuple[Tensor, Tensor]:
        """xa, xb: [B, C, H, W] -> same shapes."""
        b, c, h, w = xa.shape
        # one conv call for both dates (Siamese weights)
        x = torch.cat([xa, xb], dim=0)
        x = x + self.lpe(x)
        ta, tb = x.flatten(2).transpose(1, 2).chunk(2, dim=0)  # [B, HW, C] each
        ta2 = self.a_from_b(ta, tb)
        tb2 = self.b_from_a(tb, ta)
        return (ta2.transpose(1, 2).reshape(b, c, h, w), tb2.transpose(1, 2).reshape(b, c, h, w))


class TransformerTemporalBlock(nn.Module):
    """`depth` cross-temporal layers; the temporal-block interface of every neck.

    Args: dim C, depth (layers), heads, ffn_ratio (FFN width / C), dropout; other keys (options of
    another neck left in a config after a `model.neck.name=...` override) are ignored.
    forward(xa [B,C,H,W], xb [B,C,H,W]) -> (xa', xb') of the same shapes.
    """

    def __init__(self, dim: int, depth: int = 3, heads: int = 8, ffn_ratio: float = 4.0,
                 dropout: float = 0.0, **unused: object) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 1:
            raise ChangeAgentError(f"transformer neck: depth must be a positive integer, got {depth!r}")
        if not isinstance(heads, int) or heads < 1 or dim % heads:
            raise ChangeAgentError(f"transformer neck: heads={heads!r} must divide the width {dim}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ChangeAgentError(f"transformer neck: dropout must be in [0, 1), got {dropout!r}")
        self.layers = nn.ModuleList(
            CrossTemporalLayer(dim, heads, float(ffn_ratio), float(dropout)) for _ in range(depth)
        )

    def forward(self, xa: Tensor, xb: Tensor) -> tuple[Tensor, Tensor]:
        for layer in self.layers:
            xa, xb = layer(xa, xb)
        return xa, xb
