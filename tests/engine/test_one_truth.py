"""Issue 17 §2: one truth per fact. Per-dataset normalisation end to end (config, readers, the model
folder's record, eval), the validated config is what runs (init_from / --checkpoint resolved before
validation, `config show` prints it), one key per option (compile, channels_last, decoding defaults,
one device resolver), no silent fallbacks, and one owner of the resume state."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import yaml
from engine_helpers import TINY_MODEL, write_config

from changeagent.cli import main
from changeagent.config import config_dir
from changeagent.data.constants import LEVIR_MEAN, LEVIR_STD
from changeagent.data.registry import get_spec
from changeagent.data.vocab import Vocabulary
from changeagent.engine.distributed import DistInfo
from changeagent.engine.loaders import make_dataset
from changeagent.engine.schema import load_run_config
from changeagent.errors import ChangeAgentError
from changeagent.models import create_model, save_pretrained

SECOND = get_spec("second_cc")
TINY_VOCAB = Vocabulary.build([["a", "road", "is", "built"]], min_count=0)


def _folder(path, norm, datasets=("levir_mci", "second_cc")):
    """A tiny model folder trained (so it says) on `datasets` with statistics `norm` per dataset."""
    model = create_model({**TINY_MODEL, "datasets": list(datasets)}, len(TINY_VOCAB))
    save_pretrained(model, path, vocab=TINY_VOCAB, norm=norm, datasets=list(datasets))
    return path


# -- 1. normalisation per dataset -------------------------------------------------------------------

def test_joint_config_normalises_each_dataset_with_its_own_statistics(synth_roots):
    cfg = load_run_config(config_dir() / "joint.yaml", ["model=fast", *(f"data.{n}.root={r}" for n, r in
                                                                          synth_roots.items())])
    assert list(cfg.data.levir_mci.mean) == list(LEVIR_MEAN) and list(cfg.data.levir_mci.std) == list(LEVIR_STD)
    assert list(cfg.data.second_cc.mean) == list(SECOND.mean) and list(cfg.data.second_cc.std) == list(SECOND.std)
    vocab = TINY_VOCAB
    levir = make_dataset("levir_mci", synth_roots["levir_mci"], "val", cfg, vocab, train=False)
    second = make_dataset("second_cc", synth_roots["second_cc"], "val", cfg, vocab, train=False)
    assert np.allclose(levir.mean, LEVIR_MEAN) and np.allclose(second.mean, SECOND.mean)
    assert np.allclose(second.std, SECOND.std) and not np.allclose(second.mean, LEVIR_MEAN)
    # a run overrides one dataset's statistics, the other keeps its own
    cfg = load_run_config(config_dir() / "joint.yaml", ["model=fast", "data.second_cc.mean=[0.3,0.3,0.3]",
                                                        "data.second_cc.std=[0.2,0.2,0.2]"])
    assert list(cfg.data.second_cc.mean) == [0.3] * 3 and list(cfg.data.levir_mci.mean) == list(LEVIR_MEAN)


def test_the_single_run_normalisation_key_is_gone():
    with pytest.raises(ChangeAgentError, match=r"data.mean: normalisation is per dataset: data.<id>.mean"):
        load_run_config(None, ["data.mean=[0.5,0.5,0.5]"])
    with pytest.raises(ChangeAgentError, match="data.second_cc.std: has 1 values but data.second_cc.mean has 3"):
        load_run_config(None, ["data.second_cc.mean=[0.5,0.5,0.5]", "data.second_cc.std=[0.2]"])


def test_training_records_the_statistics_of_every_trained_dataset(tmp_path, synth_roots):
    cfg = write_config(tmp_path / "c.yaml", synth_roots, datasets=("levir_mci", "second_cc"),
                       data={"second_cc": {"mean": [0.45, 0.45, 0.4]}}, train={"steps": 1})
    out = tmp_path / "run"
    assert main(["train", "-c", str(cfg), f"run.out_dir={out}"]) == 0
    import json

    record = json.loads((out / "best" / "config.json").read_text())["norm"]
    assert record == {"levir_mci": {"mean": list(LEVIR_MEAN), "std": list(LEVIR_STD)},
                      "second_cc": {"mean": [0.45, 0.45, 0.4], "std": list(SECOND.std)}}
    # the run folder records the validated config that ran
    ran = yaml.safe_load((out / "config.yaml").read_text())
    assert ran["data"]["second_cc"]["mean"] == [0.45, 0.45, 0.4]
    # last.pt gives the same record (eval / predict of a run folder without best/)
    from changeagent.models.hub import read_norms

    assert read_norms(out / "last.pt")[0] == record


# -- 3. the validated config is what runs -------------------------------------------------------------

def test_eval_takes_the_recorded_statistics_before_validation_and_says_so(tmp_path, capsys):
    norm = {"levir_mci": {"mean": [0.4, 0.4, 0.3], "std": [0.2, 0.2, 0.1]},
            "second_cc": {"mean": list(SECOND.mean), "std": list(SECOND.std)}}
    ck = _folder(tmp_path / "m", norm)
    cfg = load_run_config(None, ["data.datasets=[levir_mci,second_cc]"], checkpoint=ck)
    assert list(cfg.data.levir_mci.mean) == [0.4, 0.4, 0.3] and list(cfg.data.second_cc.std) == list(SECOND.std)
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "data.levir_mci.mean/std: eval uses the statistics" in notes[0]
    assert str(ck / "config.json") in notes[0]  # second_cc's agree with the config: nothing said
    # `config show` with the same --checkpoint prints exactly that
    assert main(["config", "show", "data.datasets=[levir_mci,second_cc]", "--checkpoint", str(ck)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["data"]["levir_mci"]["mean"] == [0.4, 0.4, 0.3]
    # a folder that records no statistics: an error naming it, unless the config gives them
    bare = _folder(tmp_path / "bare", None)
    with pytest.raises(ChangeAgentError, match=f"{bare}/config.json records no normalisation statistics"):
        load_run_config(None, [], checkpoint=bare)
    given = load_run_config(None, ["data.levir_mci.mean=[0.5,0.5,0.5]", "data.levir_mci.std=[0.1,0.1,0.1]"],
                            checkpoint=bare)
    assert list(given.data.levir_mci.mean) == [0.5] * 3


def test_init_from_is_resolved_into_the_validated_config(tmp_path, capsys):
    norm = {"levir_mci": {"mean": [0.4, 0.4, 0.3], "std": [0.2, 0.2, 0.1]}}
    ck = _folder(tmp_path / "run" / "best", norm, datasets=("levir_mci",))
    cfg = load_run_config(None, [f"train.init_from={tmp_path / 'run'}"])
    assert cfg.train.init_from == str(ck)  # the run folder's best/
    assert cfg.data.vocab == str(ck / "vocab.json") and list(cfg.data.levir_mci.mean) == [0.4, 0.4, 0.3]
    assert cfg.model.encoder == TINY_MODEL["encoder"] and cfg.model.encoder_weights is None
    assert "train.init_from uses the statistics" in capsys.readouterr().err
    assert main(["config", "show", f"train.init_from={tmp_path / 'run'}"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["model"]["encoder"] == TINY_MODEL["encoder"] and shown["data"]["levir_mci"]["std"] == [0.2, 0.2, 0.1]


def test_demo_evaluation_config_is_loaded_not_copied():
    from changeagent.engine import runs

    src = inspect.getsource(runs.run_demo)
    assert "checkpoint=out / \"best\"" in src and ".copy()" not in src


# -- 4. one place per option ---------------------------------------------------------------------------

def test_compile_and_channels_last_are_model_keys_and_mci_keeps_its_false():
    for key in ("compile", "channels_last"):
        with pytest.raises(ChangeAgentError, match=f"train.{key}: is model.{key}"):
            load_run_config(None, [f"train.{key}=true"])
    from changeagent.engine.model_init import build_model

    def weights_nhwc(model_name: str, extra: list[str]) -> bool:
        cfg = load_run_config(None, [f"model={model_name}", *extra])
        model = build_model(cfg, TINY_VOCAB, torch.device("cpu"), None)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        return conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()

    small_mci = ["model.decoder_dim=16", "model.heads=2", "model.mask_neck_layers=1", "model.caption_neck_layers=1"]
    assert not weights_nhwc("mci", small_mci)  # configs/model/mci.yaml: channels_last: false
    assert weights_nhwc("fast", ["model.encoder=resnet18"])


def test_decoding_defaults_come_from_one_place():
    from changeagent.engine.evaluator import EvalOptions
    from changeagent.engine.schema import EvalCfg
    from changeagent.inference.cli import add_predict_arguments
    from changeagent.inference.predictor import Predictor
    from changeagent.models.change_captioner import ChangeCaptioner
    from changeagent.models.decode_cfg import DECODE

    keys = ("method", "beam_size", "max_len", "length_penalty")
    want = {k: getattr(DECODE, k) for k in keys}
    assert {k: getattr(EvalCfg(), k) for k in keys} == want
    assert {k: getattr(EvalOptions(), k) for k in keys} == want
    for fn in (Predictor.__init__, ChangeCaptioner.predict):
        params = inspect.signature(fn).parameters
        assert {k: params[k].default for k in keys} == want, fn
    import argparse

    parser = argparse.ArgumentParser()
    add_predict_arguments(parser)
    args = parser.parse_args(["--checkpoint", "x", "--out", "y"])
    assert {k: getattr(args, k) for k in keys} == want


def test_one_device_resolver(monkeypatch):
    import changeagent.engine.distributed as distributed
    import changeagent.models.factory as factory
    from changeagent.devices import resolve_device

    assert not hasattr(distributed, "pick_device") and not hasattr(factory, "resolve_device")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ChangeAgentError, match="run.device 'gpu0' is not a device"):
        resolve_device("gpu0", key="run.device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda", 1)  # this process's GPU
    with pytest.raises(ChangeAgentError, match="--device cuda:5: this machine shows 2 GPU"):
        resolve_device("cuda:5")
    # the engine takes the same rule: a bad run.device is an error, not a torch traceback
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ChangeAgentError, match="run.device cuda: CUDA is not available"):
        distributed.init_distributed("cuda")
    assert distributed.init_distributed("cpu") == DistInfo(0, 1, 0, torch.device("cpu"))


# -- 8. no silent fallbacks ----------------------------------------------------------------------------

def test_mamba_auto_on_cuda_without_the_kernel_says_so(monkeypatch, capsys):
    from changeagent.models.necks import selective_scan as ss

    monkeypatch.setattr(ss, "_kernel_scan", None)
    monkeypatch.setattr(ss, "KERNEL_ERROR", None)
    monkeypatch.setattr(ss, "_logged", set())
    assert ss.resolve_backend("auto", torch.device("cuda")) == "torch"
    assert ss.resolve_backend("auto", torch.device("cuda")) == "torch"
    out = capsys.readouterr().out
    assert out.count("note: model.neck.backend=auto on CUDA uses the PyTorch selective scan") == 1
    assert "mamba-ssm is not installed" in out
    monkeypatch.setattr(ss, "_logged", set())
    assert ss.resolve_backend("auto", torch.device("cpu")) == "torch"  # the CPU path is the expected one
    assert "note:" not in capsys.readouterr().out


# -- 10. one owner of the resume state; transforms have a seeding API --------------------------------------

def test_last_pt_holds_exactly_what_resume_owns(tmp_path, synth_roots):
    from changeagent.engine.checkpoint import REQUIRED
    from changeagent.engine.resume import STATE

    assert set(REQUIRED) - {"format"} <= set(STATE)
    cfg = write_config(tmp_path / "c.yaml", synth_roots, train={"steps": 1}, data={"augment": {"enabled": True}})
    assert main(["train", "-c", str(cfg), f"run.out_dir={tmp_path / 'run'}"]) == 0
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert list(state) == ["format", *STATE]


def test_transforms_are_seeded_through_their_api():
    from changeagent.data.transforms import build_transforms

    t = build_transforms({"enabled": True, "color_jitter": {"brightness": 0.4, "p": 1.0}}, train=True)
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(2))
    sample = {"image_a": a, "image_b": b, "masks": {"mask": np.zeros((32, 32), np.int64)}, "captions": ["a road"]}
    t.reseed(7)
    first = t({k: (v.copy() if hasattr(v, "copy") else v) for k, v in sample.items()})
    t({**sample})  # the stream moves on
    t.reseed(7)
    again = t({**sample})
    assert np.array_equal(first["image_a"], again["image_a"]) and np.array_equal(first["image_b"], again["image_b"])
    from changeagent.engine import seeding

    assert "_rng" not in inspect.getsource(seeding)  # nothing writes a transform's private fields
