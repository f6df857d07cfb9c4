"""The evaluator's retrieval hook: embeddings per evaluated pair, then SPEC §2.4 on rank 0."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def retrieval_embeddings(model: Any, vocab: Any, pair_emb: torch.Tensor, refs: list[list[str]],
                         device: torch.device) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per pair: its embedding float32 [D] and its reference captions' embeddings float32 [R, D]."""
    from changeagent.models.retrieval import encode_texts

    flat = [r for rs in refs for r in rs]
    text = model.embed_text(encode_texts(vocab, flat).to(device)).float().cpu().numpy()
    out, at = [], 0
    for p, rs in zip(pair_emb.float().cpu().numpy(), refs):
        out.append((p, text[at : at + len(rs)]))
        at += len(rs)
    return out


def retrieval_scores(gathered: list[tuple[str, str, list[str], int]],
                     emb: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """SPEC §2.4 over the evaluated pairs (`gathered`: (name, generated caption, references, changeflag)):
    "retrieval" (learned head, when `emb` has one entry per pair) and "retrieval_baseline" (BM25 of
    each reference caption against the generated captions)."""
    from changeagent.metrics.retrieval import retrieval_report

    refs = [c[2] for c in gathered]
    pair = np.stack([e[0] for e in emb]) if emb else None
    text = np.concatenate([e[1] for e in emb]) if emb else None
    return retrieval_report(refs, [c[3] for c in gathered], [c[1] for c in gathered], pair, text)
