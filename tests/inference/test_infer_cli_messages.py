"""What predict prints: each fraction says what it is a share of and which head it comes from; a
mask-only model says it has no caption head; `-k` is --checkpoint wherever a command takes a model."""

import json
from types import SimpleNamespace

import pytest
from infer_helpers import TILES, save_tiny

from changeagent.cli import build_parser
from changeagent.engine.runlog import format_table, table_notes

FAST = ("--max-len", "4", "--no-progress", "--no-vis")
A, B = TILES / "LEVIR-CD/A/test_2_0000_0512.png", TILES / "LEVIR-CD/B/test_2_0000_0512.png"


def test_fractions_name_their_head_and_denominator(ckpt, tmp_path, run_cli):
    code, out, err = run_cli("predict", "-k", ckpt, A, B, "-o", tmp_path / "o", *FAST)
    assert code == 0, err
    rec = json.loads((tmp_path / "o" / "test_2_0000_0512.json").read_text())
    assert f"change head: {100 * rec['change_fraction']:.2f} % of valid pixels changed" in out
    classes = ", ".join(f"{k} {100 * v:.2f} %" for k, v in rec["changed_fraction"].items())
    assert f"levir_mci head: {classes} of valid pixels" in out
    assert "objects (8-connected, >= 16 px): road" in out


def test_mask_only_model_says_it_has_no_caption_head(tmp_path, run_cli):
    ck = save_tiny(tmp_path / "cd", trained=["levir_cd"], datasets=["levir_cd"])
    code, out, err = run_cli("predict", "-k", ck, A, B, "-o", tmp_path / "o", *FAST)
    assert code == 0, err
    assert "caption: (no caption head" in out
    lines = out.splitlines()
    assert any(ln.startswith("change head: ") for ln in lines)
    assert not any(ln.startswith("levir_cd head") for ln in lines)  # the change head is not printed twice
    assert json.loads((tmp_path / "o" / "test_2_0000_0512.json").read_text()).get("caption") is None


def test_mask_only_tables_do_not_mention_caption_metrics():
    mask_only = {"levir_cd": {"precision": 0.5, "recall": 0.4, "f1": 0.45, "iou": 0.3, "oa": 0.9, "n_pairs": 3}}
    opts = SimpleNamespace(caption_level="word")
    assert "caption" not in format_table(mask_only, "test split", notes=table_notes(opts, mask_only))
    both = {"levir_mci": {"miou": 0.5, "bleu4": 0.3, "n_pairs": 3}}
    assert "caption metrics on words" in format_table(both, "test split", notes=table_notes(opts, both))


def test_k_is_checkpoint_in_every_command():
    parser = build_parser()
    for argv in (["predict", "-k", "CK", "A", "B", "-o", "O"], ["index", "-k", "CK", "-o", "O"],
                 ["eval", "-c", "C", "-k", "CK"], ["model-info", "-k", "CK"]):
        assert parser.parse_args(argv).checkpoint == "CK", argv
    assert parser.parse_args(["search", "IDX", "q", "-n", "3"]).top_k == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["search", "IDX", "q", "-k", "3"])


def test_predict_device_defaults_to_auto():
    assert build_parser().parse_args(["predict", "-k", "CK", "A", "B", "-o", "O"]).device == "auto"
