"""The mask decoder's stride-2 refinement stage (`mask_decoder.fine`): shapes, gradients, where the
heads run, and a clear error for encoders without stride-2 maps."""

from __future__ import annotations

import pytest
import torch
from model_helpers import VOCAB, captions, tiny_cfg

from changeagent.config import load_model_config
from changeagent.errors import ChangeAgentError
from changeagent.models import create_model


def test_fine_stage_runs_the_heads_at_stride_2():
    torch.manual_seed(0)
    model = create_model(tiny_cfg("resnet18", "diff", mask_decoder={"channels": 16, "fine": 8}), VOCAB)
    seen = []
    model.mask_decoder.fine.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    out = model(torch.randn(2, 2, 3, 64, 96), captions(2, 5), ["levir_mci", "second_cc"])
    assert seen == [(2, 8, 32, 48)]  # stride 2 of 64x96
    assert out["change"].shape == (2, 1, 64, 96) and out["masks"]["second_cc"].shape == (2, 2, 7, 64, 96)
    out["masks"]["levir_mci"].square().mean().backward()
    fine = [p.grad for p in model.mask_decoder.fine.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in fine)  # the A/B stride-2 fusion included


def test_fine_stage_needs_stride_2_maps():
    with pytest.raises(ChangeAgentError, match="stride-2"):
        create_model(tiny_cfg("mit_b0", "diff", mask_decoder={"channels": 16, "fine": 8}), VOCAB)
    with pytest.raises(ChangeAgentError, match="fine"):
        create_model(tiny_cfg("resnet18", "diff", mask_decoder={"channels": 16, "fine": -1}), VOCAB)


def test_fast_uses_the_fine_stage():
    assert load_model_config("fast")["mask_decoder"]["fine"] > 0
    assert "recipe" not in load_model_config("fast")
