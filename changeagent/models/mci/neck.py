"""MCI's two bi-temporal iterative interaction necks on the stage-4 maps (BI3 in the paper).

One layer, for date X attending to date Y (maps [B, C, h, w]):
    x = X + enhance_q(X);  y = Y + enhance_kv(Y)         local positional enhancement: depth-wise
                                                          3x3, 1x5, 5x1 convs -> BN -> GELU -> 1x1
    d = ReLU(BN(conv1x1(x * (y - x))))                    difference-aware keys and values
    a = MHA(q = x, k = d, v = d)
    z = LN1(a + x);  out = LN2(FFN(z) + z)                post-norm, ReLU FFN (4x)
The reference builds K = V from the difference whenever its two inputs differ (always, since x and y
come from different enhancement convs); that is the only path implemented here.
Both necks add learned 2-D position tables first. The detection neck updates A then B from the new A,
with an outer residual; the caption neck updates A and B from the same inputs, without one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from changeagent.errors import ChangeAgentError


class LocalEnhance(nn.Module):
    """[B, C, h, w] -> [B, C, h, w]: depth-wise 3x3 / 1x5 / 5x1 convs, BN, GELU, 1x1 back to C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dw3 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.dw15 = nn.Conv2d(dim, dim, (1, 5), padding=(0, 2), groups=dim)
        self.dw51 = nn.Conv2d(dim, dim, (5, 1), padding=(2, 0), groups=dim)
        self.bn = nn.BatchNorm2d(3 * dim)
        self.proj = nn.Conv2d(3 * dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.cat([self.dw3(x), self.dw15(x), self.dw51(x)], dim=1)
        return self.proj(F.gelu(self.bn(y)))


class DiffAttention(nn.Module):
    """Queries from x, keys = values from the fused difference x * (y - x): maps in, tokens out."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.fuse = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.BatchNorm2d(dim), nn.ReLU())
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """x, y: [B, C, h, w] -> [B, h*w, C]."""
        d = self.fuse(x * (y - x)).flatten(2).transpose(1, 2)
        xt = x.flatten(2).transpose(1, 2)

        def split(t: Tensor) -> Tensor:
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [B, heads, N, C/heads]

        p = self.dropout if self.training else 0.0
        o = F.scaled_dot_product_attention(split(self.q(xt)), split(self.k(d)), split(self.v(d)), dropout_p=p)
        return self.drop(self.out(o.transpose(1, 2).flatten(2)))


class InteractionLayer(nn.Module):
    """One direction of a bi-temporal layer: x [B,C,h,w] attends to y [B,C,h,w] -> [B,C,h,w]."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.enhance_q = LocalEnhance(dim)
        self.enhance_kv = LocalEnhance(dim)
        self.attn = DiffAttention(dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(4 * dim, dim), nn.Dropout(dropout))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        b, c, h, w = x.shape
        x = x + self.enhance_q(x)
        y = y + self.enhance_kv(y)
        z = self.norm1(self.attn(x, y) + x.flatten(2).transpose(1, 2))
        z = self.norm2(self.ffn(z) + z)
        return z.transpose(1, 2).reshape(b, c, h, w)


class PositionTable(nn.Module):
    """Learned 2-D positions: channels [0, C/2) from the column table, [C/2, C) from the row table."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.col = nn.Embedding(size, dim // 2)
        self.row = nn.Embedding(size, dim // 2)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, C, h, w] -> x + positions."""
        _, _, h, w = x.shape
        size = self.col.num_embeddings
        if h > size or w > size:
            raise ChangeAgentError(f"mci: a {h}x{w} stage-4 map exceeds the {size}x{size} position table "
                                   f"(inputs up to {32 * size} px; model.pos_size sets the table size)")
        cols = self.col.weight[:w].t()[:, None, :].expand(-1, h, w)  # [C/2, h, w], varies along w
        rows = self.row.weight[:h].t()[:, :, None].expand(-1, h, w)  # [C/2, h, w], varies along h
        return x + torch.cat([cols, rows], dim=0)[None].to(x.dtype)


class _Pair(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.a = InteractionLayer(dim, heads, dropout)  # date A attends to B
        self.b = InteractionLayer(dim, heads, dropout)  # date B attends to A


class InteractionNeck(nn.Module):
    """Position tables + `layers` bi-temporal layers on the stage-4 maps of A and B.

    sequential=True (detection): A = layer_a(A, B) + A, then B = layer_b(B, A_new) + B.
    sequential=False (captioning): A, B = layer_a(A, B), layer_b(B, A) from the same inputs.
    """

    def __init__(self, dim: int, layers: int, heads: int, dropout: float, pos_size: int,
                 sequential: bool) -> None:
        super().__init__()
        self.pos = PositionTable(pos_size, dim)
        self.layers = nn.ModuleList(_Pair(dim, heads, dropout) for _ in range(layers))
        self.sequential = sequential

    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        a, b = self.pos(a), self.pos(b)
        for pair in self.layers:
            assert isinstance(pair, _Pair)
            if self.sequential:
                a = pair.a(a, b) + a
                b = pair.b(b, a) + b
            else:
                a, b = pair.a(a, b), pair.b(b, a)
        return a, b


class MCINecks(nn.Module):
    """The detection neck (`mask`) and the caption neck (`caption`), both on the stage-4 maps."""

    def __init__(self, dim: int, mask_layers: int, caption_layers: int, heads: int, dropout: float,
                 pos_size: int) -> None:
        super().__init__()
        self.mask = InteractionNeck(dim, mask_layers, heads, dropout, pos_size, sequential=True)
        self.caption = InteractionNeck(dim, caption_layers, heads, dropout, pos_size, sequential=False)
