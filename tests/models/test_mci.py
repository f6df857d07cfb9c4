"""The faithful MCI: reference outputs reproduced through the real `convert` CLI, a safe converter,
and the model's own contract (tiny configs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from model_helpers import captions
from shared_data import DATA, FIXTURES

from changeagent.cli import main
from changeagent.errors import ChangeAgentError
from changeagent.models import create_model, load_model, save_pretrained
from changeagent.models.mci.fixture import build_reference_checkpoint, compare_to_fixture
from changeagent.models.mci.model import MCIModel

REPO = Path(__file__).resolve().parents[2]
REFERENCE = FIXTURES / "mci_reference"
VOCAB_JSON = DATA / "levir_mci_captions" / "vocab.json"
TINY = {"type": "mci", "encoder": "mit_b0", "heads": 2, "mask_neck_layers": 1, "caption_neck_layers": 2,
        "decoder_dim": 32, "decoder_layers": 2, "pos_size": 4, "max_len": 12}


def _cli(*argv: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "changeagent", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=900)


def test_converted_reference_checkpoint_reproduces_the_reference_outputs(tmp_path):
    pth, out = tmp_path / "MCI_ref.pth", tmp_path / "mci"
    build_reference_checkpoint(REFERENCE / "reference.json", pth)
    proc = _cli("convert", "change-agent", pth, "--vocab", VOCAB_JSON, "-o", out, "--json", tmp_path / "s.json")
    assert proc.returncode == 0, proc.stderr
    pth.unlink()  # 0.5 GB: free it before the comparison
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["vocab_size"] == 468 and summary["ignored"] > 0  # unused reference modules dropped
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["type"] == "mci"
    assert config["norm"] == {"levir_mci": {"mean": [0.39073, 0.38623, 0.32989], "std": [0.15329, 0.14628, 0.13648]}}
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    # what it learnt from travels with it: real LEVIR-MCI (model-info -k shows it; predict has no note)
    assert config["training"]["datasets"] == {"levir_mci": {"synthetic": False, "root": None}}
    assert config["training"]["synthetic_only"] is False and "MCI_ref.pth" in config["training"]["source"]

    result = compare_to_fixture(out, REFERENCE, device="cpu")
    assert result["mask_max_abs_err"] <= 1e-4, result
    assert result["caption_max_abs_err"] <= 1e-4, result
    assert result["greedy_equal"], (result["greedy_tokens"], result["reference_tokens"])


class _RunsCode:
    """Unpickling this calls open(marker, "w"): a checkpoint that would run code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_convert_refuses_a_checkpoint_that_needs_code_without_running_it(tmp_path, capsys):
    marker = tmp_path / "was_executed"
    pth = tmp_path / "evil.pth"
    torch.save({"encoder_dict": {"x": _RunsCode(marker)}, "encoder_trans_dict": {}, "decoder_dict": {}}, pth)
    assert not marker.exists()
    code = main(["convert", "change-agent", str(pth), "--vocab", str(VOCAB_JSON), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "weights_only" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def _partial_checkpoint(path: Path, **extra: torch.Tensor) -> Path:
    dec = {"vocab_embedding.weight": torch.zeros(468, 512), "position_encoding.pe": torch.zeros(41, 1, 512)}
    enc = {f"cnn.segformer.{k}": v for k, v in extra.items()}
    torch.save({"encoder_dict": enc, "encoder_trans_dict": {}, "decoder_dict": dec}, path)
    return path


@pytest.mark.parametrize("extra,match", [
    ({}, "encoder_dict/cnn.segformer.patch_embed1.proj.weight is missing"),
    ({"patch_embed1.proj.weight": torch.zeros(64, 3, 3, 3)},
     r"encoder_dict/cnn.segformer.patch_embed1.proj.weight has shape \(64, 3, 3, 3\), expected \(64, 3, 7, 7\)"),
])
def test_convert_names_a_missing_or_misshaped_key(tmp_path, capsys, extra, match):
    pth = _partial_checkpoint(tmp_path / "part.pth", **extra)
    assert main(["convert", "change-agent", str(pth), "--vocab", str(VOCAB_JSON), "-o", str(tmp_path / "o")]) == 2
    assert match.replace("\\", "") in capsys.readouterr().err.replace("\\", "")
    assert not (tmp_path / "o").exists()


def test_convert_rejects_other_layouts_and_vocabularies(tmp_path, capsys):
    other = tmp_path / "other.pth"
    torch.save({"model": {"w": torch.zeros(2)}}, other)
    assert main(["convert", "change-agent", str(other), "--vocab", str(VOCAB_JSON), "-o", str(tmp_path / "o")]) == 2
    assert "not a Change-Agent checkpoint" in capsys.readouterr().err
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"<NULL>": 0, "<UNK>": 1, "<START>": 2, "<END>": 3, "a": 4}))
    pth = _partial_checkpoint(tmp_path / "p.pth")
    assert main(["convert", "change-agent", str(pth), "--vocab", str(small), "-o", str(tmp_path / "o")]) == 2
    assert "has 5 words but" in capsys.readouterr().err


def test_mci_contract_batched_decoding_and_save_load(tmp_path):
    torch.manual_seed(0)
    model = create_model(TINY, 30)
    assert isinstance(model, MCIModel)
    model.eval()
    image = torch.randn(3, 2, 3, 64, 96)  # rectangular maps work (2x3 stage-4 tokens)
    out = model(image, captions(3, 7, vocab=30))
    logits = out["masks"]["levir_mci"]
    assert logits.shape == (3, 3, 64, 96) and out["caption"].shape == (3, 6, 30)
    expected_change = torch.logsumexp(logits[:, 1:], 1, keepdim=True) - logits[:, :1]
    assert torch.allclose(out["change"], expected_change)
    greedy = model.predict(image, max_len=12)["tokens"]
    for i in range(3):  # each item decodes as if alone
        alone = model.predict(image[i:i + 1], max_len=12)["tokens"][0]
        n = int((alone != 0).sum())
        assert torch.equal(greedy[i, :n], alone[:n]) and not greedy[i, n:].any()
    beam1 = model.predict(image, method="beam", beam_size=1, max_len=12)["tokens"]
    assert torch.equal(beam1, greedy)  # beam 1 is greedy: the KV-cached step serves both searches
    with pytest.raises(ChangeAgentError, match="position table"):
        model.predict(image, max_len=13, min_len=13)
    with pytest.raises(ChangeAgentError, match="exceeds the 4x4 position table"):
        model(torch.randn(1, 2, 3, 160, 64))

    save_pretrained(model, tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert isinstance(back, MCIModel) and back.config == model.config
    back.eval()
    torch.testing.assert_close(back(image)["masks"]["levir_mci"], logits)


@pytest.mark.parametrize("cfg,match", [
    ({"type": "mci", "heads": 3}, "heads"),
    ({"type": "mci", "neck": {}}, "unknown key"),
    ({"type": "mci", "datasets": ["levir_mci", "second_cc"]}, "model.datasets: needs exactly 1 values"),
    ({"type": "mci", "datasets": ["second_cc"]}, r"model.datasets\[0\]: 'second_cc' is not one of levir_mci"),
    ({"type": "mci", "num_classes": 7}, "model.num_classes: 7 is not one of 3"),
    ({"type": "mci", "tasks": ["mask"]}, "model.tasks: the reference has exactly the mask and caption heads"),
    ({"type": "mci", "dropout": 1.5}, r"model.dropout: must be in \[0, 1\), got 1.5"),
    ({"type": "mci", "decoder_layers": 0}, "model.decoder_layers: must be >= 1, got 0"),
    ({"type": "mcx"}, r"model.type: 'mcx' is not one of change_captioner, mci, smp_unet \(did you mean 'mci'\?\)"),
])
def test_mci_config_errors(cfg, match):
    with pytest.raises(ChangeAgentError, match=match):
        create_model(cfg, 30, device="meta")


def test_model_info_counts_the_faithful_mci(tmp_path, capsys):
    assert main(["model-info", "model=mci", "--json", str(tmp_path / "i.json")]) == 0
    assert "MCI detection + caption necks" in capsys.readouterr().out
    params = json.loads((tmp_path / "i.json").read_text())["params"]
    # every tensor the reference forward uses, nothing more (the unused reference modules are dropped)
    assert params["total"] == 117_754_903 and params["encoder"] == 13_151_424
