"""create_model from configs/model/*.yaml and plain dicts: sizes, options, errors, encoder weights."""

from __future__ import annotations

import re

import pytest
import torch
from model_helpers import VOCAB, tiny_cfg
from safetensors.torch import save_file

from changeagent.config import load_config, to_dict
from changeagent.errors import ChangeAgentError
from changeagent.models import create_model
from changeagent.models.encoder import Encoder
from changeagent.models.factory import compile_model

REFERENCE_PARAMS = 130.5e6  # SPEC §3, with the 468-word LEVIR-MCI vocabulary


def _model_cfg(*overrides: str) -> dict:
    return to_dict(load_config(None, list(overrides)))["model"]


def test_large_matches_the_reference_size_and_fast_is_five_times_smaller():
    mci = create_model(_model_cfg("model=large"), 468, device="meta").param_counts()
    assert abs(mci["total"] - REFERENCE_PARAMS) <= 0.10 * REFERENCE_PARAMS, mci
    assert 12e6 < mci["encoder"] < 14e6  # MiT-B1
    assert mci["total"] == sum(mci[k] for k in ("encoder", "neck", "memory", "mask_decoder", "caption_decoder"))
    fast = create_model(_model_cfg("model=fast"), 468, device="meta").param_counts()
    assert fast["total"] * 5 <= mci["total"], (fast, mci)


def test_mamba_config_and_dotted_overrides_build():
    pytest.importorskip("changeagent.models.necks.mamba")
    model = create_model(_model_cfg("model=mamba"), 468, device="meta")
    assert model.config["neck"]["name"] == "mamba"
    model = create_model(_model_cfg("model=fast", "model.encoder=resnet34", "model.neck.depth=2"), 468,
                         device="meta")
    assert model.encoder.name == "resnet34" and len(model.neck.mask.blocks["3"].layers) == 2


def test_neck_can_be_switched_by_override():
    # leftover transformer options must not break the diff neck
    model = create_model(_model_cfg("model=fast", "model.neck.name=diff"), 468, device="meta")
    assert len(model.neck.mask.blocks) == 0


@pytest.mark.parametrize("cfg,match", [
    ({"encodr": "resnet18"}, "model.encodr: unknown key (did you mean 'encoder'?)"),
    ({"encoder": "resnet19"}, "unknown encoder"),
    ({"neck": {"name": "lstm"}}, "model.neck.name: 'lstm' is not one of diff, transformer, mamba"),
    ({"neck": {"name": "transformer", "heads": 3, "dim": 32}}, "model.neck.heads: 3 does not divide"),
    ({"neck": {"name": "transformer", "heda": 4}}, "model.neck.heda: unknown key (did you mean 'heads'?)"),
    ({"neck": {"name": "diff", "depth": 3}}, "model.neck.depth: unknown key"),
    ({"mask_decoder": {"chanels": 8}}, "model.mask_decoder.chanels: unknown key (did you mean 'channels'?)"),
    ({"mask_decoder": {"dropout": 2}}, r"model.mask_decoder.dropout: must be in [0, 1), got 2.0"),
    ({"caption_decoder": {"levels": 9}}, "levels"),
    ({"memory": {"levels": 0}}, "model.memory.levels: must be >= 1, got 0"),
    ({"memory": {"dim": 32}, "caption_decoder": {"dim": 64}}, "model.caption_decoder.dim: is 64 but model.memory.dim is 32"),
    ({"caption_decoder": {"heads": 3}}, "model.caption_decoder.heads: 3 does not divide model.memory.dim=256"),
    ({"tasks": ["mask", "mask"]}, "model.tasks: must be a non-empty list of distinct tasks"),
    ({"tasks": ["mask", "qa_typo"]}, "model.tasks[1]: 'qa_typo' is not one of mask, caption, retrieval"),
    ({"tasks": ["mask"], "retrieval": {"enabled": True}}, "model.retrieval.enabled: is true but model.tasks"),
    ({"separate_necks": True, "caption_neck": {"depht": 1}}, "model.caption_neck.depht: unknown key"),
    ({"datasets": ["levir_mci", "whu"]}, "model.datasets[1]: 'whu' is not one of"),
])
def test_bad_configs_raise_clear_errors(cfg, match):
    with pytest.raises(ChangeAgentError, match=re.escape(match)):
        create_model(cfg, VOCAB, device="meta")


def test_bad_inputs_raise_clear_errors():
    model = create_model(tiny_cfg("resnet18", "diff"), VOCAB)
    with pytest.raises(ChangeAgentError, match="multiples of 32"):
        model(torch.randn(1, 2, 3, 64, 80))
    with pytest.raises(ChangeAgentError, match=r"\[B, 2, C, H, W\]"):
        model(torch.randn(1, 3, 64, 64))
    with pytest.raises(ChangeAgentError, match="channels"):
        model(torch.randn(1, 2, 4, 64, 64))
    with pytest.raises(ChangeAgentError, match="not among the model.s datasets"):
        model(torch.randn(1, 2, 3, 64, 64), dataset=["second"])
    with pytest.raises(ChangeAgentError, match="caption ids"):
        model(torch.randn(1, 2, 3, 64, 64), torch.tensor([[2, VOCAB, 3]]))


def test_encoder_weights_from_a_local_file_with_more_input_channels(tmp_path):
    torch.manual_seed(0)
    rgb = Encoder("resnet18")
    path = tmp_path / "resnet18.safetensors"
    save_file({f"encoder.{k}": v.contiguous() for k, v in rgb.body.state_dict().items()}, str(path))
    enc = Encoder("resnet18", in_channels=4, weights=str(path))
    w_rgb, w4 = rgb.body.conv1.weight, enc.body.conv1.weight
    assert w4.shape[1] == 4
    torch.testing.assert_close(w4[:, :3], w_rgb * 3 / 4)
    torch.testing.assert_close(w4[:, 3], w_rgb[:, 0] * 3 / 4)
    assert torch.equal(enc.body.layer4[1].conv2.weight, rgb.body.layer4[1].conv2.weight)
    pth = tmp_path / "r.pth"
    torch.save({"state_dict": rgb.body.state_dict()}, pth)
    assert torch.equal(Encoder("resnet18", weights=str(pth)).body.conv1.weight, w_rgb)
    with pytest.raises(ChangeAgentError, match="does not exist"):
        Encoder("resnet18", weights=str(tmp_path / "missing.pth"))
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ChangeAgentError, match="no tensor name matches"):
        Encoder("resnet18", weights=str(tmp_path / "other.safetensors"))


@pytest.mark.slow
def test_torch_compile_forward_backward():
    # aot_eager traces forward and backward like inductor does, without minutes of C++ compiling
    model = compile_model(create_model(tiny_cfg("resnet18", "transformer"), VOCAB), backend="aot_eager")
    out = model(torch.randn(2, 2, 3, 64, 64), torch.randint(4, VOCAB, (2, 5)))
    (out["change"].mean() + out["caption"].mean()).backward()
    assert all(p.grad is not None for p in model.parameters())
