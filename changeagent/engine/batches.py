"""Per-step batch preparation: which caption of each item is trained on (reproducible, off the
global RNG), the retrieval head's captions, and moving a batch to the device."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from changeagent.data.vocab import Vocabulary


def choose_captions(caption_ids: torch.Tensor, seed: int, step: int, micro: int, rank: int) -> torch.Tensor:
    """int64 [B, 5, L] -> [B, L]: one of each item's captions, drawn from a generator keyed on
    (seed, step, micro-step, rank) so the choice is reproducible and independent of the global RNG."""
    key = hashlib.blake2b(f"{seed}/{step}/{micro}/{rank}".encode(), digest_size=8).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(key, "little") & (2**63 - 1))
    b, n = caption_ids.shape[:2]
    pick = torch.randint(n, (b,), generator=gen)
    return caption_ids[torch.arange(b), pick]


def retrieval_captions(caps: torch.Tensor, vocab: Vocabulary, seed: int, step: int, micro: int,
                       rank: int) -> torch.Tensor | None:
    """int64 [B, L] -> the captions the retrieval head is trained on, or None when they are `caps`.

    The reference trick gives every no-change train pair five copies of CANONICAL_NO_CHANGE, so the
    caption encoder would never see the other four no-change sentences that are half of the
    no-change queries at test time: those rows get one of the five, drawn like `choose_captions`.
    """
    from changeagent.data.constants import CANONICAL_NO_CHANGE, NO_CHANGE_SENTENCES

    width = caps.shape[1]
    canon = torch.tensor(vocab.encode(CANONICAL_NO_CHANGE, max_len=width), dtype=caps.dtype)
    rows = (caps.cpu() == canon).all(1)
    if not bool(rows.any()):
        return None
    choices = torch.tensor([vocab.encode(s, max_len=width) for s in NO_CHANGE_SENTENCES], dtype=caps.dtype)
    key = hashlib.blake2b(f"retrieval/{seed}/{step}/{micro}/{rank}".encode(), digest_size=8).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(key, "little") & (2**63 - 1))
    pick = torch.randint(len(NO_CHANGE_SENTENCES), (caps.shape[0],), generator=gen)
    out = caps.cpu().clone()
    out[rows] = choices[pick[rows]]
    return out


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
