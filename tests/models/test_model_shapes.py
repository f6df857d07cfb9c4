"""Every encoder family x neck x (mask + caption decoder): output shapes and gradients at 64 px."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from model_helpers import VOCAB, captions, tiny_cfg

from changeagent.models import ChangeCaptioner, create_model

ENCODERS = ("resnet18", "mit_b0", "efficientnet-b0")
NECKS = ("diff", "transformer", "mamba")


def _needs(neck: str) -> None:
    if neck == "mamba" and importlib.util.find_spec("changeagent.models.necks.mamba") is None:
        pytest.skip("the mamba neck is not written yet")


def _check_outputs(model: ChangeCaptioner, b: int, h: int, w: int, length: int) -> None:
    torch.manual_seed(0)
    image = torch.randn(b, 2, 3, h, w)
    caps = captions(b, length)
    out = model(image, caps, ["levir_mci", "second_cc"][:b] if b == 2 else None)
    assert out["change"].shape == (b, 1, h, w)
    assert out["masks"]["levir_mci"].shape == (b, 3, h, w)
    assert out["masks"]["second_cc"].shape == (b, 2, 7, h, w)
    assert out["caption"].shape == (b, length - 1, VOCAB)
    loss = (out["change"].square().mean() + out["caption"].square().mean()
            + sum(m.square().mean() for m in out["masks"].values()))
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    for part in ("encoder", "neck", "mask_decoder", "caption_decoder"):
        grads = [p.grad for p in getattr(model, part).parameters()]
        assert all(torch.isfinite(g).all() for g in grads), part
        assert any(g.abs().sum() > 0 for g in grads), f"{part} gets no gradient signal"


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("neck", NECKS)
def test_forward_backward_every_encoder_and_neck(encoder: str, neck: str):
    _needs(neck)
    torch.manual_seed(0)
    model = create_model(tiny_cfg(encoder, neck), VOCAB)
    _check_outputs(model, b=2, h=64, w=64, length=7)


@pytest.mark.parametrize("neck", NECKS)
def test_separate_necks_and_two_caption_levels(neck: str):
    """The reference layout: a mask neck and a caption-only neck; captions read two levels."""
    _needs(neck)
    cfg = tiny_cfg("resnet18", neck, separate_necks=True, caption_neck={"dim": 16})
    cfg["neck"]["block_levels"] = 2
    cfg["caption_decoder"]["levels"] = 2
    model = create_model(cfg, VOCAB)
    assert model.neck.caption is not None and model.neck.caption.levels == [2, 3]
    assert model.neck.caption.out_channels == [16, 16]
    assert len(model.neck.mask.blocks) == (0 if neck == "diff" else 2)
    _check_outputs(model, b=2, h=64, w=64, length=5)


def test_any_size_input_and_batch_of_one():
    model = create_model(tiny_cfg("mit_b0", "transformer"), VOCAB)
    _check_outputs(model, b=1, h=64, w=96, length=4)
    pred = model.predict(torch.randn(1, 2, 3, 96, 64), max_len=5)
    assert pred["change"].shape == (1, 1, 96, 64)
    assert pred["masks"]["second_cc"].shape == (1, 2, 7, 96, 64)
    assert pred["tokens"].dtype == torch.long and pred["tokens"].shape[0] == 1


def test_multispectral_input_channels():
    model = create_model(tiny_cfg("resnet18", "diff", in_channels=5), VOCAB)
    out = model(torch.randn(2, 2, 5, 64, 64))
    assert out["change"].shape == (2, 1, 64, 64)
    assert "caption" not in out


def test_bf16_autocast_forward_backward():
    model = create_model(tiny_cfg("resnet18", "transformer"), VOCAB)
    image, caps = torch.randn(2, 2, 3, 32, 32), captions(2, 6)  # CPU bf16 convs are slow: tiny input
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(image, caps, ["levir_mci", "second_cc"])
        assert out["caption"].dtype == torch.bfloat16
        loss = torch.nn.functional.cross_entropy(out["caption"].flatten(0, 1).float(), caps[:, 1:].flatten())
        loss = loss + out["change"].float().mean() + sum(m.float().mean() for m in out["masks"].values())
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(p.dtype == torch.float32 for p in model.parameters())
