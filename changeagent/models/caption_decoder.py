"""Transformer caption decoder over the token memory (models/memory.py), with a KV cache.

Teacher forcing runs the whole caption at once (causal attention); decoding feeds one token per step
and keeps each layer's keys/values, so a step costs O(t) instead of re-running the prefix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from changeagent.errors import ChangeAgentError
from changeagent.models.decode_cfg import DECODE
from changeagent.models.decoding import beam_search, greedy_decode
from changeagent.models.features import HeadContext, HeadSpec
from changeagent.typed import fail, opt, to_plain


@dataclass
class CaptionDecoderCfg:
    """`model.caption_decoder`: the Transformer caption decoder (its width is `model.memory.dim`)."""

    layers: int = opt(2, "decoder layers", ge=1)
    heads: int = opt(8, "attention heads (must divide model.memory.dim)", ge=1)
    ffn_ratio: float = opt(4.0, "feed-forward width / dim", gt=0)
    dropout: float = opt(0.1, "dropout", ge=0, lt=1)
    tie_embeddings: bool = opt(False, "share the word embedding with the output projection")

    def check(self, model: Any, key: str) -> None:
        """Against the model config: its width is the memory's."""
        if model.memory.dim % self.heads:
            fail(f"{key}.heads", f"{self.heads} does not divide model.memory.dim={model.memory.dim}")


# keys of `caption_decoder` that configs written before `model.memory` existed hold: they move there
MEMORY_KEYS = ("dim", "levels", "dataset_token")

Cache = list[dict[str, Tensor]]


def cross_attention_cache(layers: Sequence[nn.Module], memory: Tensor) -> Cache:
    """The decoding state of a KV-cached decoder (ours and the MCI port): per layer the image keys and
    values of memory [N, M, dim], computed once (`layer.cross_attn.keys_values`); self-attention keys
    and values are appended by each `step`."""
    cache: Cache = []
    for layer in layers:
        k, v = layer.cross_attn.keys_values(memory)  # type: ignore[operator, union-attr]
        cache.append({"mk": k, "mv": v})
    return cache


def sinusoid(pos: Tensor, dim: int) -> Tensor:
    """Fixed sine/cosine encoding: pos float [N] -> [N, dim] (works for any length or map size)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=pos.device, dtype=torch.float32) / half)
    ang = pos.float()[:, None] * freq[None]
    out = torch.cat([ang.sin(), ang.cos()], dim=1)
    return F.pad(out, (0, dim - 2 * half))


def position_2d(h: int, w: int, dim: int, device: torch.device) -> Tensor:
    """[h*w, dim] encoding: first half rows, second half columns."""
    ys = sinusoid(torch.arange(h, device=device), dim // 2)
    xs = sinusoid(torch.arange(w, device=device), dim - dim // 2)
    return torch.cat([ys[:, None].expand(h, w, -1), xs[None].expand(h, w, -1)], dim=-1).reshape(h * w, dim)


class _Attention(nn.Module):
    """Multi-head attention on [N, T, C] with separate q / kv projections (so kv can be cached)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def split(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [N, h, T, C/h]

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.split(k), self.split(v)

    def attend(self, x: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
        q = self.split(self.q(x))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), dropout_p=p, is_causal=causal)
        return self.out(y.transpose(1, 2).flatten(2))


class DecoderLayer(nn.Module):
    """Pre-norm layer: causal self-attention, cross-attention to the image tokens, FFN."""

    def __init__(self, dim: int, heads: int, ffn_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(dim), _Attention(dim, heads, dropout)
        self.norm2, self.cross_attn = nn.LayerNorm(dim), _Attention(dim, heads, dropout)
        hidden = max(1, int(round(dim * ffn_ratio)))
        self.norm3 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mem_k: Tensor, mem_v: Tensor, cache: dict[str, Tensor] | None = None) -> Tensor:
        """x: [N, T, C] (T = 1 when `cache` is given: one decoding step that extends the cache)."""
        h = self.norm1(x)
        k, v = self.self_attn.keys_values(h)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        x = x + self.drop(self.self_attn.attend(h, k, v, causal=cache is None))
        x = x + self.drop(self.cross_attn.attend(self.norm2(x), mem_k, mem_v, causal=False))
        return x + self.drop(self.ffn(self.norm3(x)))


class CaptionDecoder(nn.Module):
    """Caption decoder over the token memory (the caption task's head).

    Args:
        vocab_size: V. dim: width of the memory it reads and of its layers.
        layers, heads, ffn_ratio, dropout: Transformer sizes.
        tie_embeddings: share the word embedding with the output projection.
    """

    inputs = ("captions",)  # int64 [B, L] `<START> w... <END> <NULL>...` (teacher forcing)

    def __init__(self, vocab_size: int, dim: int = 256, layers: int = 2, heads: int = 8, ffn_ratio: float = 4.0,
                 dropout: float = 0.1, tie_embeddings: bool = False) -> None:
        super().__init__()
        # 4 = the special tokens only: a model trained without captions (binary change detection)
        if not isinstance(vocab_size, int) or vocab_size < 4:
            raise ChangeAgentError(f"caption decoder: vocab_size must be an integer >= 4, got {vocab_size!r}")
        if not isinstance(dim, int) or not isinstance(heads, int) or heads < 1 or dim % heads or dim < 2:
            raise ChangeAgentError(f"caption decoder: heads={heads!r} must divide dim={dim!r}")
        if not isinstance(layers, int) or layers < 1:
            raise ChangeAgentError(f"caption decoder: layers must be a positive integer, got {layers!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ChangeAgentError(f"caption decoder: dropout must be in [0, 1), got {dropout!r}")
        self.dim, self.vocab_size = dim, vocab_size
        self.embed = nn.Embedding(vocab_size, dim)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, float(ffn_ratio), float(dropout)) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)
        if tie_embeddings:
            self.head.weight = self.embed.weight
        self.drop = nn.Dropout(float(dropout))

    def decoder_layers(self) -> list[DecoderLayer]:
        return cast(list[DecoderLayer], list(self.layers))

    # -- the task-head protocol (models/heads.py) ------------------------------------------------
    def outputs(self, feats: Any, inputs: Mapping[str, Tensor]) -> dict[str, Any]:
        """{"caption": float [B, L-1, V]}: position t predicts captions[:, t+1]."""
        captions = check_captions(inputs["captions"], feats.batch, self.vocab_size)
        return {"caption": self(feats["memory"], captions)}

    def predictions(self, feats: Any, inputs: Mapping[str, Tensor], options: Mapping[str, Any]) -> dict[str, Any]:
        """{"tokens": int64 [B, T]}: generated ids without `<START>`, cut at `<END>`, padded with `<NULL>`."""
        return {"tokens": decode(self, feats["memory"], options)}

    def _embed(self, tokens: Tensor, start: int) -> Tensor:
        pos = sinusoid(torch.arange(start, start + tokens.shape[1], device=tokens.device), self.dim)
        return self.drop(self.embed(tokens) + pos.to(self.embed.weight.dtype))

    def forward(self, memory: Tensor, captions: Tensor) -> Tensor:
        """Teacher forcing: memory [B, M, dim], captions int64 [B, L] -> logits [B, L-1, V]."""
        x = self._embed(captions[:, :-1], 0)
        for layer in self.decoder_layers():
            k, v = layer.cross_attn.keys_values(memory)
            x = layer(x, k, v)
        return self.head(self.norm(x))

    def start(self, memory: Tensor) -> Cache:
        """Decoding state for memory [N, M, dim]: the per-layer image keys/values, empty self-attn cache."""
        return cross_attention_cache(self.decoder_layers(), memory)

    def step(self, tokens: Tensor, cache: Cache, position: int) -> Tensor:
        """One step: last tokens int64 [N] at `position` -> next-token logits [N, V]; extends `cache`."""
        x = self._embed(tokens[:, None], position)
        for layer, c in zip(self.decoder_layers(), cache):
            self_cache: dict[str, Tensor] = {k: c[k] for k in ("k", "v") if k in c}
            x = layer(x, c["mk"], c["mv"], self_cache)
            c.update(self_cache)
        return self.head(self.norm(x[:, 0]))

    @staticmethod
    def reorder(cache: Cache, index: Tensor) -> None:
        """Keep rows `index` of the self-attention cache (beam search); image keys are per item."""
        for c in cache:
            for key in ("k", "v"):
                if key in c:
                    c[key] = c[key].index_select(0, index)


def check_captions(captions: Any, batch: int, vocab_size: int) -> Tensor:
    """Caption ids int64 [B, L >= 2] with every id in [0, vocab_size), else a ChangeAgentError."""
    if not isinstance(captions, Tensor) or captions.ndim != 2 or captions.shape[0] != batch \
            or captions.shape[1] < 2 or captions.dtype != torch.long:
        shape = tuple(captions.shape) if isinstance(captions, Tensor) else type(captions).__name__
        raise ChangeAgentError(f"model: captions must be int64 [B={batch}, L>=2], got {shape}")
    if int(captions.max()) >= vocab_size or int(captions.min()) < 0:
        raise ChangeAgentError(f"model: caption ids must be in [0, {vocab_size}), "
                               f"got {int(captions.min())}..{int(captions.max())}")
    return captions


DECODE_OPTIONS = ("method", "beam_size", "max_len", "length_penalty", "min_len")


def decode(decoder: Any, memory: Tensor, options: Mapping[str, Any]) -> Tensor:
    """Greedy or beam decoding (`options`: method, beam_size, max_len, length_penalty, min_len)."""
    method = options.get("method", DECODE.method)
    max_len, min_len = options.get("max_len", DECODE.max_len), options.get("min_len", 0)
    if method == "greedy":
        return greedy_decode(decoder, memory, max_len, min_len)
    if method == "beam":
        return beam_search(decoder, memory, options.get("beam_size", DECODE.beam_size), max_len,
                           options.get("length_penalty", DECODE.length_penalty), min_len)
    raise ChangeAgentError(f"predict: method must be 'greedy' or 'beam', got {method!r}")


def _build(ctx: HeadContext, cfg: CaptionDecoderCfg) -> CaptionDecoder:
    return CaptionDecoder(ctx.vocab_size, ctx.memory_dim or 0, **to_plain(cfg))


HEAD = HeadSpec(name="caption", section="caption_decoder", config=CaptionDecoderCfg, attr="caption_decoder",
                build=_build, memory=True, default=True, moved=tuple((k, "memory") for k in MEMORY_KEYS))
