"""SECOND SCD metrics (OA, mIoU, SeK, Fscd, Score): every expected number below is computed by hand,
or by the independent plain-Python version of the published per-date protocol at the end."""

from __future__ import annotations

import math

import pytest
import torch

from changeagent.errors import ChangeAgentError
from changeagent.metrics import SemanticChangeMetrics, semantic_change_scores, transition_labels


def test_transition_labels_cover_1_to_36() -> None:
    a = torch.tensor([1, 1, 2, 6, 6, 0, 3, 0])
    b = torch.tensor([1, 6, 1, 5, 6, 0, 0, 4])
    # (a - 1) * 6 + b; either date unchanged -> 0
    assert transition_labels(a, b).tolist() == [1, 6, 7, 35, 36, 0, 0, 0]
    every = torch.arange(1, 7)
    labels = transition_labels(every.repeat_interleave(6), every.repeat(6))
    assert labels.tolist() == list(range(1, 37))


def test_scores_of_a_hand_made_confusion_matrix() -> None:
    cm = torch.tensor([[6, 1, 1],
                       [1, 3, 1],
                       [0, 1, 2]])  # rows target, cols prediction, 0 = unchanged
    out = semantic_change_scores(cm)
    # tn 6, fp 1+1, fn 1+0, tp 3+1+1+2 = 7
    assert out["oa"] == pytest.approx((6 + 3 + 2) / 16)
    assert out["iou_unchanged"] == pytest.approx(6 / 9)
    assert out["iou_changed"] == pytest.approx(7 / 10)
    assert out["miou"] == pytest.approx(41 / 60)
    # [0,0] zeroed: n 10, po 5/10; rows 2,5,3 cols 1,5,4 -> pe (2 + 25 + 12) / 100
    assert out["kappa_n0"] == pytest.approx(11 / 61)
    assert out["sek"] == pytest.approx(11 / 61 * math.exp(7 / 10 - 1))
    # semantic TP 3 + 2 over 9 predicted changed and 8 target changed
    assert out["precision_sc"] == pytest.approx(5 / 9)
    assert out["recall_sc"] == pytest.approx(5 / 8)
    assert out["fscd"] == pytest.approx(10 / 17)
    assert semantic_change_scores(cm.T)["sek"] == pytest.approx(out["sek"])  # orientation-free, as published


def _hand_case() -> SemanticChangeMetrics:
    # five pixels (date A, date B):  target            prediction
    #   1  unchanged both             (0,0) -> 0        (0,0) -> 0
    #   2  false alarm                (0,0) -> 0        (4,5) -> 23
    #   3  right transition           (1,3) -> 3        (1,3) -> 3
    #   4  change, wrong B class      (2,2) -> 8        (2,1) -> 7
    #   5  missed (pred A is 0)       (1,4) -> 4        (0,4) -> 0 (one-sided = unchanged)
    m = SemanticChangeMetrics()
    m.update(torch.tensor([[0, 4, 1, 2, 0]]), torch.tensor([[0, 5, 3, 1, 4]]),
             torch.tensor([[0, 0, 1, 2, 1]]), torch.tensor([[0, 0, 3, 2, 4]]))
    return m


def test_transition_protocol_by_hand() -> None:
    m = _hand_case()
    cells = {(int(i), int(j)): int(m.confmat[i, j]) for i, j in m.confmat.nonzero()}
    assert cells == {(0, 0): 1, (0, 23): 1, (3, 3): 1, (8, 7): 1, (4, 0): 1}
    out = m.compute()
    assert out["transition_oa"] == pytest.approx(2 / 5)
    assert out["transition_iou_unchanged"] == pytest.approx(1 / 3)  # tn 1, fp 1, fn 1
    assert out["transition_iou_changed"] == pytest.approx(2 / 4)  # tp 2 (pixels 3, 4)
    assert out["transition_miou"] == pytest.approx(5 / 12)
    # [0,0] zeroed: 4 pixels, 1 on the diagonal; only labels 0 and 3 have row and column mass: pe 2/16
    assert out["transition_kappa_n0"] == pytest.approx((1 / 4 - 1 / 8) / (1 - 1 / 8))
    assert out["transition_sek"] == pytest.approx(1 / 7 * math.exp(-1 / 2))
    assert out["transition_precision_sc"] == pytest.approx(1 / 3)
    assert out["transition_recall_sc"] == pytest.approx(1 / 3)
    assert out["transition_fscd"] == pytest.approx(1 / 3)


def test_headline_keys_are_the_per_date_protocol_by_hand() -> None:
    out = _hand_case().compute()
    # ten (target, pred) pairs: A (0,0) (0,4) (1,1) (2,2) (1,0); B (0,0) (0,5) (3,3) (2,1) (4,4)
    # tn 2, fp 2, fn 1, tp 5; semantic TP 4
    assert out["oa"] == pytest.approx(6 / 10)
    assert out["iou_unchanged"] == pytest.approx(2 / 5)
    assert out["iou_changed"] == pytest.approx(5 / 8)
    assert out["miou"] == pytest.approx(41 / 80)
    # [0,0] zeroed: n 8, po 4/8; rows 2,2,2,1,1,0,0 cols 1,2,1,1,2,1,0 -> pe (2+4+2+1+2) / 64
    assert out["kappa_n0"] == pytest.approx(21 / 53)
    assert out["sek"] == pytest.approx(21 / 53 * math.exp(5 / 8 - 1))
    assert out["precision_sc"] == pytest.approx(4 / 7)
    assert out["recall_sc"] == pytest.approx(4 / 6)
    assert out["fscd"] == pytest.approx(8 / 13)
    assert out["score"] == pytest.approx(0.3 * 41 / 80 + 0.7 * 21 / 53 * math.exp(5 / 8 - 1))


def test_perfect_prediction_scores_one() -> None:
    a = torch.tensor([[0, 1, 2, 5, 0]])
    b = torch.tensor([[0, 3, 6, 5, 0]])
    m = SemanticChangeMetrics()
    m.update(a, b, a, b)
    out = m.compute()
    for key in ("oa", "miou", "sek", "fscd", "score", "transition_oa", "transition_sek", "transition_fscd"):
        assert out[key] == pytest.approx(1.0), key


def test_kappa_conventions_for_degenerate_matrices() -> None:
    empty = semantic_change_scores(torch.zeros(3, 3))
    assert empty["kappa_n0"] == 0.0 and math.isnan(empty["oa"]) and math.isnan(empty["sek"])
    # one changed class only: chance agreement is 1, kappa 0 by the SCD convention, so SeK 0
    one = semantic_change_scores(torch.tensor([[5, 0], [0, 3]]))
    assert one["kappa_n0"] == 0.0 and one["sek"] == 0.0 and one["fscd"] == 1.0


def test_ignore_index_and_stacked_update() -> None:
    pa, pb = torch.tensor([[0, 4, 1, 2, 0, 3]]), torch.tensor([[0, 5, 3, 1, 4, 3]])
    ta, tb = torch.tensor([[0, 0, 1, 2, 1, 255]]), torch.tensor([[0, 0, 3, 2, 4, 255]])
    m = SemanticChangeMetrics()
    m.update_stacked(torch.stack([pa, pb], 1), torch.stack([ta, tb], 1))
    ref = _hand_case()
    assert torch.equal(m.confmat, ref.confmat) and torch.equal(m.confmat_per_date, ref.confmat_per_date)


def test_merge_state_equals_single_pass() -> None:
    g = torch.Generator().manual_seed(1)
    ta = torch.randint(0, 7, (4, 8, 8), generator=g)
    tb = torch.where(ta > 0, torch.randint(1, 7, ta.shape, generator=g), 0)
    pa, pb = (torch.randint(0, 7, ta.shape, generator=g) for _ in range(2))
    whole = SemanticChangeMetrics()
    whole.update(pa, pb, ta, tb)
    left, right = SemanticChangeMetrics(), SemanticChangeMetrics()
    left.update(pa[:2], pb[:2], ta[:2], tb[:2])
    right.update(pa[2:], pb[2:], ta[2:], tb[2:])
    left.merge_state(right)
    assert torch.equal(left.confmat, whole.confmat)
    assert left.compute() == whole.compute()


def test_bad_input_raises() -> None:
    z = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ChangeAgentError, match="disagree on which pixels changed"):
        SemanticChangeMetrics().update(z, z, torch.tensor([[0, 2, 0]]), torch.tensor([[0, 0, 0]]))
    with pytest.raises(ChangeAgentError, match="class id 7"):
        SemanticChangeMetrics().update(z + 7, z, z, z)
    with pytest.raises(ChangeAgentError, match="shape mismatch"):
        SemanticChangeMetrics().update(z, z[:, :2], z, z)
    with pytest.raises(ChangeAgentError, match=r"\[B, 2, H, W\]"):
        SemanticChangeMetrics().update_stacked(z, z)


def _published_protocol(pred_a, pred_b, target_a, target_b) -> dict:
    """Independent, deliberately plain version of the public SCD evaluation: one 7x7 histogram over
    both dates' maps (rows target, columns prediction), then OA, mIoU, SeK, Fscd and Score."""
    hist = [[0] * 7 for _ in range(7)]
    for preds, targets in ((pred_a, target_a), (pred_b, target_b)):
        for p, t in zip(preds.flatten().tolist(), targets.flatten().tolist()):
            hist[t][p] += 1
    total = sum(map(sum, hist))
    oa = sum(hist[i][i] for i in range(7)) / total
    tn = hist[0][0]
    fp = sum(hist[0][1:])
    fn = sum(hist[i][0] for i in range(1, 7))
    tp = sum(hist[i][j] for i in range(1, 7) for j in range(1, 7))
    iou_u, iou_c = tn / (tn + fp + fn), tp / (tp + fp + fn)
    n0 = [row[:] for row in hist]
    n0[0][0] = 0
    n = sum(map(sum, n0))
    po = sum(n0[i][i] for i in range(7)) / n
    pe = sum(sum(n0[i]) * sum(n0[k][i] for k in range(7)) for i in range(7)) / n ** 2
    kappa = 0.0 if pe == 1 else (po - pe) / (1 - pe)
    sek = kappa * math.exp(iou_c) / math.e
    sc_tp = sum(hist[i][i] for i in range(1, 7))
    precision, recall = sc_tp / (tp + fp), sc_tp / (tp + fn)
    miou = (iou_u + iou_c) / 2
    return {"oa": oa, "miou": miou, "sek": sek, "fscd": 2 * precision * recall / (precision + recall),
            "score": 0.3 * miou + 0.7 * sek}


def test_headline_keys_match_an_independent_published_protocol() -> None:
    g = torch.Generator().manual_seed(7)
    for _ in range(3):
        ta = torch.randint(0, 7, (3, 16, 16), generator=g)
        tb = torch.where(ta > 0, torch.randint(1, 7, ta.shape, generator=g), 0)
        # a realistic prediction: unchanged unless "the change head" fires, then a class per date
        changed = torch.rand(ta.shape, generator=g) < 0.5
        pa = torch.where(changed, torch.randint(1, 7, ta.shape, generator=g), 0)
        pb = torch.where(changed, torch.randint(1, 7, ta.shape, generator=g), 0)
        m = SemanticChangeMetrics()
        m.update(pa, pb, ta, tb)
        ours = m.compute()
        ref = _published_protocol(pa, pb, ta, tb)
        for key, value in ref.items():
            assert ours[key] == pytest.approx(value, rel=1e-9), key
        assert ours["transition_sek"] != pytest.approx(ours["sek"])  # the 37-class variant is another number
