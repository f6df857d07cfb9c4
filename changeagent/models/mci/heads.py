"""MCI's two heads: the multi-level change-detection branch and the 1-layer caption decoder.

Detection, at every level k (strides 4..32, level 3 = the detection neck's output):
    dif_k = BN(conv1x1(B - A)) + cos(A, B);  fus_k = conv1x1(ReLU(BN(conv3x3([A, dif_k, B]))))
then top-down: up = U_3(fus_3); up = U_k(fus_k + up) for k = 2, 1, 0, with U_k = conv1x1 -> BN -> ReLU ->
4x4 stride-2 transposed conv; finally a transposed conv to full size and a 1x1 conv to 3 classes.

Captioning: memory = ResBlock(conv1x1([A_cap, B_cap])) flattened to h*w tokens; word embedding + a
position table (sinusoidal at init, stored with the weights as the reference stores it); post-norm
layers (self-attention, cross-attention, ReLU FFN) with an extra residual around the whole layer.
Decoding runs one token per step with a KV cache (`start`, `step`, `reorder`, as decoding.py needs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from changeagent.data.constants import NULL
from changeagent.errors import ChangeAgentError
from changeagent.models.caption_decoder import Cache, check_captions, cross_attention_cache, decode


class MCIMaskHead(nn.Module):
    """Four levels of A/B maps (finest first) -> 3-class logits [B, 3, H, W] at the input size.

    As a task head (models/heads.py) it reads feats["pyramids"] and gives the mask task's outputs:
    "masks" {"levir_mci": logits} and "change" [B, 1, H, W] = logsumexp(road, building) - background,
    the log-odds of "changed" under the 3-class softmax (the reference has no separate binary head).
    """

    inputs: tuple[str, ...] = ()

    def __init__(self, channels: tuple[int, ...] | list[int], num_classes: int = 3) -> None:
        super().__init__()
        ch = list(channels)
        self.head_shapes = {"levir_mci": (1, num_classes)}  # {dataset: (maps, classes)}, as MaskDecoder's
        self.diff = nn.ModuleList(nn.Sequential(nn.Conv2d(c, c, 1), nn.BatchNorm2d(c)) for c in ch)
        self.fuse = nn.ModuleList(
            nn.Sequential(nn.Conv2d(3 * c, 2 * c, 3, padding=1), nn.BatchNorm2d(2 * c), nn.ReLU(),
                          nn.Conv2d(2 * c, 2 * c, 1))
            for c in ch)
        self.up = nn.ModuleList(
            nn.Sequential(nn.Conv2d(2 * c, 2 * c, 1), nn.BatchNorm2d(2 * c), nn.ReLU(),
                          nn.ConvTranspose2d(2 * c, 2 * ch[max(k - 1, 0)], 4, stride=2, padding=1))
            for k, c in enumerate(ch))
        self.seg = nn.Sequential(nn.ConvTranspose2d(2 * ch[0], ch[0], 4, stride=2, padding=1),
                                 nn.Conv2d(ch[0], num_classes, 1))

    def forward(self, feats_a: list[Tensor], feats_b: list[Tensor]) -> Tensor:
        fused = []
        for a, b, diff, fuse in zip(feats_a, feats_b, self.diff, self.fuse):
            d = diff(b - a) + F.cosine_similarity(a, b, dim=1, eps=1e-8)[:, None]
            fused.append(fuse(torch.cat([a, d, b], dim=1)))
        x = self.up[-1](fused[-1])
        for k in range(len(fused) - 2, -1, -1):
            x = self.up[k](fused[k] + x)
        return self.seg(x)

    def outputs(self, feats: Any, inputs: Mapping[str, Tensor]) -> dict[str, Any]:
        logits = feats.memo("mci_mask", lambda: self(*feats["pyramids"]))
        return {"change": change_logit(logits), "masks": {"levir_mci": logits}}

    def predictions(self, feats: Any, inputs: Mapping[str, Tensor], options: Mapping[str, Any]) -> dict[str, Any]:
        return self.outputs(feats, inputs)


def change_logit(logits: Tensor) -> Tensor:
    """3-class logits [B, 3, H, W] -> binary change logit [B, 1, H, W] = log P(changed) - log P(background)."""
    return torch.logsumexp(logits[:, 1:], dim=1, keepdim=True) - logits[:, :1]


def sinusoid_table(length: int, dim: int) -> Tensor:
    """[length, dim]: sin at even channels, cos at odd ones (the classic Transformer encoding)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table


class ResBlock(nn.Module):
    """Bottleneck residual block on [B, C, h, w]: 1x1 (C/2) -> 3x3 -> 1x1 (C), BN after each, ReLU."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        self.body = nn.Sequential(
            nn.Conv2d(dim, half, 1), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, half, 3, padding=1), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, dim, 1), nn.BatchNorm2d(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + x)


class _MHA(nn.Module):
    """Multi-head attention with packed q/k/v input projections (torch.nn.MultiheadAttention layout)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.dim, self.heads, self.dropout = dim, heads, dropout
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, t: Tensor) -> Tensor:
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [N, heads, T, C/heads]

    def query(self, x: Tensor) -> Tensor:
        return self._split(F.linear(x, self.in_proj.weight[: self.dim], self.in_proj.bias[: self.dim]))

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        kv = F.linear(x, self.in_proj.weight[self.dim:], self.in_proj.bias[self.dim:])
        k, v = kv.chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, causal: bool, mask: Tensor | None = None) -> Tensor:
        """mask: bool [N, 1, 1, T], True where a key may be attended to."""
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask, dropout_p=p,
                                           is_causal=causal)
        return self.out_proj(y.transpose(1, 2).flatten(2))


class MCIDecoderLayer(nn.Module):
    """Post-norm decoder layer whose output adds the layer input once more (the reference's)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = _MHA(dim, heads, dropout)
        self.cross_attn = _MHA(dim, heads, dropout)
        self.linear1, self.linear2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.drop1, self.drop2, self.drop3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: Tensor, mem_k: Tensor, mem_v: Tensor, cache: dict[str, Tensor] | None = None,
                key_pad: Tensor | None = None) -> Tensor:
        """x [N, T, C] (T = 1 with `cache`: one decoding step, the cache is extended).

        key_pad: bool [N, T_keys], True for keys to ignore (decoding: positions holding `<NULL>`).
        """
        q = self.self_attn.query(x)
        k, v = self.self_attn.keys_values(x)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        mask = None if key_pad is None else ~key_pad[:, None, None, :]
        a = self.norm1(x + self.drop1(self.self_attn.attend(q, k, v, causal=cache is None, mask=mask)))
        c = self.cross_attn.attend(self.cross_attn.query(a), mem_k, mem_v, causal=False)
        b = self.norm2(a + self.drop2(c))
        f = self.linear2(self.drop(F.relu(self.linear1(b))))
        return self.norm3(b + self.drop3(f)) + x


class MCICaptionDecoder(nn.Module):
    """Caption decoder over the caption neck's A/B maps (`memory`), teacher forcing and KV-cached steps.

    As a task head (models/heads.py) it gives the caption task's outputs from feats["memory"]."""

    inputs = ("captions",)

    def __init__(self, vocab_size: int, in_channels: int, dim: int, layers: int, heads: int, dropout: float,
                 max_len: int) -> None:
        super().__init__()
        if not isinstance(vocab_size, int) or vocab_size < 5:
            raise ChangeAgentError(f"caption decoder: vocab_size must be an integer >= 5, got {vocab_size!r}")
        self.dim, self.vocab_size, self.max_len = dim, vocab_size, max_len
        self.memory_conv = nn.Conv2d(2 * in_channels, dim, 1)
        self.memory_block = ResBlock(dim)
        self.embed = nn.Embedding(vocab_size, dim)
        self.register_buffer("pos", sinusoid_table(max_len, dim))  # saved: the checkpoint's values are used
        self.layers = nn.ModuleList(MCIDecoderLayer(dim, heads, dropout) for _ in range(layers))
        self.head = nn.Linear(dim, vocab_size)
        self.drop = nn.Dropout(dropout)
        # the reference's greedy loop can emit any id (a trained model never emits <NULL>/<START>)
        self.forbidden_tokens: tuple[int, ...] = ()

    def decoder_layers(self) -> list[MCIDecoderLayer]:
        return cast(list[MCIDecoderLayer], list(self.layers))

    def memory(self, a: Tensor, b: Tensor) -> Tensor:
        """Caption-neck maps A, B [B, C, h, w] -> image tokens [B, h*w, dim]."""
        x = self.memory_block(self.memory_conv(torch.cat([a, b], dim=1)))
        return x.flatten(2).transpose(1, 2)

    def _embed(self, tokens: Tensor, start: int) -> Tensor:
        end = start + tokens.shape[1]
        if end > self.max_len:
            raise ChangeAgentError(f"mci: captions are limited to {self.max_len} positions by the position table "
                                   f"(asked for {end}; decode with max_len <= {self.max_len})")
        pos = cast(Tensor, self.pos)[start:end]
        return self.drop(self.embed(tokens) + pos.to(self.embed.weight.dtype))

    def forward(self, memory: Tensor, captions: Tensor) -> Tensor:
        """Teacher forcing: memory [B, M, dim], captions int64 [B, L] -> logits [B, L-1, V]."""
        x = self._embed(captions[:, :-1], 0)
        for layer in self.decoder_layers():
            k, v = layer.cross_attn.keys_values(memory)
            x = layer(x, k, v)
        return self.head(self.drop(x))

    def start(self, memory: Tensor) -> Cache:
        """Decoding state for memory [N, M, dim]: per-layer image keys/values, empty self-attention cache."""
        return cross_attention_cache(self.decoder_layers(), memory)

    def step(self, tokens: Tensor, cache: Cache, position: int) -> Tensor:
        """Last tokens int64 [N] at `position` -> next-token logits [N, V]; extends `cache`.

        Like the reference's greedy loop, positions holding `<NULL>` are masked out as keys.
        """
        x = self._embed(tokens[:, None], position)
        state = cache[0]
        pad = (tokens == NULL)[:, None]
        state["pad"] = torch.cat([state["pad"], pad], dim=1) if "pad" in state else pad
        key_pad = state["pad"] if bool(state["pad"].any()) else None
        for layer, c in zip(self.decoder_layers(), cache):
            self_cache: dict[str, Tensor] = {k: c[k] for k in ("k", "v") if k in c}
            x = layer(x, c["mk"], c["mv"], self_cache, key_pad)
            c.update(self_cache)
        return self.head(self.drop(x[:, 0]))

    @staticmethod
    def reorder(cache: Cache, index: Tensor) -> None:
        """Keep rows `index` of the self-attention cache (beam search)."""
        for c in cache:
            for key in ("k", "v", "pad"):
                if key in c:
                    c[key] = c[key].index_select(0, index)

    def outputs(self, feats: Any, inputs: Mapping[str, Tensor]) -> dict[str, Any]:
        captions = check_captions(inputs["captions"], feats.batch, self.vocab_size)
        return {"caption": self(feats["memory"], captions)}

    def predictions(self, feats: Any, inputs: Mapping[str, Tensor], options: Mapping[str, Any]) -> dict[str, Any]:
        return {"tokens": decode(self, feats["memory"], options)}
