"""Retrieval loss: symmetric InfoNCE between pair and caption embeddings with in-batch negatives.

For a batch of B (pair, caption) rows, logits[i, j] = scale * <text_i, pair_j>. Caption i's
positive is pair i; the other pairs are its negatives, except pairs that are not really different
from it for retrieval: pair j whose own caption is the same sentence (identical ids), and, when both
i and j are no-change pairs, every such j (the protocol of SPEC §2.4 counts every no-change pair as
relevant to a no-change query). Those entries are removed from the softmax (set to -inf) in both
directions. Under DDP the negatives are the rank's own batch (no all-gather).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from changeagent.data.constants import NULL
from changeagent.errors import ChangeAgentError


def not_negatives(caption_ids: Tensor, changeflag: Tensor | None) -> Tensor:
    """bool [B, B]: True where pair j must not be a negative of caption i (diagonal False).

    caption_ids int64 [B, L] (one caption per row); changeflag int [B] (0 = no-change pair) or None.
    """
    same = (caption_ids[:, None, :] == caption_ids[None, :, :]).all(-1)
    if changeflag is not None:
        nc = changeflag.reshape(-1) == 0
        same = same | (nc[:, None] & nc[None, :])
    eye = torch.eye(same.shape[0], dtype=torch.bool, device=same.device)
    return same & ~eye


def contrastive_loss(pair_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float,
                     caption_ids: Tensor, changeflag: Tensor | None = None) -> Tensor:
    """Mean of the caption->pair and pair->caption cross-entropies (float32 scalar).

    pair_emb, text_emb: float [B, D], L2-normalised; logit_scale: inverse temperature (scalar);
    caption_ids: int64 [B, L], the captions text_emb was computed from (an all-<NULL> row = an item
    without captions, left out); changeflag: int [B]. A graph-connected 0 when fewer than two rows
    have captions.
    """
    if pair_emb.ndim != 2 or pair_emb.shape != text_emb.shape:
        raise ChangeAgentError(f"retrieval loss: pair_emb {tuple(pair_emb.shape)} and text_emb "
                               f"{tuple(text_emb.shape)} must both be [B, D]")
    if caption_ids.ndim != 2 or caption_ids.shape[0] != pair_emb.shape[0]:
        raise ChangeAgentError(f"retrieval loss: caption_ids {tuple(caption_ids.shape)} must be [B={pair_emb.shape[0]}, L]")
    if changeflag is not None and changeflag.numel() != pair_emb.shape[0]:
        raise ChangeAgentError(f"retrieval loss: {changeflag.numel()} change flags for a batch of {pair_emb.shape[0]}")
    # rows without a caption (mask-only datasets: all <NULL>) take no part; < 2 rows: nothing to contrast
    has = (caption_ids != NULL).any(1)
    if int(has.sum()) < 2:
        return (pair_emb.float().sum() + text_emb.float().sum()) * 0.0
    if not bool(has.all()):
        pair_emb, text_emb, caption_ids = pair_emb[has], text_emb[has], caption_ids[has]
        changeflag = None if changeflag is None else changeflag.reshape(-1)[has]
    logits = text_emb.float() @ pair_emb.float().t() * logit_scale  # [B texts, B pairs]
    drop = not_negatives(caption_ids, changeflag)
    logits = logits.masked_fill(drop, float("-inf"))  # symmetric mask: serves both directions
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
