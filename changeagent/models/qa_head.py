"""Change question answering head: a question, the fused bi-temporal tokens -> logits over a closed answer set.

    question ids [B, L] (data.qa.vocab.QuestionVocab, <pad> = 0)
        -> QuestionEncoder: token + sinusoid position embedding -> `text_layers` Transformer encoder
           layers (padding masked) -> LayerNorm -> question tokens [B, L, dim]
    memory [B, M, memory_dim] (ChangeCaptioner.features' caption memory: the fused bi-temporal tokens
           with their 2-D positions) -> Linear -> LayerNorm -> [B, M, dim]
    [ANS] query + question tokens -> `fusion_layers` Transformer decoder layers (self-attention over the
           question, cross-attention over the memory) -> the [ANS] token -> MLP -> logits [B, A]
    A = len(data.qa.answers.AnswerVocab) (the 19 CDVQA answers, counts, cells, ...: `ANSWERS`).

`question_only=True` is the question-only baseline: the same head, its cross-attention reading one learned
constant token instead of the memory, so no image information reaches the answer. `allowed` (bool [B, A],
`AnswerVocab.allowed(types)`) masks the answers a question's type cannot have.

The question encoder is its own class (token-level outputs; retrieval's `TextEncoder` pools to one
vector, so it is not reused — it follows the same design: embedding, sinusoid positions, pre-norm
layers, padding mask). `encode_questions(vocab, texts, max_len)` -> int64 [B, L] padded ids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from changeagent.data.qa.vocab import PAD, QuestionVocab
from changeagent.errors import ChangeAgentError
from changeagent.models.caption_decoder import sinusoid
from changeagent.typed import fail, opt


@dataclass
class QAConfig:
    """The model config's `qa` section: the question answering head (disabled unless asked for)."""

    enabled: bool = opt(False, "build the QA head")
    dim: int = opt(256, "width of the question tokens and the fusion layers", ge=8)
    text_layers: int = opt(2, "Transformer encoder layers over the question tokens", ge=1)
    fusion_layers: int = opt(2, "decoder layers: question self-attention + cross-attention over the image tokens",
                             ge=1)
    heads: int = opt(4, "attention heads (dim must be divisible by it)", ge=1)
    dropout: float = opt(0.1, "dropout of every layer", ge=0, lt=1)
    max_len: int = opt(32, "question tokens kept (longer questions are cut)", ge=4)

    def validate(self, key: str) -> None:
        if self.dim % self.heads:
            fail(f"{key}.dim", f"{self.dim} is not divisible by {key}.heads {self.heads}")


def _check_ids(ids: Tensor, vocab_size: int) -> None:
    if not isinstance(ids, Tensor) or ids.ndim != 2 or ids.dtype != torch.long or ids.shape[1] < 1:
        shape = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
        raise ChangeAgentError(f"qa head: question ids must be int64 [B, L], got {shape}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ChangeAgentError(f"qa head: question ids must be in [0, {vocab_size}), got "
                               f"{int(ids.min())}..{int(ids.max())}")


class QuestionEncoder(nn.Module):
    """Question ids int64 [B, L] -> (tokens float [B, L, dim], padding bool [B, L])."""

    def __init__(self, vocab_size: int, dim: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.vocab_size, self.dim = vocab_size, dim
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=PAD)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        _check_ids(ids, self.vocab_size)
        pad = ids == PAD
        pos = sinusoid(torch.arange(ids.shape[1], device=ids.device), self.dim)
        x = self.embed(ids) * math.sqrt(self.dim) + pos.to(self.embed.weight.dtype)
        return self.norm(self.layers(x, src_key_padding_mask=pad)), pad


class QAHead(nn.Module):
    """forward(question_ids [B, L], memory [B, M, memory_dim] | None, allowed bool [B, A] | None) -> logits [B, A].

    memory may be None only when `question_only`.
    """

    def __init__(self, question_vocab_size: int, memory_dim: int, num_answers: int, cfg: QAConfig,
                 question_only: bool = False) -> None:
        super().__init__()
        if num_answers < 2:
            raise ChangeAgentError(f"qa head: needs at least 2 answers, got {num_answers}")
        self.cfg, self.num_answers, self.memory_dim = cfg, num_answers, memory_dim
        self.question_only = question_only
        self.question = QuestionEncoder(question_vocab_size, cfg.dim, cfg.text_layers, cfg.heads, cfg.dropout)
        self.memory_proj = nn.Sequential(nn.Linear(memory_dim, cfg.dim), nn.LayerNorm(cfg.dim))
        self.null_memory = nn.Parameter(torch.zeros(1, 1, cfg.dim))  # the question-only "image"
        self.answer_query = nn.Parameter(torch.randn(1, 1, cfg.dim) * 0.02)
        layer = nn.TransformerDecoderLayer(cfg.dim, cfg.heads, 4 * cfg.dim, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.fusion = nn.TransformerDecoder(layer, cfg.fusion_layers)
        self.norm = nn.LayerNorm(cfg.dim)
        self.classifier = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(), nn.Dropout(cfg.dropout),
                                        nn.Linear(cfg.dim, num_answers))

    def forward(self, question_ids: Tensor, memory: Tensor | None = None, allowed: Tensor | None = None) -> Tensor:
        tokens, pad = self.question(question_ids)
        b = tokens.shape[0]
        if self.question_only:
            mem = self.null_memory.expand(b, -1, -1).to(tokens.dtype)
        else:
            if memory is None or memory.ndim != 3 or memory.shape[0] != b or memory.shape[2] != self.memory_dim:
                got = None if memory is None else tuple(memory.shape)
                raise ChangeAgentError(f"qa head: memory must be [B={b}, M, {self.memory_dim}], got {got}")
            mem = self.memory_proj(memory)
        x = torch.cat([self.answer_query.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)
        keep_pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=pad.device), pad], dim=1)
        x = self.fusion(x, mem, tgt_key_padding_mask=keep_pad)
        logits = self.classifier(self.norm(x[:, 0]))
        if allowed is not None:
            if allowed.shape != logits.shape or allowed.dtype != torch.bool:
                raise ChangeAgentError(f"qa head: allowed must be bool {tuple(logits.shape)}, got "
                                       f"{allowed.dtype} {tuple(allowed.shape)}")
            logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
        return logits


def encode_questions(vocab: QuestionVocab, texts: Sequence[str], max_len: int = 32,
                     device: Any = None) -> Tensor:
    """Question texts -> int64 [B, L] ids, padded with <pad> to the longest (at most max_len)."""
    rows = [vocab.encode(t, max_len) for t in texts]
    width = max((len(r) for r in rows), default=1)
    return torch.tensor([r + [PAD] * (width - len(r)) for r in rows], dtype=torch.long,
                        device=device).reshape(len(rows), width)
