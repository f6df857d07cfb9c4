"""Pretrained encoders for the real-data recipes, random init for the synthetic benchmark and the demo,
and a clear error where the weights cannot be downloaded (offline: huggingface_hub's offline mode
with an empty cache, so the test never waits on the network)."""

import pytest

from changeagent.cli import main
from changeagent.config import config_dir
from changeagent.engine.schema import load_run_config
from changeagent.errors import ChangeAgentError
from changeagent.models import create_model


@pytest.fixture
def offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))


@pytest.mark.parametrize("name", ["levir_mci", "second_cc", "joint", "joint_partial", "levir_cd"])
def test_real_data_recipes_start_from_imagenet(name):
    cfg = load_run_config(config_dir() / f"{name}.yaml")
    assert cfg.model.encoder_weights == "imagenet"
    # another base model keeps the run's choice; null turns it off
    assert load_run_config(config_dir() / f"{name}.yaml", ["model=fast"]).model.encoder_weights == "imagenet"
    assert load_run_config(config_dir() / f"{name}.yaml", ["model.encoder_weights=null"]).model.encoder_weights is None


def test_mci_recipe_is_the_reference_encoder():
    model = load_run_config(config_dir() / "levir_mci.yaml").model
    assert model.type == "mci" and model.encoder == "mit_b1"


def test_synthetic_demo_keeps_random_init():
    assert load_run_config(config_dir() / "demo.yaml").model.encoder_weights is None


def test_base_with_edits_in_a_run_file(tmp_path):
    run = tmp_path / "r.yaml"
    run.write_text("model: {base: fast, encoder_weights: imagenet, mask_decoder: {channels: 16}}\n")
    cfg = load_run_config(run, ["model=mamba"])
    assert cfg.model.neck.name == "mamba" and cfg.model.mask_decoder.channels == 16
    assert cfg.model.encoder_weights == "imagenet"


@pytest.mark.parametrize("encoder", ["tu-mobilenetv3_small_050", "resnet18"])
def test_download_failure_is_a_clear_error(offline, encoder):
    with pytest.raises(ChangeAgentError) as e:
        create_model({"encoder": encoder, "encoder_weights": "imagenet", "neck": {"name": "diff"}}, 10)
    msg = str(e.value)
    assert "cannot download the pretrained weights" in msg and encoder in msg
    assert "set model.encoder_weights=null to train from scratch" in msg


def test_download_failure_of_the_smp_unet_baseline(offline):
    with pytest.raises(ChangeAgentError, match="set model.encoder_weights=null to train from scratch"):
        create_model({"type": "smp_unet", "encoder": "resnet18", "encoder_weights": "imagenet",
                      "datasets": ["levir_cd"]}, 10)


def test_download_failure_through_the_cli(offline, capsys):
    code = main(["model-info", "model=fast", "model.encoder_weights=imagenet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: model.encoder_weights=imagenet: cannot download")
