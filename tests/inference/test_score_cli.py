"""`changeagent score --pred OUT/ --labels LABELS/`: per file and pooled scores against label images."""

import json

import numpy as np
import pytest
from infer_helpers import TILES, save_tiny
from PIL import Image

from changeagent.cli import main

STEMS = ["test_2_0000_0512", "test_55_0256_0000", "val_27_0000_0256"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture
def cd_folders(tmp_path):
    """64x64 crops of real LEVIR-CD pairs and their 0/255 labels."""
    for d in ("A", "B", "label"):
        (tmp_path / d).mkdir()
        for s in STEMS:
            Image.open(TILES / f"LEVIR-CD/{d}/{s}.png").crop((96, 96, 160, 160)).save(tmp_path / d / f"{s}.png")
    return tmp_path


def _expected(masks, labels):
    tp = sum(int(((m == 1) & (t == 1)).sum()) for m, t in zip(masks, labels))
    fp = sum(int(((m == 1) & (t == 0)).sum()) for m, t in zip(masks, labels))
    fn = sum(int(((m == 0) & (t == 1)).sum()) for m, t in zip(masks, labels))
    return {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "f1": 2 * tp / (2 * tp + fp + fn),
            "iou": tp / (tp + fp + fn)}


def test_predict_output_scored_against_binary_labels(cd_folders, tmp_path, capsys):
    ck = save_tiny(tmp_path / "cd", trained=["levir_cd"], datasets=["levir_cd"])
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", "-k", ck, "--a-dir", cd_folders / "A", "--b-dir", cd_folders / "B",
                       "-o", out, "--max-len", "3", "--no-progress", "--no-vis")
    assert code == 0, err
    code, stdout, err = run(capsys, "score", "--pred", out, "--labels", cd_folders / "label",
                            "--json", tmp_path / "s.json")
    assert code == 0, err
    res = json.loads((tmp_path / "s.json").read_text())
    masks = [np.asarray(Image.open(out / f"{s}_mask.png")) for s in STEMS]
    labels = [np.asarray(Image.open(cd_folders / "label" / f"{s}.png")) // 255 for s in STEMS]
    exp = _expected(masks, labels)
    assert res["format"] == "levir_cd" and res["head"] == "levir_cd" and res["files"] == 3
    for key, value in exp.items():
        assert res["pooled"][key] == pytest.approx(value)
    one = _expected(masks[:1], labels[:1])
    assert res["per_file"][0]["name"] == STEMS[0] and res["per_file"][0]["f1"] == pytest.approx(one["f1"])
    assert "pooled" in stdout and f"{100 * exp['f1']:.2f}" in stdout


def test_plain_mask_folder_and_class_masks(cd_folders, tmp_path, capsys):
    # a perfect binary prediction as a plain folder of <stem>_mask.png with ids 0/1
    pred = tmp_path / "pred"
    pred.mkdir()
    for s in STEMS:
        Image.fromarray((np.asarray(Image.open(cd_folders / "label" / f"{s}.png")) // 255).astype(np.uint8)).save(
            pred / f"{s}_mask.png")
    code, _, err = run(capsys, "score", "--pred", pred, "--labels", cd_folders / "label", "--json", tmp_path / "p.json")
    assert code == 0, err
    pooled = json.loads((tmp_path / "p.json").read_text())["pooled"]
    assert pooled["f1"] == pooled["iou"] == pooled["oa"] == 1.0

    # LEVIR-MCI class masks: grey labels 0/128/255, predictions with one building pixel called road
    lab, cls = tmp_path / "mci_labels", tmp_path / "mci_pred"
    lab.mkdir()
    cls.mkdir()
    target = np.zeros((8, 8), np.uint8)
    target[:2] = 1
    target[5:] = 2
    Image.fromarray(np.choose(target, [0, 128, 255]).astype(np.uint8)).save(lab / "p.png")
    guess = target.copy()
    guess[7, 7] = 1
    Image.fromarray(guess).save(cls / "p.png")
    code, stdout, err = run(capsys, "score", "--pred", cls, "--labels", lab, "--format", "levir_mci",
                            "--json", tmp_path / "m.json")
    assert code == 0, err
    res = json.loads((tmp_path / "m.json").read_text())["pooled"]
    assert res["iou_background"] == 1.0 and res["iou_road"] == pytest.approx(16 / 17)
    assert res["iou_building"] == pytest.approx(23 / 24) and res["miou"] == pytest.approx((1 + 16 / 17 + 23 / 24) / 3)
    assert "MIoU" in stdout


def test_missing_predictions_and_wrong_format_fail_clearly(cd_folders, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "score", "--pred", empty, "--labels", cd_folders / "label")
    assert code == 2 and "no prediction in" in err and STEMS[0] in err
    pred = tmp_path / "p3"
    pred.mkdir()
    for s in STEMS:
        Image.fromarray(np.full((64, 64), 2, np.uint8)).save(pred / f"{s}.png")
    code, _, err = run(capsys, "score", "--pred", pred, "--labels", cd_folders / "label")
    assert code == 2 and "class id 2" in err and "--format" in err
