"""`changeagent data check` run through the real CLI on generated LEVIR-MCI / SECOND-CC folders."""

import json
import shutil

import numpy as np
from PIL import Image

from changeagent.cli import main


def run_check(root, fmt, tmp_path, *extra):
    out = tmp_path / "report.json"
    code = main(["data", "check", str(root), "--format", fmt, "--json", str(out), "--no-progress", *extra])
    return code, (json.loads(out.read_text()) if out.exists() else None)


def test_clean_levir_folder(levir_root, tmp_path, capsys):
    code, report = run_check(levir_root, "levir-mci", tmp_path)
    assert code == 0 and report["errors"] == []
    assert report["format"] == "levir-mci"
    assert {s: report["splits"][s]["pairs"] for s in ("train", "val", "test")} == {"train": 6, "val": 2, "test": 2}
    assert report["flag_mask_disagreements"] == 1
    assert report["disagreement_examples"] == ["train/train_000007.png"]
    train = report["splits"]["train"]
    assert train["mask_encodings"] == {"grey": 3, "grey-rgb": 2, "colour": 1}
    assert abs(sum(train["class_fractions"].values()) - 1) < 1e-5 and train["class_fractions"]["road"] > 0
    assert train["no_change_pairs"] == 2 and train["changeflag_0_pairs"] == 2
    assert train["captions"] == 30 and train["tokens_min"] == 4 and train["tokens_max"] == 9
    out = capsys.readouterr().out
    assert "train: 6 pairs" in out and "disagreements: 1" in out and "ok: no problems found" in out


def test_clean_second_folder(second_root, tmp_path):
    code, report = run_check(second_root, "second-cc", tmp_path)
    assert code == 0 and report["errors"] == []
    assert report["splits"]["train"]["pairs"] == 3  # restval counted as train
    assert report["splits"]["train"]["changeflag_absent_pairs"] == 2
    assert report["flag_mask_disagreements"] == 0
    assert set(report["splits"]["val"]["class_fractions"]) == {
        "unchanged", "water", "ground", "low_vegetation", "tree", "building", "playground"}


def test_every_problem_is_reported(levir_root, tmp_path, capsys):
    (levir_root / "images/train/B/train_000002.png").unlink()
    label = levir_root / "images/train/label/train_000004.png"
    arr = np.asarray(Image.open(label)).copy()
    arr[0, 0] = (0, 255, 0)
    Image.fromarray(arr).save(label)
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(levir_root / "images/train/A/train_000005.png")
    cut = levir_root / "images/train/A/train_000008.png"
    cut.write_bytes(cut.read_bytes()[:150])
    shutil.rmtree(levir_root / "images/test")
    data = json.loads((levir_root / "LevirCCcaptions.json").read_text())
    del data["images"][6]["sentences"]  # val_000001
    (levir_root / "LevirCCcaptions.json").write_text(json.dumps(data))

    code, report = run_check(levir_root, "levir-mci", tmp_path)
    assert code == 1
    errors = "\n".join(report["errors"])
    assert "missing file" in errors and "train/B/train_000002.png" in errors
    assert "label/train_000004.png has illegal colour (0, 255, 0)" in errors
    assert "differ in size" in errors and "A/train_000005.png is 32x16" in errors
    assert "cannot read image " in errors and "A/train_000008.png (truncated or not an image)" in errors
    assert "images/test" in errors and "2 test pairs listed" in errors
    assert "entry 6 (val_000001.png) has no sentences" in errors
    train = report["splits"]["train"]
    assert (train["missing_files"], train["label_errors"], train["size_mismatches"], train["unreadable_files"]) == (
        1, 1, 1, 1)
    assert report["splits"]["val"]["pairs"] == 1
    captured = capsys.readouterr()
    assert "problems: 6" in captured.out
    assert "dataset check found 6 problem(s)" in captured.err


def test_binary_mode_rejects_road_values(levir_root, tmp_path):
    code, report = run_check(levir_root, "levir-mci", tmp_path, "--mask-mode", "binary")
    assert code == 1
    assert any("illegal value 128" in e and "binary" in e for e in report["errors"])


def test_missing_root_or_captions_exit_2(tmp_path, levir_root, capsys):
    code, report = run_check(tmp_path / "absent", "levir-mci", tmp_path)
    assert code == 2 and report is None
    assert "absent does not exist" in capsys.readouterr().err
    code, _ = run_check(levir_root, "second-cc", tmp_path)
    assert code == 2
    assert "SECOND-CC-AUG.json does not exist" in capsys.readouterr().err
    code, _ = run_check(levir_root, "levir-mci", tmp_path, "--captions-file", "other.json")
    assert code == 2 and "other.json does not exist" in capsys.readouterr().err
