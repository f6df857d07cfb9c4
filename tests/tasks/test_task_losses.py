"""compute_losses over the mask and caption tasks: per-dataset head selection, SECOND unchanged pixels
ignored, the `loss` section's checks, and losses + weighting end to end."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from changeagent.data.constants import END, IGNORE_INDEX, NULL, START
from changeagent.errors import ChangeAgentError
from changeagent.losses import caption_loss, create_weighting, semantic_loss
from changeagent.tasks import compute_losses as task_losses

H = W = 8
V = 11


def _batch(datasets, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(datasets)
    mask = torch.full((b, H, W), IGNORE_INDEX)
    sem = torch.full((b, 2, H, W), IGNORE_INDEX)
    change = torch.zeros(b, H, W, dtype=torch.long)
    for i, d in enumerate(datasets):
        if d == "levir_mci":
            mask[i] = torch.randint(0, 3, (H, W), generator=g)
            change[i] = (mask[i] > 0).long()
        else:
            changed = torch.rand(H, W, generator=g) < 0.5
            for t in range(2):
                sem[i, t] = torch.where(changed, torch.randint(1, 7, (H, W), generator=g), 0)
            change[i] = changed.long()
    ids = torch.tensor([[START, 4, 5, END, NULL]] * b)
    return {"change": change, "mask": mask, "sem": sem, "caption_ids": ids, "dataset": list(datasets)}


def _out(b, seed=1, caption=True):
    g = torch.Generator().manual_seed(seed)
    out = {
        "change": torch.randn(b, 1, H, W, generator=g).requires_grad_(),
        "masks": {"levir_mci": torch.randn(b, 3, H, W, generator=g).requires_grad_(),
                  "second_cc": torch.randn(b, 2, 7, H, W, generator=g).requires_grad_()},
    }
    if caption:
        out["caption"] = torch.randn(b, 4, V, generator=g).requires_grad_()
    return out


MIXED = ["levir_mci", "second_cc", "levir_mci", "second_cc"]


def compute_losses(out, batch, cfg=None):
    """The losses of a step of the mask and caption tasks; the captions trained on are the batch's."""
    return task_losses(out, batch, {"captions": batch["caption_ids"]}, cfg, ["mask", "caption"])


def test_keys_and_mask_group_is_weighted_sum():
    out, batch = _out(4), _batch(MIXED)
    cfg = {"mask": {"change_weight": 0.5, "dice": 0.3}, "caption": {"label_smoothing": 0.1}}
    losses = compute_losses(out, batch, cfg)
    assert set(losses) == {"mask", "caption", "mask/change", "mask/levir_mci", "mask/second_cc"}
    expected = 0.5 * losses["mask/change"] + losses["mask/levir_mci"] + losses["mask/second_cc"]
    assert losses["mask"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses["caption"].item() == pytest.approx(
        caption_loss(out["caption"], batch["caption_ids"], 0.1).item())
    assert all(torch.isfinite(v) for v in losses.values())


def test_heads_use_only_their_own_rows():
    out, batch = _out(4), _batch(MIXED)
    base = compute_losses(out, batch)
    # scramble each head on the other dataset's rows: that head's loss must not move
    changed = {"change": out["change"], "masks": {k: v.detach().clone() for k, v in out["masks"].items()}}
    changed["masks"]["levir_mci"][[1, 3]] = torch.randn(2, 3, H, W) * 10
    changed["masks"]["second_cc"][[0, 2]] = torch.randn(2, 2, 7, H, W) * 10
    again = compute_losses(changed, batch)
    for key in ("mask/levir_mci", "mask/second_cc", "mask"):
        assert again[key].item() == pytest.approx(base[key].item(), rel=1e-6)
    base["mask"].backward()
    assert out["masks"]["levir_mci"].grad[[1, 3]].abs().max() == 0
    assert out["masks"]["levir_mci"].grad[[0, 2]].abs().max() > 0
    assert out["masks"]["second_cc"].grad[[0, 2]].abs().max() == 0
    # LEVIR loss equals plain CE over the LEVIR rows
    lv = F.cross_entropy(out["masks"]["levir_mci"][[0, 2]], batch["mask"][[0, 2]], ignore_index=IGNORE_INDEX)
    assert base["mask/levir_mci"].item() == pytest.approx(lv.item(), rel=1e-6)


def test_second_ignores_unchanged_pixels_in_both_dates():
    out, batch = _out(2), _batch(["second_cc", "second_cc"])
    base = compute_losses(out, batch)["mask/second_cc"]
    sem = batch["sem"]
    lg = out["masks"]["second_cc"].detach()
    keep = (sem != 0) & (sem != IGNORE_INDEX)
    expected = F.cross_entropy(lg.permute(0, 1, 3, 4, 2)[keep], sem[keep])
    assert base.item() == pytest.approx(expected.item(), rel=1e-6)
    # predictions at unchanged pixels don't matter
    changed = {"change": out["change"], "masks": {"second_cc": lg.clone()}}
    unchanged = (sem == 0).unsqueeze(2).expand_as(lg)
    changed["masks"]["second_cc"][unchanged] = torch.randn(int(unchanged.sum())) * 10
    assert compute_losses(changed, batch)["mask/second_cc"].item() == pytest.approx(base.item(), rel=1e-6)


def test_levir_only_batch_has_no_second_term_and_no_nan():
    out, batch = _out(2, caption=False), _batch(["levir_mci", "levir_mci"])
    losses = compute_losses(out, batch, {"mask": {"dice": 1.0, "lovasz": 1.0}})
    assert "mask/second_cc" not in losses and "caption" not in losses
    assert torch.isfinite(losses["mask"])
    assert losses["mask"].item() == pytest.approx(
        (losses["mask/change"] + losses["mask/levir_mci"]).item(), rel=1e-6)
    losses["mask"].backward()
    # the unused head is still in the graph (DDP) but gets exactly zero gradient
    assert torch.equal(out["masks"]["second_cc"].grad, torch.zeros_like(out["masks"]["second_cc"]))


def test_second_batch_without_any_change_is_finite():
    out, batch = _out(1), _batch(["second_cc"])
    batch["sem"][:] = 0
    batch["change"][:] = 0
    losses = compute_losses(out, batch)
    assert losses["mask/second_cc"].item() == 0.0 and torch.isfinite(losses["mask"])


def test_class_weights_per_dataset_and_config_errors():
    out, batch = _out(4), _batch(MIXED)
    w = [1.0, 5.0, 0.2]
    losses = compute_losses(out, batch, {"mask": {"class_weights": {"levir_mci": w}}})
    expected = semantic_loss(out["masks"]["levir_mci"][[0, 2]], batch["mask"][[0, 2]], class_weights=w)
    assert losses["mask/levir_mci"].item() == pytest.approx(expected.item(), rel=1e-6)
    for cfg, msg in [({"mask": {"dcie": 1.0}}, "unknown key"),
                     ({"masks": {}}, "unknown key"),
                     ({"mask": {"ce": -1}}, ">= 0"),
                     ({"mask": {"class_weights": [1, 2, 3]}}, "class_weights: expected a mapping"),
                     ({"mask": {"class_weights": {"second_cc": [1, 2]}}}, "need 7"),
                     ({"mask": {"class_weights": {"levir": [1, 2, 3]}}}, "unknown dataset")]:
        with pytest.raises(ChangeAgentError, match=msg):
            compute_losses(out, batch, cfg)
    bad = dict(batch, dataset=["levir_mci", "oops", "levir_mci", "second_cc"])
    with pytest.raises(ChangeAgentError, match="oops"):
        compute_losses(out, bad)


class _Toy(nn.Module):
    """A tiny stand-in for the model's output dict, to run losses + weighting end to end."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Conv2d(6, 8, 3, padding=1)
        self.change = nn.Conv2d(8, 1, 1)
        self.levir = nn.Conv2d(8, 3, 1)
        self.second = nn.Conv2d(8, 14, 1)
        self.cap = nn.Linear(8, 4 * V)

    def forward(self, image):
        f = torch.relu(self.shared(image.flatten(1, 2)))
        b = f.shape[0]
        return {"change": self.change(f),
                "masks": {"levir_mci": self.levir(f), "second_cc": self.second(f).view(b, 2, 7, H, W)},
                "caption": self.cap(f.mean((2, 3))).view(b, 4, V)}


@pytest.mark.parametrize("name", ["normalized", "uncertainty", "dwa", "gradnorm"])
def test_end_to_end_training_reduces_losses(name):
    torch.manual_seed(0)
    model = _Toy()
    weighting = create_weighting({"name": name}, ["mask", "caption"])
    opt = torch.optim.Adam([*model.parameters(), *weighting.parameters()], lr=0.05)
    batch = _batch(MIXED)
    image = torch.randn(4, 2, 3, H, W)
    first = None
    for _ in range(20):
        losses = compute_losses(model(image), batch, {"mask": {"dice": 0.5}})
        total, weights = weighting(losses, shared_params=list(model.shared.parameters()))
        opt.zero_grad()
        total.backward()
        opt.step()
        first = first or {k: losses[k].item() for k in ("mask", "caption")}
    assert set(weights) == {"mask", "caption"}
    assert losses["mask"].item() < 0.8 * first["mask"]
    assert losses["caption"].item() < 0.8 * first["caption"]


def test_partial_supervision_each_loss_uses_only_items_with_its_target():
    """levir_cd items have a change map only, levir_cc items captions only: the change loss equals
    the loss over the items with a change map, the caption loss the one over captioned items."""
    from changeagent.losses.mask import binary_change_loss

    batch = _batch(["levir_mci", "levir_cd", "levir_cc", "levir_cd"])
    batch["change"][1] = (torch.arange(H * W).reshape(H, W) % 3 == 0).long()
    batch["change"][3] = 0
    batch["change"][2] = IGNORE_INDEX  # captions only: no change map
    batch["caption_ids"][1] = NULL  # mask only: no caption
    batch["caption_ids"][3] = NULL
    out = _out(4)
    losses = compute_losses(out, batch)
    keep = [0, 1, 3]
    ref = binary_change_loss(out["change"][keep], batch["change"][keep])
    assert torch.allclose(losses["mask/change"], ref)
    ref_cap = caption_loss(out["caption"][[0, 2]], batch["caption_ids"][[0, 2]])
    assert torch.allclose(losses["caption"], ref_cap)
    assert set(losses) == {"mask", "caption", "mask/change", "mask/levir_mci"}  # no second_cc item
    losses["mask"].backward()
    # the levir_cd/levir_cc rows never reach the LEVIR-MCI head
    assert out["masks"]["levir_mci"].grad[1:].abs().sum() == 0
