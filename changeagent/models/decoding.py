"""Batched greedy and beam-search decoding; every item's result is independent of its batch.

Both return int64 [B, T]: generated ids without `<START>`, cut at `<END>` (excluded), padded with
`<NULL>`, T = the longest result in the batch. `<NULL>` and `<START>` are never generated, unless the
decoder's `forbidden_tokens` says otherwise (then a generated `<NULL>` reads like padding).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from changeagent.data.constants import END, NULL, START
from changeagent.errors import ChangeAgentError
from changeagent.models.decode_cfg import DECODE


class StepDecoder(Protocol):
    """What decoding needs of a caption decoder (CaptionDecoder, MCICaptionDecoder): a KV-cached step."""

    def start(self, memory: Tensor) -> Any:
        """Decoding state (cache) for memory [N, M, dim]."""

    def step(self, tokens: Tensor, cache: Any, position: int) -> Tensor:
        """Last tokens int64 [N] at `position` -> next-token logits [N, V]; extends `cache`."""

    def reorder(self, cache: Any, index: Tensor) -> None:
        """Keep rows `index` of the cache (beam search)."""


def _check(max_len: int, min_len: int) -> None:
    if not isinstance(max_len, int) or max_len < 1:
        raise ChangeAgentError(f"decoding: max_len must be a positive integer, got {max_len!r}")
    if not isinstance(min_len, int) or not 0 <= min_len <= max_len:
        raise ChangeAgentError(f"decoding: min_len must be in [0, max_len={max_len}], got {min_len!r}")


def _forbidden(decoder: StepDecoder) -> tuple[int, ...]:
    """Ids never generated: `<NULL>`/`<START>` unless the decoder says otherwise (`forbidden_tokens`;
    the faithful MCI allows every id, as the reference's greedy loop does)."""
    return tuple(getattr(decoder, "forbidden_tokens", (NULL, START)))


def _mask_logits(logits: Tensor, step: int, min_len: int, forbidden: tuple[int, ...] = (NULL, START)) -> Tensor:
    """Forbid the `forbidden` ids, and `<END>` before `min_len` tokens: [..., V] float32."""
    logits = logits.float()
    for token in forbidden:
        logits[..., token] = float("-inf")
    if step < min_len:
        logits[..., END] = float("-inf")
    return logits


def _trim(tokens: Tensor) -> Tensor:
    """Drop trailing all-`<NULL>` columns (keeps at least one column)."""
    used = (tokens != NULL).any(dim=0).nonzero()
    t = int(used.max()) + 1 if used.numel() else 1
    return tokens[:, :t]


@torch.no_grad()
def greedy_decode(decoder: StepDecoder, memory: Tensor, max_len: int = DECODE.max_len, min_len: int = 0) -> Tensor:
    """memory [B, M, dim] -> tokens int64 [B, T]; stops once every item has produced `<END>`."""
    _check(max_len, min_len)
    b = memory.shape[0]
    forbidden = _forbidden(decoder)
    cache = decoder.start(memory)
    token = torch.full((b,), START, dtype=torch.long, device=memory.device)
    done = torch.zeros(b, dtype=torch.bool, device=memory.device)
    out = torch.full((b, max_len), NULL, dtype=torch.long, device=memory.device)
    for t in range(max_len):
        token = _mask_logits(decoder.step(token, cache, t), t, min_len, forbidden).argmax(dim=-1)
        token = token.masked_fill(done, END)  # finished rows keep feeding <END>; never written
        out[:, t] = token.masked_fill(done | (token == END), NULL)
        done = done | (token == END)
        if bool(done.all()):
            break
    return _trim(out)


@torch.no_grad()
def beam_search(decoder: StepDecoder, memory: Tensor, beam_size: int = DECODE.beam_size,
                max_len: int = DECODE.max_len, length_penalty: float = DECODE.length_penalty,
                min_len: int = 0) -> Tensor:
    """memory [B, M, dim] -> best hypothesis per item, tokens int64 [B, T].

    A hypothesis of n generated tokens (`<END>` counted) scores sum(log p) / n ** length_penalty
    (0: raw sum; 1: mean log-probability). Live beams all have the same length, so they are ranked
    by their sums; a beam that emits `<END>` competes for the item's best finished hypothesis. An
    item stops when its best finished hypothesis beats every live beam (the usual heuristic), or
    at `max_len`, where live beams count as finished.
    """
    _check(max_len, min_len)
    if not isinstance(beam_size, int) or beam_size < 1:
        raise ChangeAgentError(f"beam search: beam_size must be a positive integer, got {beam_size!r}")
    b, k, dev = memory.shape[0], beam_size, memory.device
    forbidden = _forbidden(decoder)
    cache = decoder.start(memory.repeat_interleave(k, dim=0))
    scores = torch.full((b, k), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # all beams start identical: keep one so the first step has k distinct words
    seqs = torch.full((b, k, max_len), NULL, dtype=torch.long, device=dev)
    best = torch.full((b,), float("-inf"), device=dev)
    best_seq = torch.full((b, max_len), NULL, dtype=torch.long, device=dev)
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    token = torch.full((b * k,), START, dtype=torch.long, device=dev)
    rows = torch.arange(b, device=dev)
    for t in range(max_len):
        logp = torch.log_softmax(_mask_logits(decoder.step(token, cache, t), t, min_len, forbidden), dim=-1)
        cand = scores[..., None] + logp.view(b, k, -1)  # [B, K, V]
        vocab = cand.shape[-1]
        norm = float(t + 1) ** length_penalty
        # hypotheses finishing here: the best one per item may replace the item's best so far
        end_score, end_beam = (cand[..., END] / norm).max(dim=1)
        better = (end_score > best) & ~done
        best = torch.where(better, end_score, best)
        best_seq[better] = seqs[rows, end_beam][better]
        cand[..., END] = float("-inf")
        top, idx = cand.view(b, -1).topk(k, dim=1)
        beam, word = idx // vocab, idx % vocab
        scores = top
        seqs = seqs[rows[:, None], beam]
        seqs[:, :, t] = word
        decoder.reorder(cache, (beam + rows[:, None] * k).view(-1))
        token = word.view(-1)
        if t + 1 == max_len:  # out of length: live beams are candidates as they are
            live, live_beam = (scores / float(max_len) ** length_penalty).max(dim=1)
            better = (live > best) & ~done
            best_seq[better] = seqs[rows, live_beam][better]
        done = done | (best >= scores[:, 0] / norm)
        if bool(done.all()):
            break
    return _trim(best_seq)
