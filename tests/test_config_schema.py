"""Strict typed run configs through the real CLI: every bad key or value exits 2 with
`error: <key>: <what is wrong>` on stderr (no traceback), typos get a "did you mean"."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from changeagent.cli import main
from changeagent.config import config_dir

DEMO = str(config_dir() / "demo.yaml")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# the examples of issue 10 ("what we measured"), then a typo at every level of the schema
@pytest.mark.parametrize("override, expected", [
    ("model.neck.heda=4", "error: model.neck.heda: unknown key (did you mean 'heads'?)"),
    ("model.neck.ffn_ratio=abc", "error: model.neck.ffn_ratio: expected a number, got 'abc'"),
    ("model.mask_decoder.dropout=2", "error: model.mask_decoder.dropout: must be in [0, 1), got 2.0"),
    ("optim.betas=[0.9]", "error: optim.betas: needs exactly 2 values, got 1: [0.9]"),
    ("data.augment.color_jitter=0.2", "error: data.augment.color_jitter: expected a mapping of brightness"),
    ("trian.steps=3", "error: trian: unknown key (did you mean 'train'?)"),
    ("train.lr=3e-4", "error: train.lr: unknown key; lr lives in another section: use optim.lr"),
    ("train.batch_size=4", "error: train.batch_size: unknown key; batch_size lives in another section: use "
                           "data.batch_size"),
    ("run.seeed=1", "error: run.seeed: unknown key (did you mean 'seed'?)"),
    ("data.batchsize=4", "error: data.batchsize: unknown key (did you mean 'batch_size'?)"),
    ("data.levir_mci.rot=/x", "error: data.levir_mci.rot: unknown key (did you mean 'root'?)"),
    ("data.synth.sise=64", "error: data.synth.sise: unknown key (did you mean 'size'?)"),
    ("data.augment.crpo=32", "error: data.augment.crpo: unknown key (did you mean 'crop'?)"),
    ("data.augment.color_jitter.hue=0.9", "error: data.augment.color_jitter.hue: must be in [0, 0.5], got 0.9"),
    ("model.encodr=resnet18", "error: model.encodr: unknown key (did you mean 'encoder'?)"),
    ("model.neck.name=transfomer", "error: model.neck.name: 'transfomer' is not one of diff, transformer, mamba "
                                   "(did you mean 'transformer'?)"),
    ("model.caption_decoder.layerz=2", "error: model.caption_decoder.layerz: unknown key (did you mean 'layers'?)"),
    ("model.caption_decoder.heads=3", "error: model.caption_decoder.heads: 3 does not divide"),
    ("loss.mask.dicee=1", "error: loss.mask.dicee: unknown key (did you mean 'dice'?)"),
    ("loss.weighting.epss=1", "error: loss.weighting.epss: unknown key (did you mean 'eps'?)"),
    ("optim.lrr=1", "error: optim.lrr: unknown key (did you mean 'lr'?)"),
    ("optim.name=sgd", "error: optim.name: 'sgd' is not one of adamw, adam"),
    ("sched.warmup=5", "error: sched.warmup: unknown key (did you mean 'warmup_steps'?)"),
    ("train.stages=[{name: a, step: 3}]", "error: train.stages[0].step: unknown key (did you mean 'steps'?)"),
    ("train.grad_accum=0", "error: train.grad_accum: must be >= 1, got 0"),
    ("train.ema=1.5", "error: train.ema: must be in (0, 1), got 1.5"),
    ("eval.selct=miou", "error: eval.selct: unknown key (did you mean 'select'?)"),
    ("eval.meteor=maybe", "error: eval.meteor: expected true or false, got 'maybe'"),
    ("wandb.mod=online", "error: wandb.mod: unknown key (did you mean 'mode'?)"),
])
def test_bad_key_or_value_exits_2_with_the_key(capsys, override, expected):
    code, _, err = run_cli(capsys, "config", "show", "-c", DEMO, override)
    assert code == 2
    assert err.startswith(expected), err
    assert "Traceback" not in err


def test_train_reports_before_building_anything(tmp_path):
    """The real `changeagent train` process: exit 2, one error line, no traceback, nothing written."""
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "changeagent", "train", "-c", DEMO, f"run.out_dir={out}",
                        "model.neck.heda=4"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: model.neck.heda: unknown key (did you mean 'heads'?); known keys here: "
                                "name, dim, block_levels, fuse_kernel, depth, heads, ffn_ratio, dropout")
    assert not out.exists()


def test_per_type_keys_of_polymorphic_sections(capsys):
    # a diff neck has no attention options; a weighting strategy only its own keys
    code, _, err = run_cli(capsys, "config", "show", "model.neck.name=diff", "model.neck.depth=2")
    assert code == 2 and err.startswith("error: model.neck.depth: unknown key")
    code, _, err = run_cli(capsys, "config", "show", "loss.weighting.name=dwa", "loss.weighting.temprature=1")
    assert code == 2 and "did you mean 'temperature'" in err
    # switching the type on the command line starts the section afresh with the new type's defaults
    code, out, _ = run_cli(capsys, "config", "show", "-c", DEMO, "model.neck.name=mamba", "model.neck.depth=1")
    assert code == 0
    assert "name: mamba" in out and "d_state: 16" in out and "heads" not in out.split("mask_decoder")[0]


def test_config_show_prints_the_resolved_config(capsys, tmp_path):
    out_json = tmp_path / "cfg.json"
    code, out, _ = run_cli(capsys, "config", "show", "-c", DEMO, "train.steps=7", "--json", str(out_json))
    assert code == 0
    assert "steps: 7" in out and "heads: 4" in out  # the defaults and the fast model are filled in
    data = json.loads(out_json.read_text())
    assert data["train"]["steps"] == 7 and data["model"]["neck"]["name"] == "transformer"
    assert data["loss"]["weighting"] == {"name": "normalized", "eps": 1e-8}
    assert data["data"]["augment"]["enabled"] is False


def test_docs_key_reference_is_generated_from_the_schemas():
    from changeagent.engine.config_docs import BEGIN, END, render_reference

    text = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    section = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert section == render_reference().strip(), "docs/training.md is stale: run python tools/gen_config_docs.py"
    for key in ("`heads`", "`d_state`", "`temperature`", "`color_jitter`", "`length_penalty`", "`synthetic`"):
        assert key in section


def test_a_broken_mamba_ssm_install_is_reported_at_start(capsys, monkeypatch):
    from changeagent.models.necks import selective_scan

    monkeypatch.setattr(selective_scan, "KERNEL_ERROR", "ImportError: undefined symbol: _ZN3c10")
    code, _, err = run_cli(capsys, "config", "show", "-c", DEMO, "model=mamba")
    assert code == 2
    assert err.startswith("error: model.neck.backend: mamba-ssm is installed but cannot be imported "
                          "(ImportError: undefined symbol")
    code, _, _ = run_cli(capsys, "config", "show", "-c", DEMO, "model=mamba", "model.neck.backend=torch")
    assert code == 0
