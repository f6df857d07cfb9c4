"""Binary change detection on real imagery through the real CLI (issue 12, contract for automation):
`train -c configs/levir_cd.yaml data.levir_cd.root=... model=fast train.max_minutes=M`, then
`eval ... --checkpoint DIR/best --split test --out OUT` -> OUT/metrics.json["levir_cd"]."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from changeagent.cli import main
from changeagent.config import config_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from real_cd import build_real_levir_cd  # noqa: E402

FAST_RUN = ["data.batch_size=4", "data.eval_batch_size=4", "data.num_workers=0", "run.threads=1",
            "run.device=cpu", "train.log_every=1", "eval.every_epochs=null",
            "data.augment.crop=null",  # 128-px test crops; the recipe crops 256 px
            "model.encoder_weights=null"]  # tests keep random init (the recipe starts from ImageNet)


@pytest.fixture(scope="module")
def real_cd(tmp_path_factory) -> Path:
    """Real LEVIR-CD / WHU-CD / DSIFN-CD crops (128 px here, to stay quick), split by source image."""
    return build_real_levir_cd(tmp_path_factory.mktemp("real_levir_cd") / "LEVIR-CD", crop=128, limit=8)


def test_train_then_eval_on_held_out_real_tiles(real_cd, tmp_path):
    out = tmp_path / "run"
    rc = main(["train", "-c", str(config_dir() / "levir_cd.yaml"), f"data.levir_cd.root={real_cd}",
               f"run.out_dir={out}", "model=fast", "train.max_minutes=0.05", *FAST_RUN])
    assert rc == 0
    best = json.loads((out / "best" / "config.json").read_text())
    assert list(best["datasets"]) == ["levir_cd"] and best["model"]["datasets"] == ["levir_cd"]
    assert best["datasets"]["levir_cd"]["classes"] == ["no_change", "change"]
    ev = tmp_path / "eval"
    rc = main(["eval", "-c", str(config_dir() / "levir_cd.yaml"), "--checkpoint", str(out / "best"),
               "--split", "test", f"data.levir_cd.root={real_cd}", *FAST_RUN, "--out", str(ev), "--save-predictions"])
    assert rc == 0
    m = json.loads((ev / "metrics.json").read_text())["levir_cd"]
    assert "bleu4" not in m  # no captions in LEVIR-CD: none scored, none made up
    # the reported scores are those of the masks eval wrote against the held-out labels, every pixel
    # counted once: recompute the confusion matrix from the files
    names = (real_cd / "list" / "test.txt").read_text().split()
    tp = fp = fn = tn = 0
    for name in names:
        pred = np.asarray(Image.open(ev / "predictions" / "levir_cd" / name))
        label = np.asarray(Image.open(real_cd / "label" / name))
        label = label.max(axis=-1) if label.ndim == 3 else label
        assert pred.shape == label.shape and set(np.unique(pred).tolist()) <= {0, 1}, name
        p, t = pred > 0, label > 0
        tp, fp = tp + int((p & t).sum()), fp + int((p & ~t).sum())
        fn, tn = fn + int((~p & t).sum()), tn + int((~p & ~t).sum())
    assert m["n_pairs"] == len(names) and tp + fn > 0  # the held-out tiles hold change
    ratio = lambda a, b: a / b if b else None  # noqa: E731
    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    expected = {"oa": (tp + tn) / (tp + fp + fn + tn), "iou": ratio(tp, tp + fp + fn), "recall": recall,
                "precision": precision, "f1": ratio(2 * tp, 2 * tp + fp + fn)}
    for key, value in expected.items():
        if value is None:  # 0/0 (no pixel predicted as change): reported as missing, never as a number
            assert m[key] is None or math.isnan(m[key]), (key, m[key])
        else:
            assert m[key] == pytest.approx(value, abs=1e-9), (key, m[key], value)

def test_caption_task_without_captions_is_a_config_error(real_cd, tmp_path, capsys):
    rc = main(["train", "-c", str(config_dir() / "levir_cd.yaml"), f"data.levir_cd.root={real_cd}",
               f"run.out_dir={tmp_path / 'r'}", "model=fast", "train.stages=[]", "train.steps=1", *FAST_RUN])
    assert rc == 2
    assert "supplies captions" in capsys.readouterr().err
