"""LEVIR-MCI MIoU and binary change scores: hand-computed cases, NaN classes, ignore_index, DDP sums."""

from __future__ import annotations

import math
import os

import pytest
import torch
from gloo import run_gloo

from changeagent.data.constants import LEVIR_CLASSES
from changeagent.errors import ChangeAgentError
from changeagent.metrics import SegmentationMetrics, SemanticChangeMetrics, segmentation_scores

# 2 x 4 maps; the 255 pixel is ignored. Pixels (target, pred):
# (0,0) (0,1) (1,1) (1,1) / (2,2) (2,0) (0,0) (255,2)
TARGET = torch.tensor([[[0, 0, 1, 1], [2, 2, 0, 255]]])
PRED = torch.tensor([[[0, 1, 1, 1], [2, 0, 0, 2]]])


def test_hand_computed_case() -> None:
    m = SegmentationMetrics(3, class_names=LEVIR_CLASSES)
    m.update(PRED, TARGET)
    # confusion (rows target, cols pred): [[2,1,0],[0,2,0],[1,0,1]]
    assert m.confmat.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
    out = m.compute()
    iou = [2 / (2 + 1 + 1), 2 / (2 + 1 + 0), 1 / (1 + 0 + 1)]  # tp / (tp + fp + fn) per class
    assert out["iou_per_class"] == pytest.approx(iou)
    assert out["miou"] == pytest.approx(5 / 9)
    assert out["oa"] == pytest.approx(5 / 7)
    assert out["iou_road"] == pytest.approx(2 / 3)
    assert out["iou_building"] == pytest.approx(1 / 2)
    # change = class > 0: tp 3 (a road/building class in both, even the wrong one), fp 1, fn 1
    assert out["change_iou"] == pytest.approx(3 / 5)
    assert out["change_precision"] == pytest.approx(3 / 4)
    assert out["change_recall"] == pytest.approx(3 / 4)
    assert out["change_f1"] == pytest.approx(3 / 4)
    assert segmentation_scores(m.confmat, LEVIR_CLASSES) == out  # the function form on the same matrix


def test_absent_class_is_nan_and_ignored_in_mean() -> None:
    m = SegmentationMetrics(3)
    m.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 0, 1]]))
    out = m.compute()
    assert out["iou_per_class"][:2] == pytest.approx([1 / 2, 1 / 2])
    assert math.isnan(out["iou_per_class"][2])
    assert out["miou"] == pytest.approx(1 / 2)  # would be 1/3 if the absent class counted as 0


def test_no_change_anywhere_gives_nan_change_scores() -> None:
    out = segmentation_scores(torch.tensor([[4, 0, 0], [0, 0, 0], [0, 0, 0]]))
    assert out["miou"] == 1.0 and out["oa"] == 1.0
    for key in ("change_iou", "change_f1", "change_precision", "change_recall"):
        assert math.isnan(out[key])


def test_ignore_index_pixels_are_skipped() -> None:
    a = SegmentationMetrics(3)
    a.update(PRED, TARGET)
    b = SegmentationMetrics(3)
    keep = TARGET != 255
    b.update(PRED[keep], TARGET[keep])
    assert torch.equal(a.confmat, b.confmat)
    assert int(a.confmat.sum()) == 7


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        (PRED.float(), TARGET, "integer class ids"),
        (PRED + 1, TARGET, "class id 3"),
        (PRED, TARGET.clone().fill_(7), "class id 7"),
        (PRED[..., :3], TARGET, "shape mismatch"),
        (PRED.clone().fill_(255), TARGET, "class id 255"),  # ignore_index is for targets only
    ],
)
def test_bad_input_raises(pred: torch.Tensor, target: torch.Tensor, message: str) -> None:
    with pytest.raises(ChangeAgentError, match=message):
        SegmentationMetrics(3).update(pred, target)


def test_bad_construction_raises() -> None:
    with pytest.raises(ChangeAgentError, match="collides"):
        SegmentationMetrics(3, ignore_index=2)
    with pytest.raises(ChangeAgentError, match="class names"):
        SegmentationMetrics(3, class_names=("a", "b"))


def _random_maps(seed: int, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 3, (n, 16, 16), generator=g)
    target[:, :2] = 255
    return torch.randint(0, 3, (n, 16, 16), generator=g), target


def _random_sem(seed: int, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """SECOND-style [n, 2, 16, 16] prediction and target: land cover 1..6 where changed, 0 on both dates
    where not (the target's rule), some target rows ignored."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        changed = torch.rand(n, 1, 16, 16, generator=g) < 0.5
        out.append(torch.where(changed, torch.randint(1, 7, (n, 2, 16, 16), generator=g), 0))
    out[1][:, :, :2] = 255
    return out[0], out[1]


def test_merge_state_equals_single_pass() -> None:
    pred, target = _random_maps(0)
    whole = SegmentationMetrics(3)
    whole.update(pred, target)
    left, right = SegmentationMetrics(3), SegmentationMetrics(3)
    left.update(pred[:1], target[:1])
    right.update(pred[1:], target[1:])
    left.merge_state(right)
    assert torch.equal(left.confmat, whole.confmat)
    assert left.compute() == whole.compute()


def _ddp_worker(rank: int, world: int, out_dir: str) -> None:
    pred, target = _random_maps(0)
    m = SegmentationMetrics(3)
    m.update(pred[rank::world], target[rank::world])  # each rank sees its own share only
    torch.save(m.compute(), os.path.join(out_dir, f"rank{rank}.pt"))
    scd = SemanticChangeMetrics()  # SECOND's SCD protocol syncs its two confusion matrices the same way
    sem_pred, sem_target = _random_sem(1)
    scd.update_stacked(sem_pred[rank::world], sem_target[rank::world])
    torch.save(scd.compute(), os.path.join(out_dir, f"scd{rank}.pt"))


def test_ddp_gloo_sync_equals_single_process(tmp_path) -> None:
    run_gloo(_ddp_worker, tmp_path, str(tmp_path))
    pred, target = _random_maps(0)
    single = SegmentationMetrics(3)
    single.update(pred, target)
    expected = single.compute()
    sem_pred, sem_target = _random_sem(1)
    scd = SemanticChangeMetrics()
    scd.update_stacked(sem_pred, sem_target)
    expected_scd = scd.compute()
    for rank in range(2):
        assert torch.load(tmp_path / f"rank{rank}.pt") == expected
        got = torch.load(tmp_path / f"scd{rank}.pt")
        assert got.keys() == expected_scd.keys()
        for key, value in expected_scd.items():
            assert got[key] == pytest.approx(value, nan_ok=True), key
    # a rank's own share alone gives other numbers: the sync is what makes them equal
    half = SegmentationMetrics(3)
    half.update(pred[0::2], target[0::2])
    assert half.compute() != expected
