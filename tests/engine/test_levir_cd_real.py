"""Binary change detection on real imagery through the real CLI (issue 12, contract for automation):
`train -c configs/levir_cd.yaml data.levir_cd.root=... model=fast train.max_minutes=M`, then
`eval ... --checkpoint DIR/best --split test --out OUT` -> OUT/metrics.json["levir_cd"]."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

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
               "--split", "test", f"data.levir_cd.root={real_cd}", *FAST_RUN, "--out", str(ev)])
    assert rc == 0
    m = json.loads((ev / "metrics.json").read_text())["levir_cd"]
    for k in ("f1", "iou", "precision", "recall", "oa"):
        assert k in m and (m[k] is None or math.isnan(m[k]) or 0.0 <= m[k] <= 1.0), (k, m.get(k))
    assert 0.0 < m["oa"] <= 1.0
    assert "bleu4" not in m  # no captions in LEVIR-CD: none scored, none made up
    # the confusion matrix covers every held-out pixel: OA and IoU agree with F1 = 2 IoU / (1 + IoU)
    if m["iou"] and not math.isnan(m["iou"]):
        assert m["f1"] == pytest.approx(2 * m["iou"] / (1 + m["iou"]))


def test_caption_task_without_captions_is_a_config_error(real_cd, tmp_path, capsys):
    rc = main(["train", "-c", str(config_dir() / "levir_cd.yaml"), f"data.levir_cd.root={real_cd}",
               f"run.out_dir={tmp_path / 'r'}", "model=fast", "train.stages=[]", "train.steps=1", *FAST_RUN])
    assert rc == 2
    assert "supplies captions" in capsys.readouterr().err
