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
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from changeagent.data.constants import NULL
from changeagent.errors import ChangeAgentError
from changeagent.models.caption_decoder import sinusoid
from changeagent.models.features import HeadContext, HeadSpec
from changeagent.typed import convert, fail, opt


@dataclass
class RetrievalConfig:
    """`model.retrieval`: the text-to-pair retrieval head (the `retrieval` task's head)."""

    enabled: bool | None = opt(None, "old configs only: true lists `retrieval` in model.tasks when that is unset "
                                     "(null: follow model.tasks)")
    dim: int = opt(256, "joint embedding width D", ge=1)
    text_dim: int = opt(256, "width of the caption encoder", ge=1)
    text_layers: int = opt(2, "Transformer encoder layers over the caption tokens", ge=1)
    heads: int = opt(4, "attention heads of the text encoder and of the pair pooling", ge=1)
    dropout: float = opt(0.1, "dropout of the text encoder and the pooling attention", ge=0, lt=1)
    temperature: float = opt(0.07, "initial softmax temperature of the contrastive loss (learned)", gt=0, le=1)

    def validate(self, key: str) -> None:
        if self.text_dim % self.heads:
            fail(f"{key}.text_dim", f"{self.text_dim} is not divisible by {key}.heads={self.heads}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def retrieval_config(raw: Any, key: str = "model.retrieval") -> RetrievalConfig:
    """The typed `retrieval` section of a (saved) model config, checked strictly."""
    return raw if isinstance(raw, RetrievalConfig) else convert(RetrievalConfig, raw, key)


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
        return self.encode(ids)

    def encode(self, ids: Tensor) -> Tensor:
        """`forward` without the input checks (they read values, which a graph export cannot)."""
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

    inputs = ("captions",)  # int64 [B, L]; "retrieval_captions" [B, L'] replaces them on the text side
    extra_inputs = ("retrieval_captions", "texts")  # read when given ("texts": predictions embed them)

    def __init__(self, vocab_size: int, memory_dim: int, cfg: RetrievalConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pair = PairPooling(memory_dim, cfg)
        self.text = TextEncoder(vocab_size, cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.temperature)))

    def scale(self) -> Tensor:
        """exp(logit_scale) clamped at 100 (CLIP's guard against a collapsing temperature)."""
        return self.logit_scale.exp().clamp(max=100.0)

    # -- the task-head protocol (models/heads.py) ------------------------------------------------
    def outputs(self, feats: Any, inputs: Mapping[str, Tensor]) -> dict[str, Any]:
        """{"pair_emb": [B, D], "text_emb": [B, D] (L2-normalised), "logit_scale": scalar}."""
        texts = inputs.get("retrieval_captions")
        return {"pair_emb": self.pair(feats["memory"]),
                "text_emb": self.text(inputs["captions"] if texts is None else texts),
                "logit_scale": self.scale()}

    def predictions(self, feats: Any, inputs: Mapping[str, Tensor], options: Mapping[str, Any]) -> dict[str, Any]:
        """{"pair_emb": [B, D]}; with an input "texts" (int64 [N, L] caption ids) also "text_emb" [N, D]."""
        out = {"pair_emb": self.pair(feats["memory"])}
        if inputs.get("texts") is not None:
            out["text_emb"] = self.text(inputs["texts"])
        return out


def encode_texts(vocab: Any, texts: list[str], max_len: int = 41) -> Tensor:
    """Captions/queries -> int64 [N, L] ids the way captions are encoded for training
    (`<START> w... <END>`, padded with `<NULL>` to the longest, cut at `max_len`)."""
    rows = [vocab.encode(t) for t in texts]
    rows = [r if len(r) <= max_len else r[: max_len - 1] + r[-1:] for r in rows]
    width = max((len(r) for r in rows), default=2)
    return torch.tensor([r + [NULL] * (width - len(r)) for r in rows], dtype=torch.long).reshape(len(rows), width)


def _build(ctx: HeadContext, cfg: RetrievalConfig) -> RetrievalHead:
    return RetrievalHead(ctx.vocab_size, ctx.memory_dim or 0, cfg)


HEAD = HeadSpec(name="retrieval", section="retrieval", config=RetrievalConfig, attr="retrieval", build=_build,
                memory=True)
