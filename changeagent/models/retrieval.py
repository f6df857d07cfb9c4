"""Retrieval head: a pair embedding and a caption embedding in one space (text-driven change retrieval).

    pair side:  caption memory [B, M, d] (the fused bi-temporal tokens the caption decoder reads)
                -> attention pooling (one learned query) -> LayerNorm -> Linear -> L2-normalised [B, D]
    text side:  caption ids [B, L] -> token + sinusoid position embedding -> `text_layers` Transformer
                encoder layers (padding masked) -> masked mean -> Linear -> L2-normalised [B, D]
    similarity: cosine; training multiplies it by the learned `logit_scale` (CLIP's temperature).

The text side is its own module (`TextEncoder`) so a search index can store it alone and embed
queries without loading the image encoder (see changeagent/inference/search.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from changeagent.data.constants import NULL
from changeagent.errors import ChangeAgentError
from changeagent.models.caption_decoder import sinusoid


@dataclass
class RetrievalConfig:
    """The model config's `retrieval` section (configs/model/*.yaml); disabled unless asked for."""

    enabled: bool = False
    dim: int = 256            # joint embedding width D
    text_dim: int = 256       # width of the caption encoder
    text_layers: int = 2      # Transformer encoder layers over the caption tokens
    heads: int = 4            # attention heads of the text encoder and of the pair pooling
    dropout: float = 0.1
    temperature: float = 0.07  # initial softmax temperature of the contrastive loss (learned)

    @classmethod
    def parse(cls, value: Any) -> RetrievalConfig:
        """From a dict (unknown keys and bad values are errors naming the key)."""
        if value is None:
            return cls()
        if isinstance(value, RetrievalConfig):
            return value
        if not isinstance(value, dict):
            raise ChangeAgentError(f"model config: retrieval must be a mapping, got {value!r}")
        known = {f.name for f in fields(cls)}
        bad = sorted(set(value) - known)
        if bad:
            raise ChangeAgentError(f"model config: unknown retrieval key(s) {bad}; known: {sorted(known)}")
        cfg = cls(**value)
        for name in ("dim", "text_dim", "text_layers", "heads"):
            v = getattr(cfg, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ChangeAgentError(f"model config: retrieval.{name} must be an integer >= 1, got {v!r}")
        if cfg.text_dim % cfg.heads:
            raise ChangeAgentError(f"model config: retrieval.text_dim {cfg.text_dim} is not divisible by "
                                   f"retrieval.heads {cfg.heads}")
        if not 0 <= cfg.dropout < 1 or not 0 < cfg.temperature <= 1:
            raise ChangeAgentError("model config: retrieval.dropout must be in [0, 1) and "
                                   f"retrieval.temperature in (0, 1], got {cfg.dropout}, {cfg.temperature}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TextEncoder(nn.Module):
    """Caption ids int64 [B, L] (`<START> w... <END> <NULL>...`) -> L2-normalised float [B, D]."""

    def __init__(self, vocab_size: int, cfg: RetrievalConfig) -> None:
        super().__init__()
        self.vocab_size, self.width = vocab_size, cfg.text_dim
        self.embed = nn.Embedding(vocab_size, cfg.text_dim, padding_idx=NULL)
        layer = nn.TransformerEncoderLayer(cfg.text_dim, cfg.heads, 4 * cfg.text_dim, cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.text_dim)
        self.proj = nn.Linear(cfg.text_dim, cfg.dim)

    def forward(self, ids: Tensor) -> Tensor:
        if not isinstance(ids, Tensor) or ids.ndim != 2 or ids.dtype != torch.long or ids.shape[1] < 1:
            shape = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
            raise ChangeAgentError(f"retrieval: caption ids must be int64 [B, L], got {shape}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ChangeAgentError(f"retrieval: caption ids must be in [0, {self.vocab_size}), "
                                   f"got {int(ids.min())}..{int(ids.max())}")
        pad = ids == NULL  # [B, L]
        pos = sinusoid(torch.arange(ids.shape[1], device=ids.device), self.width)
        x = self.embed(ids) * math.sqrt(self.width) + pos.to(self.embed.weight.dtype)
        x = self.norm(self.layers(x, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)  # an all-padding row pools to 0
        return F.normalize(self.proj(pooled), dim=-1)


class PairPooling(nn.Module):
    """Caption memory [B, M, d] -> L2-normalised pair embedding [B, D] (one learned query attends)."""

    def __init__(self, memory_dim: int, cfg: RetrievalConfig) -> None:
        super().__init__()
        heads = cfg.heads if memory_dim % cfg.heads == 0 else 1
        self.query = nn.Parameter(torch.randn(1, 1, memory_dim) * 0.02)
        self.attn = nn.MultiheadAttention(memory_dim, heads, dropout=cfg.dropout, batch_first=True)
        self.norm = nn.LayerNorm(memory_dim)
        self.proj = nn.Linear(2 * memory_dim, cfg.dim)

    def forward(self, memory: Tensor) -> Tensor:
        q = self.query.expand(memory.shape[0], -1, -1).to(memory.dtype)
        attended, _ = self.attn(q, memory, memory, need_weights=False)
        # the attended token plus the plain mean: the mean keeps a gradient to every token early on
        x = torch.cat([attended[:, 0], memory.mean(1)], dim=-1)
        x = self.norm(x.unflatten(-1, (2, -1))).flatten(-2)
        return F.normalize(self.proj(x), dim=-1)


class RetrievalHead(nn.Module):
    """`pair` (PairPooling), `text` (TextEncoder) and the learned `logit_scale` (log 1/temperature)."""

    def __init__(self, vocab_size: int, memory_dim: int, cfg: RetrievalConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pair = PairPooling(memory_dim, cfg)
        self.text = TextEncoder(vocab_size, cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)))

    def scale(self) -> Tensor:
        """exp(logit_scale) clamped at 100 (CLIP's guard against a collapsing temperature)."""
        return self.logit_scale.exp().clamp(max=100.0)


def encode_texts(vocab: Any, texts: list[str], max_len: int = 41) -> Tensor:
    """Captions/queries -> int64 [N, L] ids the way captions are encoded for training
    (`<START> w... <END>`, padded with `<NULL>` to the longest, cut at `max_len`)."""
    rows = [vocab.encode(t) for t in texts]
    rows = [r if len(r) <= max_len else r[: max_len - 1] + r[-1:] for r in rows]
    width = max((len(r) for r in rows), default=2)
    return torch.tensor([r + [NULL] * (width - len(r)) for r in rows], dtype=torch.long).reshape(len(rows), width)
