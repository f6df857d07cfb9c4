"""Folder-mode resume checks what produced the existing records (weights + result-changing options)."""

import json

import pytest
from infer_helpers import TILES, save_tiny
from PIL import Image

STEMS = ["test_2_0000_0512", "test_55_0256_0000", "val_27_0000_0256"]
FAST = ("--max-len", "4", "--no-progress", "--no-vis")


@pytest.fixture
def dirs(tmp_path):
    for d in ("A", "B"):
        (tmp_path / d).mkdir()
        for s in STEMS:
            Image.open(TILES / f"LEVIR-CD/{d}/{s}.png").crop((0, 0, 64, 64)).save(tmp_path / d / f"{s}.png")
    return tmp_path / "A", tmp_path / "B"


def test_resume_refuses_another_model_and_overwrite_redoes(ckpt, dirs, tmp_path, run_cli):
    a_dir, b_dir = dirs
    out = tmp_path / "out"
    other = save_tiny(tmp_path / "other", seed=7)
    args = ("--a-dir", a_dir, "--b-dir", b_dir, "-o", out, *FAST)
    code, _, err = run_cli("predict", "-k", ckpt, *args)
    assert code == 0, err
    first = json.loads((out / "summary.json").read_text())
    assert first["model"]["sha256"] and first["options"]["max_len"] == 4

    # another checkpoint into the same folder: refused, naming the weights, nothing rewritten
    before = (out / f"{STEMS[0]}.json").stat().st_mtime_ns
    code, stdout, err = run_cli("predict", "-k", other, *args)
    assert code == 2 and "model weights" in err and "--overwrite" in err and str(other) in err
    assert (out / f"{STEMS[0]}.json").stat().st_mtime_ns == before

    # a result-changing option: refused, naming the option with both values
    code, _, err = run_cli("predict", "-k", ckpt, *args, "--min-area", "3")
    assert code == 2 and "--min-area (16, now 3)" in err
    code, _, err = run_cli("predict", "-k", ckpt, *args, "--scale", "percentile")
    assert code == 2 and "--scale" in err
    # ... while an option that changes nothing resumes
    code, stdout, err = run_cli("predict", "-k", ckpt, *args, "--batch-size", "1")
    assert code == 0 and "0 predicted, 3 already done" in stdout, err

    code, stdout, err = run_cli("predict", "-k", other, *args, "--overwrite")
    assert code == 0 and "3 predicted, 0 already done" in stdout, err
    redone = json.loads((out / "summary.json").read_text())
    assert redone["model"]["sha256"] != first["model"]["sha256"]
    assert redone["model"]["checkpoint"] == str(other.resolve())


def test_records_of_an_unknown_run_are_not_taken_for_done(ckpt, dirs, tmp_path, run_cli):
    a_dir, b_dir = dirs
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{STEMS[1]}.json").write_text(json.dumps({"name": STEMS[1], "caption": "old"}))
    code, _, err = run_cli("predict", "-k", ckpt, "--a-dir", a_dir, "--b-dir", b_dir, "-o", out, *FAST)
    assert code == 2 and "not recorded" in err and "--overwrite" in err


def test_record_paths_are_absolute(ckpt, dirs, tmp_path, run_cli, monkeypatch):
    a_dir, b_dir = dirs
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("predict", "-k", ckpt, "--a-dir", "A", "--b-dir", "B", "-o", "rel", *FAST)
    assert code == 0, err
    summary = json.loads((tmp_path / "rel" / "summary.json").read_text())
    row = summary["records"][0]
    rec = json.loads((tmp_path / "rel" / f"{STEMS[0]}.json").read_text())
    for path in (row["record"], row["mask"], rec["a"], rec["b"], rec["mask"]):
        assert path.startswith("/"), path
