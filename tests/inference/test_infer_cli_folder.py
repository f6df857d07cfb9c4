"""Folder mode on real LEVIR-CD tiles: batching, summary, resume after a kill."""

import csv
import json
import shutil

import numpy as np
import pytest
from infer_helpers import TILES, listing
from PIL import Image

from changeagent.inference.predictor import Predictor

STEMS = ["test_2_0000_0512", "test_55_0256_0000", "train_36_0512_0512", "train_386_0512_0768", "val_27_0000_0256"]
FAST = ("--max-len", "6", "--no-progress", "--no-vis")


@pytest.fixture
def dirs(tmp_path):
    """Real 256 tiles cut to 96x96 (keeps the test fast) in A/ and B/ folders."""
    for d in ("A", "B"):
        (tmp_path / d).mkdir()
        for s in STEMS:
            Image.open(TILES / f"LEVIR-CD/{d}/{s}.png").crop((0, 0, 96, 96)).save(tmp_path / d / f"{s}.png")
    return tmp_path / "A", tmp_path / "B"


def test_folder_mode_and_resume(ckpt, dirs, tmp_path, run_cli, monkeypatch):
    a_dir, b_dir = dirs
    out = tmp_path / "out"
    args = ("predict", "-k", ckpt, "--a-dir", a_dir, "--b-dir", b_dir, "-o", out, "--batch-size", "2", *FAST)
    # a run killed after its first batch: two records written, nothing half-written
    real = Predictor.predict_pictures
    calls = {"n": 0}

    def dies_on_second_batch(self, pairs, t_read=0.0):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, pairs, t_read)

    monkeypatch.setattr(Predictor, "predict_pictures", dies_on_second_batch)
    code, _, err = run_cli(*args)
    assert code == 130 and "interrupted" in err
    done = sorted(n for n in listing(out) if n.endswith(".json") and not n.startswith("."))
    assert done == [f"{s}.json" for s in STEMS[:2]]
    assert not [n for n in listing(out) if ".tmp" in n] and "summary.json" not in listing(out)
    monkeypatch.setattr(Predictor, "predict_pictures", real)
    first_mtime = (out / f"{STEMS[0]}.json").stat().st_mtime_ns

    code, stdout, err = run_cli(*args, "--json", tmp_path / "r.json")
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 5 and summary["predicted"] == 3 and summary["skipped"] == 2
    assert [r["name"] for r in summary["records"]] == STEMS
    assert (out / f"{STEMS[0]}.json").stat().st_mtime_ns == first_mtime  # not redone
    for s in STEMS:
        rec = json.loads((out / f"{s}.json").read_text())
        assert np.asarray(Image.open(rec["mask"])).shape == (96, 96)
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["name"] for r in rows] == STEMS and "fraction_building" in rows[0] and "count_road" in rows[0]
    assert json.loads((tmp_path / "r.json").read_text())["mode"] == "folder"

    code, stdout, _ = run_cli(*args)
    assert code == 0 and "0 predicted, 5 already done" in stdout


def test_folder_batched_equals_pairwise(ckpt, dirs, tmp_path, run_cli):
    a_dir, b_dir = dirs
    code, _, err = run_cli("predict", "-k", ckpt, "--a-dir", a_dir, "--b-dir", b_dir, "-o", tmp_path / "f",
                           "--batch-size", "4", *FAST)
    assert code == 0, err
    s = STEMS[3]
    code, _, err = run_cli("predict", "-k", ckpt, a_dir / f"{s}.png", b_dir / f"{s}.png", "-o", tmp_path / "p", *FAST)
    assert code == 0, err
    batched = np.asarray(Image.open(tmp_path / f"f/{s}_mask.png"))
    single = np.asarray(Image.open(tmp_path / f"p/{s}_mask.png"))
    assert (batched == single).mean() > 0.999  # batched convolutions may differ in the last bit


def test_folder_errors(ckpt, dirs, tmp_path, run_cli):
    a_dir, b_dir = dirs
    (b_dir / f"{STEMS[0]}.png").unlink()
    code, _, err = run_cli("predict", "-k", ckpt, "--a-dir", a_dir, "--b-dir", b_dir, "-o", tmp_path / "o", *FAST)
    assert code == 2 and STEMS[0] in err and "no file of the same name" in err
    code, _, err = run_cli("predict", "-k", ckpt, "--a-dir", a_dir, "-o", tmp_path / "o", *FAST)
    assert code == 2 and "--b-dir" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli("predict", "-k", ckpt, "--a-dir", empty, "--b-dir", b_dir, "-o", tmp_path / "o", *FAST)
    assert code == 2 and "no images" in err
    shutil.copy(a_dir / f"{STEMS[1]}.png", a_dir / f"{STEMS[1]}.jpg")
    shutil.copy(a_dir / f"{STEMS[1]}.png", b_dir / f"{STEMS[1]}.jpg")
    (a_dir / f"{STEMS[0]}.png").unlink()
    code, _, err = run_cli("predict", "-k", ckpt, "--a-dir", a_dir, "--b-dir", b_dir, "-o", tmp_path / "o", *FAST)
    assert code == 2 and "same outputs" in err
