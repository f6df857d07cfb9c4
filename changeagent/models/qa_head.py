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

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from changeagent.data.qa.answers import ANSWERS, AnswerVocab
from changeagent.data.qa.vocab import PAD, QuestionVocab
from changeagent.errors import ChangeAgentError
from changeagent.models.caption_decoder import sinusoid
from changeagent.models.features import HeadContext, HeadSpec
from changeagent.typed import fail, opt


@dataclass
class QAConfig:
    """The model config's `qa` section: the question answering head (disabled unless asked for)."""

    enabled: bool | None = opt(None, "old-style switch: true lists `qa` in model.tasks when that is unset "
                                     "(null: follow model.tasks)")
    dim: int = opt(256, "width of the question tokens and the fusion layers", ge=8)
    text_layers: int = opt(2, "Transformer encoder layers over the question tokens", ge=1)
    fusion_layers: int = opt(2, "decoder layers: question self-attention + cross-attention over the image tokens",
                             ge=1)
    heads: int = opt(4, "attention heads (dim must be divisible by it)", ge=1)
    dropout: float = opt(0.1, "dropout of every layer", ge=0, lt=1)
    max_len: int = opt(32, "question tokens kept (longer questions are cut)", ge=4)
    question_words: list[str] | None = opt(None, "the question vocabulary, <pad> and <unk> first (null: "
                                           "QuestionVocab.build() of the templates, written here when the model "
                                           "has the qa task, so a saved model keeps its words)")
    answers: list[str] | None = opt(None, "the closed answer set (null: data.qa.answers.ANSWERS, written here "
                                    "when the model has the qa task)")

    def validate(self, key: str) -> None:
        if self.dim % self.heads:
            fail(f"{key}.dim", f"{self.dim} is not divisible by {key}.heads {self.heads}")
        try:
            if self.question_words is not None:
                QuestionVocab(tuple(self.question_words))
            if self.answers is not None:
                AnswerVocab(tuple(self.answers))
        except ChangeAgentError as e:
            fail(f"{key}.question_words" if "question" in str(e) else f"{key}.answers", str(e))

    def check(self, model: Any, key: str) -> None:
        """Against the model config: a model with the qa task records its vocabularies (the saved
        config.json / last.pt then restores them, models/hub.py saves `model.config` whole)."""
        if "qa" in (model.tasks or []):
            if self.question_words is None:
                self.question_words = list(default_question_vocab().words)
            if self.answers is None:
                self.answers = list(ANSWERS)


@functools.lru_cache(maxsize=1)
def default_question_vocab() -> QuestionVocab:
    """The question words of every template of the three label spaces (a model's default)."""
    return QuestionVocab.build()


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


class QATaskHead(nn.Module):
    """The `qa` task's head (models/heads.py): the learned `QAHead` over the token memory, its
    question-only twin (the baseline, trained beside it) and the training answers seen per type (the
    majority baseline). It owns both vocabularies (`QAConfig.question_words`, `answers`), so its
    inputs are texts, as the user asks them:

        qa_questions: list[str] [N]   the questions of the batch, item after item
        qa_item:      int64 [N]       the batch item each question is about
        qa_types:     list[str] [N]   their types (rules.QUESTION_TYPES): the allowed answers
        qa_answers:   list[str] [N]   (training) the answers: "qa_target" ids, and counted per type

    The question-only head never reads the image (its cross-attention sees one learned token) and
    the question encoder it trains is its own, so none of its gradient reaches the shared trunk.
    `answer_counts` (int64 [types, A], a buffer saved with the weights) counts the training answers
    per type in train mode; under DDP the buffers are rank 0's (DDP broadcasts them each step).
    """

    inputs = ("qa_questions", "qa_item", "qa_types")
    extra_inputs = ("qa_answers",)
    answer_counts: Tensor

    def __init__(self, memory_dim: int, cfg: QAConfig) -> None:
        super().__init__()
        from changeagent.data.qa.rules import QUESTION_TYPES

        self.cfg = cfg
        self.qvocab = QuestionVocab(tuple(cfg.question_words)) if cfg.question_words else default_question_vocab()
        self.avocab = AnswerVocab(tuple(cfg.answers)) if cfg.answers else AnswerVocab.default()
        self.types = tuple(QUESTION_TYPES)
        self.learned = QAHead(len(self.qvocab), memory_dim, len(self.avocab), cfg)
        self.question_only = QAHead(len(self.qvocab), memory_dim, len(self.avocab), cfg, question_only=True)
        self.register_buffer("answer_counts", torch.zeros(len(self.types), len(self.avocab), dtype=torch.long))

    def example_inputs(self, batch: int, length: int, gen: torch.Generator) -> dict[str, Any]:
        """`models.bench`: four random questions of up to `length` words per pair, of random types."""
        words = list(self.qvocab.words[2:])
        n = 4 * batch
        ids = torch.randint(len(words), (n, min(length, self.cfg.max_len)), generator=gen).tolist()
        kinds = torch.randint(len(self.types), (n,), generator=gen).tolist()
        return {"qa_questions": [" ".join(words[i] for i in row) for row in ids],
                "qa_types": [self.types[k] for k in kinds], "qa_item": torch.arange(batch).repeat_interleave(4)}

    def _encode(self, inputs: Mapping[str, Any], device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        texts, types, item = list(inputs["qa_questions"]), list(inputs["qa_types"]), inputs["qa_item"]
        if not isinstance(item, Tensor) or item.ndim != 1 or len(texts) != len(types) or item.shape[0] != len(texts):
            raise ChangeAgentError(f"qa head: qa_questions ({len(texts)}), qa_types ({len(types)}) and qa_item "
                                   f"must have one entry per question")
        ids = encode_questions(self.qvocab, texts, self.cfg.max_len, device=device)
        allowed = torch.tensor(self.avocab.allowed(types), dtype=torch.bool, device=device)
        return ids, allowed, item.to(device)

    def _type_ids(self, types: Sequence[str], device: torch.device) -> Tensor:
        index = {t: i for i, t in enumerate(self.types)}
        return torch.tensor([index[t] for t in types], dtype=torch.long, device=device)

    def outputs(self, feats: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """{"qa_logits", "qa_qonly_logits": float [N, A] (disallowed answers at the dtype's min), and
        with qa_answers "qa_target" int64 [N]}; {} without questions."""
        memory = feats["memory"]
        if not len(inputs.get("qa_questions") or ()):  # no question asked (predict without --question)
            return {}
        ids, allowed, item = self._encode(inputs, memory.device)
        out: dict[str, Any] = {}
        if inputs.get("qa_answers") is not None:
            answers = list(inputs["qa_answers"])
            target = torch.tensor([self.avocab.index(a, "qa training answer") for a in answers],
                                  dtype=torch.long, device=memory.device)
            allowed[torch.arange(len(answers), device=memory.device), target] = True  # a given answer stays possible
            out["qa_target"] = target
            if self.training:
                with torch.no_grad():
                    flat = self._type_ids(inputs["qa_types"], memory.device) * len(self.avocab) + target
                    self.answer_counts.view(-1).add_(torch.bincount(flat, minlength=self.answer_counts.numel()))
        out["qa_logits"] = self.learned(ids, memory[item], allowed)
        out["qa_qonly_logits"] = self.question_only(ids, None, allowed)
        return out

    def majority(self, types: Sequence[str]) -> list[str | None]:
        """The most frequent training answer of each type (None: a type never trained on)."""
        counts = self.answer_counts.cpu()
        index = {t: i for i, t in enumerate(self.types)}
        out: list[str | None] = []
        for t in types:
            row = counts[index[t]]
            out.append(self.avocab.answer(int(row.argmax())) if int(row.sum()) else None)
        return out

    def predictions(self, feats: Any, inputs: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
        """{"qa_answers", "qa_qonly_answers": list[str] [N], "qa_majority": list[str | None] [N],
        "qa_probs": float [N] (the learned answer's probability), "qa_logits" [N, A]}."""
        out = self.outputs(feats, {k: v for k, v in inputs.items() if k != "qa_answers"})
        if not out:
            return {}
        probs = out["qa_logits"].float().softmax(-1)
        best = probs.argmax(-1)
        qonly = out["qa_qonly_logits"].argmax(-1)
        return {"qa_logits": out["qa_logits"], "qa_probs": probs.gather(1, best[:, None])[:, 0],
                "qa_answers": [self.avocab.answer(int(i)) for i in best.tolist()],
                "qa_qonly_answers": [self.avocab.answer(int(i)) for i in qonly.tolist()],
                "qa_majority": self.majority(list(inputs["qa_types"]))}


def _build(ctx: HeadContext, cfg: QAConfig) -> QATaskHead:
    return QATaskHead(ctx.memory_dim or 0, cfg)


HEAD = HeadSpec(name="qa", section="qa", config=QAConfig, attr="qa", build=_build, memory=True)
