"""tools/real_tiles.py: the real-tile split never leaks between crops of one parent image, the leakage
check catches a leaky split, the all-change detector, and the whole protocol runs on a tiny budget."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shared_data import DATA
from tool_loader import load_tool

TILES = DATA / "real_tiles"
pytestmark = pytest.mark.skipif(not (TILES / "LEVIR-CD").is_dir(), reason=f"{TILES} not available")




rt = load_tool("real_tiles")


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("real_split") / "data"
    return out, rt.build_split(TILES, out, crop=256)


def test_parents_follow_the_published_naming():
    assert rt.parent_of("LEVIR-CD", "test_102_0512_0000") == "levir_test_102"
    assert rt.parent_of("LEVIR-CD-1024", "test_102") == "levir_test_102"
    assert rt.parent_of("DSIFN-CD", "8_3") == "dsifn_8"
    assert rt.parent_of("WHU-CD", "000241") == "whu_000241"


def test_split_has_no_leakage_between_crops_of_one_parent(split):
    root, info = split
    parents = {s: set(v) for s, v in info["parents"].items()}
    assert not parents["train"] & parents["test"] and not parents["train"] & parents["val"]
    assert not parents["val"] & parents["test"]
    # every crop's recorded parent is in the crop's split, and the lists hold exactly those crops
    for s in ("train", "val", "test"):
        names = (root / "all" / "list" / f"{s}.txt").read_text().split()
        assert names == info["crops"][s] and names
        assert {info["parent_of"][n] for n in names} == parents[s]
    # LEVIR-CD 256 tiles are windows of present 1024-px images: dropped, their parent's 16 crops stay together
    assert not any(n.startswith("levir_test_7_0256_0512_") for s in info["crops"].values() for n in s)
    assert sum(info["parent_of"][n] == "levir_test_7" for n in info["crops"]["test"]) == 16
    # no two splits share a window of pixels: the 256 tile test_7_0256_0512 is inside test_7 (test)
    tile = np.asarray(Image.open(TILES / "LEVIR-CD" / "A" / "test_7_0256_0512.png").convert("RGB"))
    held = np.asarray(Image.open(root / "all" / "A" / "levir_test_7_0256_0512.png"))
    assert (tile == held).all() and "levir_test_7_0256_0512.png" in info["crops"]["test"]
    assert rt.check_leakage(root / "all", info["parent_of"]) == []


def test_leakage_check_catches_a_leaky_split(split, tmp_path):
    root, info = split
    leaky = tmp_path / "leaky"
    shutil.copytree(root / "all", leaky)
    train = (leaky / "list" / "train.txt").read_text().split()
    test = (leaky / "list" / "test.txt").read_text().split()
    # 1: a crop of a held-out parent is trained on
    (leaky / "list" / "train.txt").write_text("\n".join(train + [test[0]]) + "\n")
    problems = rt.check_leakage(leaky, info["parent_of"])
    assert any("is in train and test" in p or "is in test and train" in p for p in problems)
    # 2: the same pixels under another name and parent (a duplicated crop)
    (leaky / "list" / "train.txt").write_text("\n".join(train + ["copy.png"]) + "\n")
    for k in ("A", "B", "label"):
        shutil.copy(leaky / k / test[1], leaky / k / "copy.png")
    problems = rt.check_leakage(leaky, {**info["parent_of"], "copy.png": "elsewhere"})
    assert any("same pixels" in p for p in problems)


def test_all_change_detector():
    assert rt.all_change({"precision": 0.05, "recall": 1.0}, 0.05)  # everything predicted as change
    assert not rt.all_change({"precision": 0.6, "recall": 0.7}, 0.05)
    assert rt.predicted_share({"precision": 0.5, "recall": 0.5}, 0.1) == pytest.approx(0.1)


def test_protocol_runs_end_to_end_on_a_tiny_budget(tmp_path):
    out = tmp_path / "rt"
    rc = rt.main(["--out", str(out), "--crop", "64", "--limit", "3", "--threads", "1", "--minutes", "1",
                  "--set", "train.stop_at_step=1", "--set", "data.batch_size=2", "--set", "data.num_workers=0"])
    assert rc == 0
    res = json.loads((out / "real_tiles.json").read_text())
    assert set(res["models"]) == {"fast", "smp_unet"}
    for model, r in res["models"].items():
        assert r["train_rc"] == 0 and r["steps"] == 1
        for key in ("pooled", *res["protocol"]["test_sources"]):
            s = r[key]
            assert set(s) >= {"f1", "iou", "precision", "recall", "oa", "predicted_change_share", "all_change"}
            assert 0 <= s["oa"] <= 1
        best = json.loads((out / model / "best" / "config.json").read_text())
        assert best["model"]["type"] == ("smp_unet" if model == "smp_unet" else "change_captioner")
    table = (out / "real_tiles.md").read_text()
    assert "| fast | pooled |" in table and "| smp_unet | pooled |" in table
