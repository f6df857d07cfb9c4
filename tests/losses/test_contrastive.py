"""Retrieval loss: hand-computed InfoNCE, the no-change / same-caption rule, and the weighting of 3 tasks."""

from __future__ import annotations

import math

import pytest
import torch

from changeagent.errors import ChangeAgentError
from changeagent.losses import create_weighting
from changeagent.losses.contrastive import contrastive_loss, not_negatives
from changeagent.tasks import compute_losses as task_losses


def _ids(*rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


def test_two_pairs_hand_computed() -> None:
    # text 0 . pair 0 = 1, text 0 . pair 1 = 0, etc. (orthonormal embeddings) at scale 2
    e = torch.eye(2)
    caps = _ids([2, 4, 3], [2, 5, 3])
    loss = contrastive_loss(e, e, 2.0, caps, torch.tensor([1, 1]))
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(0)))  # same both directions
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_asymmetric_scores_average_both_directions() -> None:
    pair = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # both captions point at pair 0
    caps = _ids([2, 4, 3], [2, 5, 3])
    loss = contrastive_loss(pair, text, 1.0, caps)
    # text->pair: row0 logits (1, 0) target 0; row1 (1, 0) target 1
    t2p = (-math.log(math.e / (math.e + 1)) - math.log(1 / (math.e + 1))) / 2
    # pair->text: logits^T rows: pair0 (1, 1) target 0; pair1 (0, 0) target 1
    p2t = (-math.log(0.5) - math.log(0.5)) / 2
    assert loss.item() == pytest.approx((t2p + p2t) / 2, rel=1e-6)


def test_no_change_pairs_are_not_negatives_of_each_other() -> None:
    caps = _ids([2, 9, 3], [2, 8, 3], [2, 4, 3], [2, 4, 3])
    flags = torch.tensor([0, 0, 1, 1])
    drop = not_negatives(caps, flags)
    expected = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.bool)
    assert torch.equal(drop, expected)  # no-change pair rows 0/1; identical captions rows 2/3
    # pairs 0 and 1 are both no-change with different sentences: however close they are, no penalty
    pair = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss = contrastive_loss(pair, text, 10.0, caps[:2], flags[:2])
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # ... while as change pairs the same embeddings are confusable: log 2
    loss_change = contrastive_loss(pair, text, 10.0, caps[:2], torch.tensor([1, 1]))
    assert loss_change.item() == pytest.approx(math.log(2), rel=1e-5)


def test_rows_without_captions_are_left_out() -> None:
    e = torch.eye(3)
    caps = _ids([2, 4, 3], [0, 0, 0], [2, 5, 3])  # the middle item has no caption (mask-only dataset)
    pair = torch.stack([e[0], e[0], e[2]])  # its pair embedding would be confused with item 0's
    loss = contrastive_loss(pair, e, 2.0, caps, torch.tensor([1, 1, 1]))
    two = contrastive_loss(pair[[0, 2]], e[[0, 2]], 2.0, caps[[0, 2]], torch.tensor([1, 1]))
    assert loss.item() == pytest.approx(two.item(), rel=1e-6)
    none = contrastive_loss(pair, e, 2.0, _ids([0, 0], [0, 0], [2, 3]), None)
    assert none.item() == 0.0


def test_bad_shapes_raise() -> None:
    with pytest.raises(ChangeAgentError, match="pair_emb"):
        contrastive_loss(torch.zeros(2, 3), torch.zeros(3, 3), 1.0, _ids([2, 3], [2, 3]))
    with pytest.raises(ChangeAgentError, match="change flags"):
        contrastive_loss(torch.eye(2), torch.eye(2), 1.0, _ids([2, 3], [2, 3]), torch.tensor([0, 1, 1]))


def compute_losses(out, batch, cfg):
    """The step's losses of the three tasks, trained on the batch's captions."""
    return task_losses(out, batch, {"captions": batch["caption_ids"]}, cfg, ["mask", "caption", "retrieval"])


def _batch(b: int) -> dict:
    return {"change": torch.zeros(b, 8, 8, dtype=torch.long), "mask": torch.zeros(b, 8, 8, dtype=torch.long),
            "sem": torch.full((b, 2, 8, 8), 255), "caption_ids": _ids(*[[2, 4 + i, 3] for i in range(b)]),
            "dataset": ["levir_mci"] * b, "changeflag": torch.ones(b, dtype=torch.long)}


@pytest.mark.parametrize("name", ["fixed", "normalized", "uncertainty", "dwa", "gradnorm"])
def test_every_weighting_balances_the_retrieval_task(name: str) -> None:
    torch.manual_seed(0)
    shared = torch.nn.Linear(4, 4)
    feat = shared(torch.randn(3, 4))
    pair = torch.nn.functional.normalize(feat, dim=-1)
    text = torch.nn.functional.normalize(feat.flip(0), dim=-1)
    out = {"change": feat.sum() * torch.zeros(3, 1, 8, 8) + feat[:, :1, None, None], "masks": {},
           "pair_emb": pair, "text_emb": text, "logit_scale": torch.tensor(5.0)}
    losses = compute_losses(out, _batch(3), {})
    assert "retrieval" in losses and losses["retrieval"].item() > 0
    w = create_weighting({"name": name}, ["mask", "caption", "retrieval"])
    total, weights = w(losses, shared_params=list(shared.parameters()))
    assert set(weights) == {"mask", "retrieval"}
    total.backward()
    assert shared.weight.grad is not None and torch.isfinite(shared.weight.grad).all()


def test_no_head_no_retrieval_loss() -> None:
    out = {"change": torch.zeros(2, 1, 8, 8, requires_grad=True), "masks": {}}
    assert "retrieval" not in compute_losses(out, _batch(2), {})
