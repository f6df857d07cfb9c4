"""Text-driven change retrieval: the protocol of SPEC §2.4 and the caption-matching baseline.

Protocol (Ferrod et al. on LEVIR-CC): every reference caption of every test pair is a query over all
test pairs. The relevant item of a query is its own pair; a no-change query (its sentence is one of
the no-change sentences) has every no-change pair relevant too. Per query, rank the pairs by score;
Recall@k = 1 when a relevant pair is among the top k; MRR@10 = 1 / rank of the first relevant pair,
0 past rank 10. Means over all queries and over the change queries (`change_*`). Tied scores are
broken uniformly at random, in expectation (see `hit_probabilities`).

Baseline (`caption_match_scores`): Okapi BM25 between the query and each pair's *generated* caption
-- what a captioning-only system can do -- ranked by the same protocol.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from changeagent.data.constants import NO_CHANGE_SENTENCES
from changeagent.data.vocab import tokenize
from changeagent.errors import ChangeAgentError

KS = (1, 5, 10)
MRR_AT = 10


def _norm(sentence: str) -> str:
    return " ".join(tokenize(sentence))


def no_change_set(extra: Iterable[str] = ()) -> set[str]:
    """The five no-change sentences of SPEC §1.1 plus `extra` (a dataset's own), tokenised."""
    return {_norm(s) for s in (*NO_CHANGE_SENTENCES, *extra)}


def relevance(query_pair: np.ndarray, query_no_change: np.ndarray,
              pair_no_change: np.ndarray, n: int) -> np.ndarray:
    """bool [Q, N]: pair j is relevant to query q (its own pair, or any no-change pair for a
    no-change query)."""
    rel = np.arange(n)[None, :] == np.asarray(query_pair)[:, None]
    return rel | (np.asarray(query_no_change, bool)[:, None] & np.asarray(pair_no_change, bool)[None, :])


def hit_probabilities(scores: np.ndarray, query_pair: np.ndarray, query_no_change: np.ndarray,
                      pair_no_change: np.ndarray, ks: Sequence[int] = KS, mrr_at: int = MRR_AT,
                      chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per query: P(a relevant pair in the top k) float64 [Q, len(ks)] and E[1/rank of the first
    relevant pair, 0 past `mrr_at`] float64 [Q], with ties in score broken uniformly at random.

    Exact expectations, not a sampled tie-break: with b irrelevant pairs scored above the best
    relevant score s*, t pairs scored exactly s* of which r are relevant, the first relevant rank is
    b + j with P(j) = C(t - j, r - 1) / C(t, r). Without ties this is the plain rank (0/1 hits).
    (A caption-matching ranking ties whole groups of pairs with the same generated caption; a fixed
    tie-break by pair order would reward or punish it by where the relevant pairs happen to sit.)
    scores float [Q, N] (higher = better); query_pair int [Q]; query_no_change bool [Q]; pair_no_change bool [N].
    """
    scores = np.asarray(scores)
    q, n = scores.shape
    query_pair = np.asarray(query_pair, np.int64)
    if query_pair.shape != (q,) or np.shape(query_no_change) != (q,) or np.shape(pair_no_change) != (n,):
        raise ChangeAgentError(f"retrieval: scores {scores.shape} do not match query_pair {query_pair.shape}, "
                               f"query_no_change {np.shape(query_no_change)}, pair_no_change {np.shape(pair_no_change)}")
    if q and (query_pair.min() < 0 or query_pair.max() >= n):
        raise ChangeAgentError(f"retrieval: query_pair indices must be in [0, {n})")
    qnc = np.asarray(query_no_change, bool)
    hits = np.zeros((q, len(ks)), np.float64)
    rr = np.zeros(q, np.float64)
    depth = max(max(ks), mrr_at)
    for s in range(0, q, chunk):
        sc = scores[s : s + chunk].astype(np.float64)
        rel = relevance(query_pair[s : s + chunk], qnc[s : s + chunk], pair_no_change, n)
        best = np.where(rel, sc, -np.inf).max(1, keepdims=True)  # s*: the own pair is always relevant
        before = ((sc > best) & ~rel).sum(1)  # every pair above s* is irrelevant by definition of s*
        tied = (sc == best).sum(1)
        tied_rel = ((sc == best) & rel).sum(1)
        for i, (b, t, r) in enumerate(zip(before.tolist(), tied.tolist(), tied_rel.tolist())):
            # p_first[j-1] = P(the first relevant of the tied group sits at its position j)
            p_first, none_yet = [], 1.0
            for j in range(1, min(t - r + 1, depth - b) + 1):
                p_first.append(none_yet * r / (t - j + 1))
                none_yet *= (t - r - j + 1) / (t - j + 1)
            cum = np.cumsum(p_first) if p_first else np.zeros(0)
            for ki, k in enumerate(ks):
                m = k - b
                hits[s + i, ki] = 0.0 if m <= 0 else float(cum[min(m, len(cum)) - 1])
            rr[s + i] = sum(p / (b + j) for j, p in enumerate(p_first, start=1) if b + j <= mrr_at)
    return hits, rr


def retrieval_metrics(scores: np.ndarray, query_pair: np.ndarray, query_no_change: np.ndarray,
                      pair_no_change: np.ndarray) -> dict[str, Any]:
    """The protocol's numbers: r1, r5, r10, mrr10 over all queries, change_* over change queries,
    and the counts n_queries, n_change_queries, n_pairs (fractions; None for no queries)."""
    hits, rr = hit_probabilities(scores, query_pair, query_no_change, pair_no_change)
    change = ~np.asarray(query_no_change, bool)
    out: dict[str, Any] = {}
    for prefix, sel in (("", slice(None)), ("change_", change)):
        h, r = hits[sel], rr[sel]
        for ki, k in enumerate(KS):
            out[f"{prefix}r{k}"] = float(h[:, ki].mean()) if len(r) else None
        out[f"{prefix}mrr{MRR_AT}"] = float(r.mean()) if len(r) else None
    out.update(n_queries=int(len(rr)), n_change_queries=int(change.sum()), n_pairs=int(np.shape(scores)[1]))
    return out


def queries_of(references: Sequence[Sequence[str]], pair_flags: Sequence[int] | None = None,
               extra_no_change: Iterable[str] = ()) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Protocol queries from the pairs' reference captions.

    references: per pair its captions; pair_flags: per pair its changeflag (1 change, 0 none), or None
    to call a pair no-change when every one of its references is a no-change sentence. A query is a
    no-change query when its sentence is in `no_change_set(extra_no_change)` (the five sentences
    plus a dataset's own no-change sentences, if it has others).
    Returns (query texts [Q], query_pair int64 [Q], query_no_change bool [Q], pair_no_change bool [N]).
    """
    nc = no_change_set(extra_no_change)
    texts: list[str] = []
    owner: list[int] = []
    for i, refs in enumerate(references):
        for r in refs:
            texts.append(r)
            owner.append(i)
    qnc = np.array([_norm(t) in nc for t in texts], bool)
    if pair_flags is None:
        pnc = np.array([bool(refs) and all(_norm(r) in nc for r in refs) for refs in references], bool)
    else:
        pnc = np.array([int(f) == 0 for f in pair_flags], bool)
    return texts, np.array(owner, np.int64), qnc, pnc


def bm25_scores(queries: Sequence[Sequence[str]], documents: Sequence[Sequence[str]],
                k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """Okapi BM25 of each tokenised query against each tokenised document: float32 [Q, N].

    idf(t) = ln(1 + (N - n_t + 0.5) / (n_t + 0.5)) (the non-negative Lucene form); repeated query
    words count once per occurrence; words absent from every document score 0.
    """
    terms: dict[str, int] = {}
    for doc in documents:
        for t in doc:
            terms.setdefault(t, len(terms))
    n, v = len(documents), len(terms)
    tf = np.zeros((n, v), np.float64)
    for i, doc in enumerate(documents):
        for t, c in Counter(doc).items():
            tf[i, terms[t]] = c
    dl = tf.sum(1)
    avgdl = dl.mean() if n and dl.mean() > 0 else 1.0
    df = (tf > 0).sum(0)
    idf = np.log1p((n - df + 0.5) / (df + 0.5))
    weight = idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl[:, None] / avgdl))  # [N, V]
    qm = np.zeros((len(queries), v), np.float64)
    for i, q in enumerate(queries):
        for t, c in Counter(q).items():
            if t in terms:
                qm[i, terms[t]] = c
    return (qm @ weight.T).astype(np.float32)


def caption_match_scores(queries: Sequence[str], generated: Sequence[str]) -> np.ndarray:
    """The baseline's scores [Q, N]: BM25 of each query against each pair's generated caption."""
    return bm25_scores([tokenize(q) for q in queries], [tokenize(g) for g in generated])


def retrieval_report(references: Sequence[Sequence[str]], pair_flags: Sequence[int] | None,
                     generated: Sequence[str] | None = None, pair_emb: np.ndarray | None = None,
                     text_emb: np.ndarray | None = None) -> dict[str, Any]:
    """{"retrieval": learned-head metrics (when embeddings are given), "retrieval_baseline": BM25 over
    the generated captions (when they are given)}.

    pair_emb float [N, D]; text_emb float [Q, D], one row per reference caption in pair order (the
    order of `queries_of`), both L2-normalised.
    """
    texts, owner, qnc, pnc = queries_of(references, pair_flags)
    out: dict[str, Any] = {}
    if not texts:
        return out
    if pair_emb is not None and text_emb is not None:
        if text_emb.shape[0] != len(texts) or pair_emb.shape[0] != len(references):
            raise ChangeAgentError(f"retrieval: {text_emb.shape[0]} caption embeddings for {len(texts)} captions, "
                                   f"{pair_emb.shape[0]} pair embeddings for {len(references)} pairs")
        out["retrieval"] = retrieval_metrics(text_emb.astype(np.float32) @ pair_emb.astype(np.float32).T,
                                             owner, qnc, pnc)
    if generated is not None:
        out["retrieval_baseline"] = {"method": "bm25 over generated captions",
                                     **retrieval_metrics(caption_match_scores(texts, generated), owner, qnc, pnc)}
    return out

