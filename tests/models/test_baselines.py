"""The mask-only smp baseline (`model.type: smp_unet`): shapes per head, shared encoder, no captions,
saved/loaded by the hub, trained and evaluated by the engine on a mask-only dataset."""

from __future__ import annotations

import json

import pytest
import torch

from changeagent.cli import main
from changeagent.config import config_dir, load_config, to_dict
from changeagent.errors import ChangeAgentError
from changeagent.models import create_model
from changeagent.models.hub import load, save_pretrained


def _cfg(*overrides: str) -> dict:
    return to_dict(load_config(None, ["model=smp_unet", *overrides]))["model"]


def test_heads_and_shapes():
    model = create_model({**_cfg("model.decoder_channels=[32,16,16,8,8]"),
                          "datasets": ["levir_cd", "levir_mci", "second_cc"]}, 10)
    x = torch.randn(2, 2, 3, 64, 64)
    out = model(x, dataset=["levir_cd", "second_cc"])
    assert out["change"].shape == (2, 1, 64, 64)
    assert out["masks"]["levir_mci"].shape == (2, 3, 64, 64) and out["masks"]["second_cc"].shape == (2, 2, 7, 64, 64)
    assert "levir_cd" not in out["masks"]  # binary change uses the change logit alone
    counts = model.param_counts()
    assert counts["total"] == counts["encoder"] + counts["mask_decoder"]
    assert 10e6 < counts["encoder"] < 12e6  # smp ResNet-18, one copy for both dates


def test_one_encoder_for_both_dates():
    model = create_model({**_cfg("model.fusion=diff", "model.decoder_channels=[16,16,8,8,8]"),
                          "datasets": ["levir_cd"]}, 4).eval()
    x = torch.randn(1, 2, 3, 64, 64)
    with torch.no_grad():
        a = model(x)["change"]
        b = model(x.flip(1))["change"]  # dates swapped: |A - B| with shared weights is symmetric
    assert torch.allclose(a, b, atol=1e-5)


def test_no_captions_is_a_clear_error():
    model = create_model({**_cfg("model.decoder_channels=[16,16,8,8,8]"), "datasets": ["levir_cd"]}, 4)
    x = torch.randn(1, 2, 3, 64, 64)
    with pytest.raises(ChangeAgentError, match="no caption head"):
        model(x, captions=torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ChangeAgentError, match="no caption head"):
        model.predict(x)
    with pytest.raises(ChangeAgentError, match="not among the model's datasets"):
        model(x, dataset=["levir_mci"])
    with pytest.raises(ChangeAgentError, match="fusion"):
        create_model(_cfg("model.fusion=sum"), 4)


def test_hub_round_trip(tmp_path):
    model = create_model({**_cfg("model.decoder_channels=[16,16,8,8,8]"), "datasets": ["levir_cd"]}, 4).eval()
    save_pretrained(model, tmp_path / "m", datasets=["levir_cd"])
    loaded = load(tmp_path / "m").model.eval()
    x = torch.randn(1, 2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)["change"], loaded(x)["change"])
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model"]["type"] == "smp_unet"


def test_engine_trains_and_evaluates_it_on_a_mask_only_dataset(tmp_path):
    cfg = str(config_dir() / "levir_cd.yaml")
    common = ["model=smp_unet", "model.encoder_weights=null",  # tests keep random init (the recipe: ImageNet)
              "model.decoder_channels=[16,16,8,8,8]", "data.levir_cd.synthetic=true",
              f"data.synth.dir={tmp_path / 'synth'}", "data.synth.size=32", "data.synth.n_train=4",
              "data.synth.n_val=2", "data.synth.n_test=2", "data.batch_size=2", "data.num_workers=0",
              "run.threads=1", "data.augment.crop=null", "eval.every_epochs=null"]
    rc = main(["train", "-c", cfg, *common, f"run.out_dir={tmp_path / 'run'}",
               "train.stages=[{name: change, steps: 2, tasks: [mask]}]"])
    assert rc == 0
    rc = main(["eval", "-c", cfg, "--checkpoint", str(tmp_path / "run" / "best"), "--split", "test", *common,
               "--out", str(tmp_path / "ev")])
    assert rc == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())["levir_cd"]
    assert {"f1", "iou", "precision", "recall", "oa"} <= set(m) and m["n_pairs"] == 2


def test_a_dataset_with_captions_is_refused_at_evaluation(tmp_path, capsys):
    """What blocks the baseline on LEVIR-MCI today: evaluation decodes captions for every dataset
    that has them (engine/evaluator.py), and this model has none - a clear error, not a traceback."""
    rc = main(["train", "-c", str(config_dir() / "levir_mci.yaml"), "model=smp_unet", "model.encoder_weights=null",
               "model.decoder_channels=[16,16,8,8,8]", "data.levir_mci.synthetic=true",
               f"data.synth.dir={tmp_path / 'synth'}", "data.synth.size=32", "data.synth.n_train=4",
               "data.synth.n_val=2", "data.synth.n_test=2", "data.batch_size=2", "data.num_workers=0",
               "run.threads=1", "eval.every_epochs=null", "eval.meteor=false", "eval.select=miou",
               f"run.out_dir={tmp_path / 'run'}",
               "train.stages=[{name: mask, steps: 1, tasks: [mask]}]"])
    assert rc == 2
    assert "no caption head" in capsys.readouterr().err
