"""Mask losses: ignore index, class weights, Dice/Lovász options, binary change loss."""

import pytest
import torch
import torch.nn.functional as F

from changeagent.data.constants import IGNORE_INDEX
from changeagent.errors import ChangeAgentError
from changeagent.losses import binary_change_loss, semantic_loss


def _target(n=2, c=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, c, (n, h, w), generator=g)
    t[:, :3, :] = IGNORE_INDEX  # top rows unlabelled
    return t


def test_ce_equals_ce_on_valid_pixels_only():
    logits = torch.randn(2, 3, 8, 8)
    t = _target()
    loss = semantic_loss(logits, t)
    valid = t != IGNORE_INDEX
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], t[valid])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("terms", [dict(ce=1.0), dict(ce=0.0, dice=1.0), dict(ce=0.0, lovasz=1.0),
                                   dict(ce=1.0, dice=0.5, lovasz=0.5)])
def test_ignored_pixels_have_no_influence(terms):
    t = _target()
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    loss = semantic_loss(logits, t, **terms)
    loss.backward()
    ignored = (t == IGNORE_INDEX).unsqueeze(1).expand_as(logits)
    assert logits.grad[ignored].abs().max() == 0
    assert logits.grad[~ignored].abs().max() > 0
    changed = logits.detach().clone()
    changed[ignored] = torch.randn(int(ignored.sum())) * 10
    assert semantic_loss(changed, t, **terms).item() == pytest.approx(loss.item(), rel=1e-6)


def test_dice_and_lovasz_near_zero_for_perfect_prediction():
    t = _target()
    perfect = F.one_hot(t.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 50
    assert semantic_loss(perfect, t, ce=0.0, dice=1.0).item() < 1e-4
    assert semantic_loss(perfect, t, ce=0.0, lovasz=1.0).item() < 1e-4
    assert semantic_loss(-perfect, t, ce=0.0, lovasz=1.0).item() > 0.5


def test_all_ignored_gives_zero_not_nan():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    t = torch.full((1, 4, 4), IGNORE_INDEX)
    for terms in (dict(ce=1.0), dict(dice=1.0, lovasz=1.0)):
        loss = semantic_loss(logits, t, **terms)
        assert loss.item() == 0.0
        loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    blogits = torch.randn(1, 1, 4, 4, requires_grad=True)
    assert binary_change_loss(blogits, t, dice=1.0, lovasz=1.0).item() == 0.0


def test_class_weights_change_ce_as_weighted_mean():
    logits = torch.randn(2, 3, 8, 8)
    t = _target()
    w = [1.0, 3.0, 0.5]
    loss = semantic_loss(logits, t, class_weights=w)
    valid = t != IGNORE_INDEX
    per_pixel = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], t[valid], reduction="none")
    pw = torch.tensor(w)[t[valid]]
    assert loss.item() == pytest.approx(((per_pixel * pw).sum() / pw.sum()).item(), rel=1e-5)
    assert loss.item() != pytest.approx(semantic_loss(logits, t).item(), rel=1e-3)
    with pytest.raises(ChangeAgentError, match="2 class weights given for 3 classes"):
        semantic_loss(logits, t, class_weights=[1.0, 2.0])


def test_bad_targets_raise_clear_errors():
    logits = torch.randn(1, 3, 4, 4)
    with pytest.raises(ChangeAgentError, match="class 5"):
        semantic_loss(logits, torch.full((1, 4, 4), 5))
    with pytest.raises(ChangeAgentError, match="do not match"):
        semantic_loss(logits, torch.zeros(1, 5, 4, dtype=torch.long))
    with pytest.raises(ChangeAgentError, match="integer"):
        semantic_loss(logits, torch.zeros(1, 4, 4))
    with pytest.raises(ChangeAgentError, match=r"\[B, 1, H, W\]"):
        binary_change_loss(logits, torch.zeros(1, 4, 4, dtype=torch.long))


def test_binary_change_bce_on_valid_pixels_and_ignore():
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, 2, (2, 8, 8), generator=g)
    t[:, :, :2] = IGNORE_INDEX
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    loss = binary_change_loss(logits, t)
    valid = t != IGNORE_INDEX
    expected = F.binary_cross_entropy_with_logits(logits.detach()[:, 0][valid], t[valid].float())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    full = binary_change_loss(logits, t, dice=1.0, lovasz=1.0)
    assert full.item() > loss.item()
    full.backward()
    assert logits.grad[:, 0][~valid].abs().max() == 0
    assert logits.grad[:, 0][valid].abs().max() > 0


def test_half_precision_logits_give_float32_loss():
    logits = torch.randn(1, 3, 4, 4).to(torch.bfloat16)
    t = torch.randint(0, 3, (1, 4, 4))
    assert semantic_loss(logits, t, dice=1.0).dtype == torch.float32
