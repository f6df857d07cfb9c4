"""Grounding head: a text-conditioned mask decoder over the shared fused maps (referring change segmentation).

Input: the fusion neck's maps of every level (what `MaskDecoder` reads, finest = stride 4 first) and
an already-encoded expression (tokens `[N, L, d_text]` + padding mask, and/or a pooled `[N, d_text]`
vector), so the text encoder can be shared with change QA. Output: one mask logit map `[N, 1, H, W]`
per expression. The design (justified in docs/models.md, "Grounding head"):

1. lateral 1x1 conv per level to `channels`, with two coordinate channels (x, y in [-1, 1]) appended
   first (CoordConv): convolutions are translation-equivariant, and "in the top left" needs absolute
   position;
2. at the `attn_levels` coarsest levels (stride 32 / 16: few pixels, cheap) every pixel cross-attends
   the expression tokens (pre-norm residual attention + MLP, padding masked): word-level grounding,
   e.g. "ground" vs "vegetation" vs "that became";
3. FiLM from the pooled expression on every level of the FPN-style top-down path: per-channel
   `(1 + gamma) * x + beta`, gamma and beta zero-initialised (the decoder starts unconditioned and the
   text learns to gate channels); cheap at stride 4, where attention would cost (H/4 * W/4) x L;
4. the logit is a dynamic 1x1 conv: a kernel and bias predicted from the pooled expression, dotted with
   the stride-4 pixel embeddings (CRIS-style text-to-pixel projection), upsampled to the input size.

Several expressions may refer to one image pair: `pair_index` [N] picks each expression's row of the
maps, so one encoder pass serves them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from changeagent.errors import ChangeAgentError
from changeagent.models.features import HeadContext, HeadSpec
from changeagent.typed import fail, opt


@dataclass
class GroundingHeadCfg:
    """`model.grounding`: the text-conditioned mask decoder (models/grounding_head.py)."""

    channels: int = opt(64, "decoder width", gt=0)
    heads: int = opt(4, "attention heads of the pixel-to-word cross-attention (divides channels)", gt=0)
    attn_levels: int = opt(1, "coarsest levels whose pixels cross-attend the expression tokens (0: FiLM only)", ge=0)
    dropout: float = opt(0.0, "dropout in the cross-attention and before the mask projection", ge=0, lt=1)
    text_dim: int = opt(128, "width of the expression encoder (models.qa_head.QuestionEncoder; divides by heads)", gt=0)
    text_layers: int = opt(1, "Transformer encoder layers over the expression tokens", ge=1)
    max_len: int = opt(24, "expression tokens kept (longer expressions are cut)", ge=4)

    def validate(self, key: str) -> None:
        if self.channels % self.heads or self.text_dim % self.heads:
            fail(f"{key}.heads", f"{self.heads} must divide channels {self.channels} and text_dim {self.text_dim}")


def coord_channels(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, 2, H, W]: x and y pixel-centre coordinates in [-1, 1]."""
    b, _, h, w = x.shape
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=0)  # [2, H, W]: x then y
    return grid.unsqueeze(0).expand(b, -1, -1, -1)


def _conv_bn_relu(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class FiLM(nn.Module):
    """Per-channel (1 + gamma) * x + beta from a text vector; zero-initialised (identity at the start)."""

    def __init__(self, text_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(text_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor, text: Tensor) -> Tensor:
        gamma, beta = self.proj(text).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return x * (1 + gamma) + beta


class PixelWordAttention(nn.Module):
    """Pixels [N, C, h, w] attend words [N, L, C] (pre-norm residual cross-attention + MLP)."""

    def __init__(self, channels: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(channels)
        self.norm_kv = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))

    def forward(self, x: Tensor, words: Tensor, padding: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q = x.flatten(2).transpose(1, 2)  # [N, h*w, C]
        kv = self.norm_kv(words)
        q = q + self.attn(self.norm_q(q), kv, kv, key_padding_mask=padding, need_weights=False)[0]
        q = q + self.mlp(self.norm_mlp(q))
        return q.transpose(1, 2).reshape(n, c, h, w)


class GroundingHead(nn.Module):
    """Text-conditioned mask decoder (see the module docstring).

    Args:
        in_channels: channels of the fused maps, finest (stride 4) first (`neck.out_channels`).
        text_dim: width of the encoded expression tokens / pooled vector.
        channels, heads, attn_levels, dropout: `GroundingHeadCfg`.
    """

    def __init__(self, in_channels: Sequence[int], text_dim: int, channels: int = 64, heads: int = 4,
                 attn_levels: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        in_channels = list(in_channels)
        if not in_channels or any(not isinstance(c, int) or c < 1 for c in in_channels):
            raise ChangeAgentError(f"grounding head: in_channels must be positive integers, got {in_channels}")
        if not isinstance(text_dim, int) or text_dim < 1:
            raise ChangeAgentError(f"grounding head: text_dim must be a positive integer, got {text_dim!r}")
        if not isinstance(channels, int) or channels < 1 or not isinstance(heads, int) or heads < 1 \
                or channels % heads:
            raise ChangeAgentError(f"grounding head: channels {channels!r} must be a positive multiple of heads {heads!r}")
        if not isinstance(attn_levels, int) or not 0 <= attn_levels <= len(in_channels):
            raise ChangeAgentError(f"grounding head: attn_levels must be in 0..{len(in_channels)}, got {attn_levels!r}")
        self.text_dim, self.channels, self.levels = text_dim, channels, len(in_channels)
        self.lateral = nn.ModuleList(_conv_bn_relu(c + 2, channels, 1) for c in in_channels)
        self.word_proj = nn.Linear(text_dim, channels)
        # attention blocks for the `attn_levels` coarsest levels, coarsest first
        self.attn = nn.ModuleList(PixelWordAttention(channels, heads, dropout) for _ in range(attn_levels))
        self.film = nn.ModuleList(FiLM(text_dim, channels) for _ in in_channels)
        self.smooth = nn.ModuleList(_conv_bn_relu(channels, channels, 3) for _ in in_channels[:-1])
        self.drop = nn.Dropout2d(dropout)
        self.embed = nn.Conv2d(channels, channels, 1)  # pixel embeddings for the dynamic projection
        self.kernel = nn.Linear(text_dim, channels + 1)  # text -> 1x1 kernel and bias

    def _check_text(self, tokens: Tensor | None, padding: Tensor | None, pooled: Tensor | None
                    ) -> tuple[Tensor | None, Tensor | None, Tensor]:
        if tokens is None and pooled is None:
            raise ChangeAgentError("grounding head: give the encoded expression (tokens and/or pooled)")
        if tokens is not None:
            if not isinstance(tokens, Tensor) or tokens.ndim != 3 or tokens.shape[-1] != self.text_dim \
                    or not tokens.is_floating_point():
                shape = list(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
                raise ChangeAgentError(f"grounding head: tokens must be float [N, L, {self.text_dim}], got {shape}")
            if padding is None:
                padding = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
            if not isinstance(padding, Tensor) or padding.dtype != torch.bool or padding.shape != tokens.shape[:2]:
                shape = list(padding.shape) if isinstance(padding, Tensor) else type(padding).__name__
                raise ChangeAgentError(f"grounding head: padding must be bool [N, L] = {list(tokens.shape[:2])} "
                                       f"(True = padding), got {shape}")
            if bool(padding.all(dim=1).any()):
                raise ChangeAgentError("grounding head: an expression has no tokens (all padding)")
            if pooled is None:  # masked mean of the tokens
                keep = (~padding).unsqueeze(-1).to(tokens.dtype)
                pooled = (tokens * keep).sum(1) / keep.sum(1)
        elif self.attn:
            raise ChangeAgentError("grounding head: attn_levels > 0 needs the expression tokens, not only pooled")
        assert pooled is not None
        if not isinstance(pooled, Tensor) or pooled.ndim != 2 or pooled.shape[-1] != self.text_dim:
            shape = list(pooled.shape) if isinstance(pooled, Tensor) else type(pooled).__name__
            raise ChangeAgentError(f"grounding head: pooled must be [N, {self.text_dim}], got {shape}")
        if tokens is not None and pooled.shape[0] != tokens.shape[0]:
            raise ChangeAgentError(f"grounding head: {pooled.shape[0]} pooled vectors for {tokens.shape[0]} token rows")
        return tokens, padding, pooled

    def forward(self, feats: Sequence[Tensor], size: tuple[int, int], tokens: Tensor | None = None,
                padding: Tensor | None = None, pooled: Tensor | None = None,
                pair_index: Tensor | None = None) -> Tensor:
        """feats: fused maps [B, C_l, H_l, W_l], finest first; size: (H, W) of the input images;
        tokens: float [N, L, d_text]; padding: bool [N, L], True = padding (None: no padding);
        pooled: float [N, d_text] (None: masked mean of tokens); pair_index: int64 [N] row of `feats`
        each expression refers to (None: N == B, expression i on pair i).

        Returns mask logits float [N, 1, H, W].
        """
        if len(feats) != self.levels:
            raise ChangeAgentError(f"grounding head: got {len(feats)} feature levels, built for {self.levels}")
        tokens, padding, pooled = self._check_text(tokens, padding, pooled)
        n, b = pooled.shape[0], feats[0].shape[0]
        if pair_index is None:
            if n != b:
                raise ChangeAgentError(f"grounding head: {n} expressions for {b} pairs; give pair_index")
        else:
            if not isinstance(pair_index, Tensor) or pair_index.shape != (n,) or pair_index.dtype != torch.long:
                raise ChangeAgentError(f"grounding head: pair_index must be int64 [{n}]")
            if n and (int(pair_index.min()) < 0 or int(pair_index.max()) >= b):
                raise ChangeAgentError(f"grounding head: pair_index must be in [0, {b}), "
                                       f"got {int(pair_index.min())}..{int(pair_index.max())}")
        pooled = pooled.to(feats[0].dtype)
        words = self.word_proj(tokens.to(feats[0].dtype)) if tokens is not None else None
        # laterals on the B pairs (cheap), then one row per expression
        lat = [self.lateral[i](torch.cat([f, coord_channels(f)], dim=1)) for i, f in enumerate(feats)]
        if pair_index is not None:
            lat = [x.index_select(0, pair_index) for x in lat]
        p = None
        for i in range(self.levels - 1, -1, -1):  # coarsest first
            x = lat[i]
            depth = self.levels - 1 - i  # 0 = coarsest
            if depth < len(self.attn):
                assert words is not None and padding is not None
                x = self.attn[depth](x, words, padding)
            x = self.film[i](x, pooled)
            if p is not None:
                x = x + F.interpolate(p, size=x.shape[-2:], mode="bilinear", align_corners=False)
                x = self.smooth[i](x)
            p = x
        assert p is not None
        e = self.embed(self.drop(p))  # [N, C, h, w]
        k = self.kernel(pooled)  # [N, C + 1]
        logits = torch.einsum("nchw,nc->nhw", e, k[:, :-1]) / self.channels ** 0.5 + k[:, -1:, None]
        return F.interpolate(logits.unsqueeze(1), size=size, mode="bilinear", align_corners=False)


class GroundingModule(nn.Module):
    """The `grounding` task's head: expression ids -> `QuestionEncoder` (the QA head's text encoder
    design, its own weights) -> `GroundingHead` over the fused multi-level maps `feats["levels"]`.

    inputs: "expressions" list[str] of N texts (the head encodes them with its own `vocab`, so a loaded
    model reads words with the vocabulary it was trained with); extra input "expression_pairs" int64
    [N], the pair (row of the batch) each expression refers to (None: N == B, one per pair).
    Outputs: "grounding" float [N, 1, H, W] mask logits, "grounding_pairs" int64 [N].
    `vocab`: its `QuestionVocab` (the built-in `expression_vocab()`; `models.hub` restores a saved one).
    """

    inputs = ("expressions",)
    extra_inputs = ("expression_pairs",)
    vocab_file = "expressions.json"  # models.hub: the file of the folder that holds `vocab`

    def __init__(self, level_channels: Sequence[int], cfg: GroundingHeadCfg) -> None:
        super().__init__()
        from changeagent.data.grounding.vocab import expression_vocab
        from changeagent.models.qa_head import QuestionEncoder

        self.vocab = expression_vocab()
        self.max_len = cfg.max_len
        self.text = QuestionEncoder(len(self.vocab), cfg.text_dim, cfg.text_layers, cfg.heads, cfg.dropout)
        self.decoder = GroundingHead(level_channels, cfg.text_dim, cfg.channels, cfg.heads, cfg.attn_levels,
                                     cfg.dropout)

    def set_vocab(self, vocab: Any) -> None:
        """Attach a (saved) vocabulary; its size must be the text encoder's."""
        if len(vocab) != self.text.vocab_size:
            raise ChangeAgentError(f"grounding head: expression vocabulary has {len(vocab)} words, the head "
                                   f"{self.text.vocab_size}")
        self.vocab = vocab

    def encode(self, texts: Sequence[str], device: Any = None) -> Tensor:
        """Expression texts -> int64 [N, L] ids (padded, cut at max_len)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ChangeAgentError("grounding head: expressions must be a list of texts")
        from changeagent.models.qa_head import encode_questions

        return encode_questions(self.vocab, texts, self.max_len, device)

    def example_inputs(self, batch: int, length: int, gen: torch.Generator) -> dict[str, Any]:
        """`models.bench`: two random expressions of up to `length` words per pair."""
        words = self.vocab.words[2:]
        n = 2 * batch
        ids = torch.randint(len(words), (n, min(length, self.max_len)), generator=gen).tolist()
        return {"expressions": [" ".join(words[i] for i in row) for row in ids],
                "expression_pairs": torch.arange(batch).repeat_interleave(2)}

    def outputs(self, feats: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        pairs = inputs.get("expression_pairs")
        ids = self.encode(inputs["expressions"], feats["levels"][0].device)
        tokens, padding = self.text(ids)
        logits = self.decoder(feats["levels"], feats.size, tokens, padding, pair_index=pairs)
        if pairs is None:
            pairs = torch.arange(ids.shape[0], device=ids.device)
        return {"grounding": logits, "grounding_pairs": pairs}

    def predictions(self, feats: Any, inputs: Mapping[str, Tensor], options: Mapping[str, Any]) -> dict[str, Any]:
        return self.outputs(feats, inputs) if inputs.get("expressions") else {}


def _build(ctx: HeadContext, cfg: GroundingHeadCfg) -> GroundingModule:
    return GroundingModule(ctx.level_channels, cfg)


HEAD = HeadSpec(name="grounding", section="grounding", config=GroundingHeadCfg, attr="grounding_head", build=_build)
