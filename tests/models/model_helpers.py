"""Tiny model configs shared by the model tests (64 px inputs, widths of 16-32)."""

from __future__ import annotations

from typing import Any

import torch

from changeagent.data.constants import END, NULL, START
from changeagent.models.caption_decoder import CaptionDecoder
from changeagent.models.memory import TokenMemory

VOCAB = 24


def tiny_neck(name: str) -> dict[str, Any]:
    if name == "transformer":
        return {"name": "transformer", "dim": 32, "depth": 1, "heads": 2, "ffn_ratio": 2}
    if name == "mamba":
        return {"name": "mamba", "dim": 32, "depth": 1, "d_state": 4, "expand": 1}
    return {"name": name, "dim": 32}


def tiny_cfg(encoder: str = "resnet18", neck: str = "transformer", **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "encoder": encoder,
        "neck": tiny_neck(neck),
        "mask_decoder": {"channels": 16},
        "memory": {"dim": 32},
        "caption_decoder": {"layers": 2, "heads": 2, "ffn_ratio": 2, "dropout": 0.0},
    }
    cfg.update(extra)
    return cfg


def captions(batch: int, length: int, vocab: int = VOCAB, seed: int = 0) -> torch.Tensor:
    """int64 [B, L]: <START> random words <END>."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(4, vocab, (batch, length), generator=g)
    c[:, 0], c[:, -1] = START, END
    return c


def fitted_decoder(items: int = 6, steps: int = 40) -> tuple[CaptionDecoder, torch.Tensor]:
    """A tiny decoder fitted to give each of `items` memories its own caption (lengths 2-9).

    A random decoder ignores its memory and says the same thing for every item, which would make
    batched-vs-single decoding tests vacuous. Returns (decoder in eval mode, memory [items, 13, 32])
    of slightly perturbed inputs, so decoding is not a copy of the training targets.
    """
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    mem = TokenMemory([16], dim=32, num_datasets=2)
    dec = CaptionDecoder(VOCAB, 32, layers=2, heads=4, ffn_ratio=2, dropout=0.0)
    maps = torch.randn(items, 16, 3, 4, generator=g)
    caps = torch.full((items, 11), NULL)
    for i in range(items):
        n = 2 + (i * 3) % 8
        caps[i, 0], caps[i, n + 1] = START, END
        caps[i, 1:n + 1] = torch.randint(4, VOCAB, (n,), generator=g)
    ids = torch.arange(items) % 3
    opt = torch.optim.Adam([*mem.parameters(), *dec.parameters()], lr=3e-3)
    for _ in range(steps):
        logits = dec(mem([maps], ids), caps)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), caps[:, 1:].flatten(), ignore_index=NULL)
        opt.zero_grad()
        loss.backward()
        opt.step()
    dec.eval()
    with torch.no_grad():
        memory = mem([maps + 0.7 * torch.randn(maps.shape, generator=g)], ids)
    return dec, memory
