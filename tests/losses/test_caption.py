"""Caption loss: shift by one, padding ignored, label smoothing."""

import math

import pytest
import torch

from changeagent.data.constants import END, NULL, START
from changeagent.errors import ChangeAgentError
from changeagent.losses import caption_loss

V = 9


def _ids():
    # two captions of different length, padded with <NULL>
    return torch.tensor([[START, 5, 6, 7, END, NULL, NULL],
                         [START, 8, END, NULL, NULL, NULL, NULL]])


def _manual(logits, ids, eps=0.0):
    """Hand-written smoothed CE: (1-eps) * NLL + eps * mean_v(-log p_v), averaged over real tokens."""
    terms = []
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            y = int(ids[b, t + 1])
            if y == NULL:
                continue
            logp = torch.log_softmax(logits[b, t].double(), dim=0)
            terms.append((1 - eps) * -logp[y] + eps * -logp.mean())
    return float(sum(terms) / len(terms))


def test_matches_hand_computed_ce_and_ignores_padding():
    logits = torch.randn(2, 6, V)
    ids = _ids()
    loss = caption_loss(logits, ids)
    assert loss.item() == pytest.approx(_manual(logits, ids), rel=1e-5)
    # positions whose target is padding: first row t>=4, second row t>=2
    changed = logits.clone()
    changed[0, 4:] = torch.randn(2, V) * 20
    changed[1, 2:] = torch.randn(4, V) * 20
    for eps in (0.0, 0.2):
        assert caption_loss(changed, ids, eps).item() == pytest.approx(caption_loss(logits, ids, eps).item(),
                                                                      rel=1e-6)
    # a real-token position does change it
    changed[0, 0] += torch.randn(V) * 5
    assert caption_loss(changed, ids).item() != pytest.approx(loss.item(), rel=1e-4)


def test_label_smoothing_changes_loss_as_defined():
    logits = torch.randn(2, 6, V) * 3
    ids = _ids()
    plain = caption_loss(logits, ids).item()
    smooth = caption_loss(logits, ids, label_smoothing=0.1).item()
    assert smooth != pytest.approx(plain, rel=1e-3)
    assert smooth == pytest.approx(_manual(logits, ids, eps=0.1), rel=1e-5)


def test_uniform_logits_give_log_vocab():
    assert caption_loss(torch.zeros(2, 6, V), _ids()).item() == pytest.approx(math.log(V), rel=1e-6)


def test_shape_and_value_errors():
    logits = torch.randn(2, 6, V)
    with pytest.raises(ChangeAgentError, match="one caption per item"):
        caption_loss(logits, _ids().unsqueeze(1).expand(2, 5, 7))
    with pytest.raises(ChangeAgentError, match="do not match"):
        caption_loss(logits[:, :5], _ids())
    with pytest.raises(ChangeAgentError, match="label_smoothing"):
        caption_loss(logits, _ids(), label_smoothing=1.0)
    bad = _ids().clone()
    bad[0, 1] = V + 3
    with pytest.raises(ChangeAgentError, match="outside"):
        caption_loss(logits, bad)


def test_all_padding_is_zero_with_gradient():
    logits = torch.randn(1, 3, V, requires_grad=True)
    loss = caption_loss(logits, torch.tensor([[START, NULL, NULL, NULL]]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
