"""Text-to-pair retrieval protocol (SPEC §2.4), hand-computed, and the BM25 caption baseline."""

from __future__ import annotations

import numpy as np
import pytest

from changeagent.errors import ChangeAgentError
from changeagent.metrics.retrieval import (
    bm25_scores,
    hit_probabilities,
    queries_of,
    retrieval_metrics,
    retrieval_report,
)

NC = ["there is no difference", "the two scenes seem identical", "the scene is the same as before",
      "no change has occurred", "almost nothing has changed"]


def test_hits_hand_computed_with_no_change_rule() -> None:
    # 3 pairs: 0 change, 1 no-change, 2 no-change; 3 queries
    scores = np.array([
        [0.1, 0.9, 0.5],   # change query of pair 0: pairs ranked 1, 2, 0 -> rank 3
        [0.9, 0.1, 0.5],   # no-change query of pair 1: ranked 0, 2, 1 -> pair 2 is relevant -> rank 2
        [0.9, 0.1, 0.5],   # the same scores as a change query of pair 1 -> rank 3
    ])
    hits, rr = hit_probabilities(scores, np.array([0, 1, 1]), np.array([False, True, False]),
                                 np.array([False, True, True]), ks=(1, 2, 3))
    assert hits.tolist() == [[0, 0, 1], [0, 1, 1], [0, 0, 1]]
    assert rr.tolist() == pytest.approx([1 / 3, 1 / 2, 1 / 3])


def test_ties_are_broken_at_random_in_expectation() -> None:
    # all 3 pairs tie: the own pair is equally likely at rank 1, 2 or 3
    hits, rr = hit_probabilities(np.zeros((1, 3)), np.array([2]), np.array([False]), np.zeros(3, bool), ks=(1, 2, 3))
    assert hits[0].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert rr[0] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    # a no-change query tied with 4 pairs of which 2 are no-change, one better irrelevant pair above:
    # first relevant at tied position 1 w.p. 2/4, 2 w.p. 2/4 * 2/3, 3 w.p. 2/4 * 1/3 * 2/2
    scores = np.array([[0.0, 0.0, 0.0, 0.0, 1.0]])
    hits, rr = hit_probabilities(scores, np.array([0]), np.array([True]),
                                 np.array([True, True, False, False, False]), ks=(1, 2, 3, 4))
    assert hits[0].tolist() == pytest.approx([0.0, 1 / 2, 1 / 2 + 1 / 3, 1.0])
    assert rr[0] == pytest.approx(1 / 2 / 2 + 1 / 3 / 3 + 1 / 6 / 4)


def test_metrics_hand_computed() -> None:
    # 12 pairs; query 0 (change) finds its pair at rank 1, query 1 (change) at rank 6, query 2 (no-change)
    # finds another no-change pair at rank 2, query 3 (change) at rank 12 (past the MRR cut-off)
    n = 12
    scores = np.tile(-np.arange(n, dtype=float), (4, 1))  # every query ranks pairs 0, 1, 2, ...
    owner = np.array([0, 5, 7, 11])
    qnc = np.array([False, False, True, False])
    pnc = np.zeros(n, bool)
    pnc[[1, 7]] = True
    m = retrieval_metrics(scores, owner, qnc, pnc)
    assert m["r1"] == pytest.approx(1 / 4)
    assert m["r5"] == pytest.approx(2 / 4)
    assert m["r10"] == pytest.approx(3 / 4)
    assert m["mrr10"] == pytest.approx((1 + 1 / 6 + 1 / 2 + 0) / 4)
    assert m["change_r1"] == pytest.approx(1 / 3)
    assert m["change_r5"] == pytest.approx(1 / 3)
    assert m["change_r10"] == pytest.approx(2 / 3)
    assert m["change_mrr10"] == pytest.approx((1 + 1 / 6) / 3)
    assert (m["n_queries"], m["n_change_queries"], m["n_pairs"]) == (4, 3, 12)


def test_queries_of_flags_no_change_sentences() -> None:
    refs = [["a road is built", "a new road"], [NC[0], "The scene is the same as before."]]
    texts, owner, qnc, pnc = queries_of(refs, [1, 0])
    assert texts == refs[0] + refs[1]
    assert owner.tolist() == [0, 0, 1, 1]
    assert qnc.tolist() == [False, False, True, True]
    assert pnc.tolist() == [False, True]
    _, _, _, pnc2 = queries_of(refs, None)  # without flags: all references no-change
    assert pnc2.tolist() == [False, True]


def test_bm25_hand_computed() -> None:
    docs = [["a", "road"], ["a", "building", "building"]]
    s = bm25_scores([["road"], ["building"], ["tree"]], docs, k1=1.5, b=0.75)
    idf = np.log1p((2 - 1 + 0.5) / (1 + 0.5))
    avgdl = 2.5
    road = idf * 1 * 2.5 / (1 + 1.5 * (0.25 + 0.75 * 2 / avgdl))
    building = idf * 2 * 2.5 / (2 + 1.5 * (0.25 + 0.75 * 3 / avgdl))
    assert s[0].tolist() == pytest.approx([road, 0.0], rel=1e-6)
    assert s[1].tolist() == pytest.approx([0.0, building], rel=1e-6)
    assert s[2].tolist() == [0.0, 0.0]


def test_report_learned_and_baseline() -> None:
    refs = [["a road is built"] * 2, ["two buildings appear"] * 2, [NC[2], NC[3]]]
    emb = np.eye(3, dtype=np.float32)
    text = np.repeat(emb, 2, axis=0)  # every caption embeds onto its own pair: perfect retrieval
    gen = ["a road is built", "a road is built", "the scene is the same as before"]
    rep = retrieval_report(refs, [1, 1, 0], gen, emb, text)
    assert rep["retrieval"]["r1"] == 1.0 and rep["retrieval"]["change_mrr10"] == 1.0
    base = rep["retrieval_baseline"]
    # "a road is built" (pair 0) ties pairs 0 and 1 on top: rank 1 or 2; "two buildings appear"
    # (pair 1) matches nothing: all 3 tie; NC[2] matches pair 2 best; NC[3] matches nothing: all tie,
    # and only pair 2 is no-change
    assert base["change_r1"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3 + 1 / 3) / 4)
    assert base["r1"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3 + 1 / 3 + 1 + 1 / 3) / 6)
    third = (1 + 1 / 2 + 1 / 3) / 3
    assert base["mrr10"] == pytest.approx((0.75 + 0.75 + third + third + 1 + third) / 6)
    with pytest.raises(ChangeAgentError, match="caption embeddings"):
        retrieval_report(refs, [1, 1, 0], None, emb, text[:4])
