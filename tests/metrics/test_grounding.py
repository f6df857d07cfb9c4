"""Grounding metrics (SPEC §9) against hand-computed values; the RCD assembly and its SeK scoring."""

from __future__ import annotations

import math

import pytest
import torch

from changeagent.errors import ChangeAgentError
from changeagent.metrics.grounding import (
    GroundingMetrics,
    ReferringChangeMetrics,
    assemble_semantic_map,
    binarize,
    grounding_scores,
    sample_iou,
)
from changeagent.metrics.semantic_change import semantic_change_scores


def masks(*pixel_sets: set[int], side: int = 3) -> torch.Tensor:
    """bool [N, side, side] with the given flat pixel indices set."""
    out = torch.zeros(len(pixel_sets), side * side, dtype=torch.bool)
    for i, s in enumerate(pixel_sets):
        out[i, list(s)] = True
    return out.view(-1, side, side)


# five samples:            target               prediction       I  U  IoU
#   0 class                {0, 1}               {1, 2}           1  3  1/3
#   1 class                {0, 1, 2, 3}         {0, 1, 2, 3}     4  4  1
#   2 empty                {}                   {}               0  0  1 (convention)
#   3 empty                {}                   {0}              0  1  0
#   4 position             {0, 1, 2, 3, 4}      {0, 1, 2, 3}     4  5  0.8
TARGET = masks({0, 1}, {0, 1, 2, 3}, set(), set(), {0, 1, 2, 3, 4})
PRED = masks({1, 2}, {0, 1, 2, 3}, set(), {0}, {0, 1, 2, 3})
TYPES = ["class", "class", "empty", "empty", "position"]


def test_sample_iou_by_hand() -> None:
    inter, union, iou = sample_iou(PRED, TARGET)
    assert inter.tolist() == [1, 4, 0, 0, 4]
    assert union.tolist() == [3, 4, 0, 1, 5]
    assert iou.tolist() == pytest.approx([1 / 3, 1, 1, 0, 0.8])


def test_grounding_metrics_by_hand() -> None:
    m = GroundingMetrics()
    m.update(PRED, TARGET.long(), TYPES)
    out = m.compute()
    assert out["n"] == 5
    assert out["miou"] == pytest.approx((1 / 3 + 1 + 1 + 0 + 0.8) / 5)
    assert out["oiou"] == pytest.approx(9 / 13)
    assert (out["pr50"], out["pr70"], out["pr90"]) == pytest.approx((3 / 5, 3 / 5, 2 / 5))
    assert out["no_target_acc"] == pytest.approx(4 / 5)  # sample 3 predicts pixels for an empty target
    per = out["per_type"]
    assert set(per) == {"class", "empty", "position"}  # types that did not occur are left out
    assert per["class"]["miou"] == pytest.approx(2 / 3) and per["class"]["oiou"] == pytest.approx(5 / 7)
    assert (per["class"]["pr50"], per["class"]["pr90"], per["class"]["n"]) == (0.5, 0.5, 2)
    assert per["empty"]["miou"] == 0.5 and per["empty"]["oiou"] == 0.0 and per["empty"]["no_target_acc"] == 0.5
    assert per["position"]["miou"] == pytest.approx(0.8)
    assert (per["position"]["pr70"], per["position"]["pr90"]) == (1.0, 0.0)


def test_threshold_is_strict_and_nan_when_undefined() -> None:
    m = GroundingMetrics(types=["a"])
    m.update(masks({0, 1}), masks({0}))  # IoU exactly 0.5: not > 0.5
    assert m.compute()["pr50"] == 0.0
    empty = GroundingMetrics(types=["a"])
    empty.update(masks(set()), masks(set()))
    out = empty.compute()
    assert out["miou"] == 1.0 and math.isnan(out["oiou"])  # no pixel anywhere: pooled IoU undefined
    assert math.isnan(grounding_scores(0, 0, 0, 0, [0, 0, 0], 0)["miou"])


def test_ignore_index_and_channel_dim() -> None:
    target = torch.tensor([[[1, 255], [0, 0]]])
    pred = torch.tensor([[[[1, 1], [0, 0]]]])  # [B, 1, H, W]; the ignored pixel is not a false positive
    m = GroundingMetrics(types=["a"])
    m.update(pred, target)
    assert m.compute()["miou"] == 1.0


def test_merge_state_equals_single_pass() -> None:
    single = GroundingMetrics()
    single.update(PRED, TARGET, TYPES)
    left, right = GroundingMetrics(), GroundingMetrics()
    left.update(PRED[:2], TARGET[:2], TYPES[:2])
    right.update(PRED[2:], TARGET[2:], TYPES[2:])
    left.merge_state(right)
    assert left.compute() == single.compute()
    # every state is summed across ranks under DDP
    assert {k: v.__name__ for k, v in single._reductions.items()} == {
        k: "dim_zero_sum" for k in ("count", "iou_sum", "inter", "union", "hits", "nt_correct")}


def test_bad_input() -> None:
    m = GroundingMetrics()
    with pytest.raises(ChangeAgentError, match="binarise"):
        m.update(PRED.float(), TARGET, TYPES)
    with pytest.raises(ChangeAgentError, match="unknown expression type"):
        m.update(PRED, TARGET, ["class"] * 4 + ["colour"])
    with pytest.raises(ChangeAgentError, match="got 2 types for 5"):
        m.update(PRED, TARGET, ["class"] * 2)
    with pytest.raises(ChangeAgentError, match="value 2"):
        m.update(PRED, TARGET.long() * 2, TYPES)
    with pytest.raises(ChangeAgentError, match="shape mismatch"):
        m.update(PRED[:, :2], TARGET, TYPES)
    with pytest.raises(ChangeAgentError, match="distinct"):
        GroundingMetrics(types=["a", "a"])


def test_binarize_uses_the_reference_threshold() -> None:
    logits = torch.tensor([-1.0, math.log(0.35 / 0.65) + 1e-4, 0.0])
    assert binarize(logits).tolist() == [False, True, True]
    assert binarize(logits, 0.6).tolist() == [False, False, False]
    with pytest.raises(ChangeAgentError):
        binarize(logits, 1.0)


def test_assemble_semantic_map_both_aggregations() -> None:
    # one row of 4 pixels, 3 classes; logits 2 ~ p .88, 1 ~ .73, -2 ~ .12
    logits = torch.tensor([[[2.0, -2, 1, -2]], [[1.0, -2, 2, -2]], [[-2.0, -2, 1.5, -2]]]).unsqueeze(0)  # [1,3,1,4]
    assert assemble_semantic_map(logits, aggregation="max_prob").tolist() == [[[1, 0, 2, 0]]]  # most probable
    assert assemble_semantic_map(logits).tolist() == [[[2, 0, 3, 0]]]  # default overwrite: last passing class
    assert assemble_semantic_map(logits, threshold=0.8).tolist() == [[[1, 0, 3, 0]]]  # sigmoid(1.5) = .82 passes
    assert assemble_semantic_map(logits, threshold=0.9).tolist() == [[[0, 0, 0, 0]]]
    with pytest.raises(ChangeAgentError, match="aggregation"):
        assemble_semantic_map(logits, aggregation="vote")


def test_referring_change_metrics_are_the_scd_scores_of_the_date2_confusion() -> None:
    target = torch.tensor([[0, 0, 1, 2, 2, 5]])
    pred = torch.tensor([[0, 3, 1, 2, 0, 5]])
    m = ReferringChangeMetrics()
    m.update(pred, target)
    cm = torch.zeros(7, 7, dtype=torch.long)
    for t, p in zip(target[0].tolist(), pred[0].tolist()):
        cm[t, p] += 1
    assert m.compute() == semantic_change_scores(cm)
    assert m.compute()["iou_changed"] == pytest.approx(3 / 5)  # changed in both 3; fp 1, fn 1
    with pytest.raises(ChangeAgentError, match="class id 7"):
        m.update(pred + 2, target)


def test_referring_change_update_logits_per_date() -> None:
    # 1 pair, 4 pixels; target date 1: [0, 3, 3, 1], date 2: [0, 5, 5, 2]
    target = torch.tensor([[[[0, 3, 3, 1]], [[0, 5, 5, 2]]]])
    logits = {d: torch.full((1, 6, 1, 4), -5.0) for d in (1, 2)}
    logits[1][0, 2, 0, 1:3] = 5  # class 3 on pixels 1, 2
    logits[2][0, 4, 0, 1] = 5    # class 5 on pixel 1 only; pixel 2 missed, pixel 3 missed
    only2 = ReferringChangeMetrics()
    only2.update_logits({2: logits[2]}, target)  # the RCD protocol: the date-2 map
    cm = only2.confmat
    assert int(cm[5, 5]) == 1 and int(cm[5, 0]) == 1 and int(cm[2, 0]) == 1 and int(cm[0, 0]) == 1
    both = ReferringChangeMetrics()
    both.update_logits(logits, target)
    assert int(both.confmat.sum()) == 8 and int(both.confmat[3, 3]) == 2 and int(both.confmat[1, 0]) == 1
    with pytest.raises(ChangeAgentError, match="keyed by date"):
        both.update_logits({3: logits[1]}, target)
