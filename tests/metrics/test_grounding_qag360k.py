"""The QAG-360K public sample's answer masks through the QAG-360K reader into the grounding metrics
(question = expression, question type = expression type, as VisTA scores it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from shared_data import DATA

from changeagent.data.qa.rules import QUESTION_TYPES
from changeagent.data.qag360k import QAG360K
from changeagent.metrics.grounding import GroundingMetrics

ROOT = DATA / "qag360k_sample"


@pytest.fixture(scope="module")
def sample() -> tuple[list[dict], list[np.ndarray]]:
    ds = QAG360K(ROOT, "train", missing_masks="skip")  # the public sample lacks mask 5
    items = [ds[i] for i in range(len(ds))]
    files = [np.asarray(Image.open(ROOT / "train" / "mask" / f"{s['question_id']}.png")) == 255 for s in items]
    return items, files


def test_reader_masks_are_the_published_pngs(sample) -> None:
    items, files = sample
    assert [s["question_id"] for s in items] == [0, 1, 2, 3, 4]
    for s, f in zip(items, files):
        m = s["answer_mask"]
        assert m.shape == (512, 512) and m.dtype == torch.int64
        assert (m.numpy() == f).all() and f.any()


def test_metrics_on_the_sample(sample) -> None:
    items, files = sample
    target = torch.stack([s["answer_mask"] for s in items])
    types = [s["question_type"] for s in items]
    perfect = GroundingMetrics(types=QUESTION_TYPES)
    perfect.update(target.bool(), target, types)
    out = perfect.compute()
    assert (out["miou"], out["oiou"], out["pr90"], out["no_target_acc"], out["n"]) == (1.0, 1.0, 1.0, 1.0, 5)
    assert {t: v["n"] for t, v in out["per_type"].items()} == {"change_from_what": 4, "change_or_not": 1}

    # the union of one image's answer masks for every question (a whole-change style baseline),
    # against a plain numpy computation
    union = np.logical_or.reduce(files)
    base = GroundingMetrics(types=QUESTION_TYPES)
    base.update(torch.from_numpy(np.stack([union] * len(files))), target, types)
    got = base.compute()
    ious = [f.sum() / union.sum() for f in files]  # each answer lies inside the union
    assert got["miou"] == pytest.approx(np.mean(ious))
    assert got["oiou"] == pytest.approx(sum(f.sum() for f in files) / (len(files) * union.sum()))
    assert got["pr50"] == pytest.approx(np.mean([i > 0.5 for i in ious]))
    assert got["per_type"]["change_or_not"]["miou"] == pytest.approx(ious[4])
    # nothing predicted: every target has pixels, so every sample scores 0 and no-target accuracy is 0
    none = GroundingMetrics(types=QUESTION_TYPES)
    none.update(torch.zeros_like(target, dtype=torch.bool), target, types)
    assert (none.compute()["miou"], none.compute()["no_target_acc"]) == (0.0, 0.0)
