"""One run over datasets that supply different targets (issue 12.4): LEVIR-MCI (3-class mask +
captions), LEVIR-CD (binary change only), LEVIR-CC (captions only), SECOND-CC (land cover + captions);
each dataset evaluated with its own metrics in one table and metrics.json[<dataset id>]."""

from __future__ import annotations

import json

import pytest
import yaml
from engine_helpers import TINY_MODEL

from changeagent.cli import main
from changeagent.config import config_dir
from changeagent.data.registry import get_spec

PARTIAL = ("levir_mci", "levir_cd", "levir_cc", "second_cc")


@pytest.fixture(scope="module")
def partial_roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("partial")
    return {n: get_spec(n).synth(base / n, 8, 3, 3, size=32, seed=i, progress=False) and base / n
            for i, n in enumerate(PARTIAL)}


def test_joint_partial_recipe_trains_and_reports_each_dataset_its_way(tmp_path, partial_roots, capsys):
    """configs/joint_partial.yaml as shipped, with a tiny model and a few steps."""
    model_yaml = tmp_path / "tiny.yaml"
    model_yaml.write_text(yaml.safe_dump(TINY_MODEL))
    cfg = str(config_dir() / "joint_partial.yaml")
    data = [f"data.{n}.root={partial_roots[n]}" for n in PARTIAL]
    small = [f"model={model_yaml}", "data.batch_size=4", "data.eval_batch_size=4", "data.num_workers=0",
             "data.min_count=0", "run.threads=1", "run.device=cpu", "eval.meteor=false", "eval.every_epochs=null",
             "eval.select=miou+bleu4", "model.encoder_weights=null"]  # no Java needed (S*m needs METEOR)
    out = tmp_path / "run"
    assert main(["train", "-c", cfg, *data, *small, f"run.out_dir={out}", "train.epochs=null", "train.steps=4"]) == 0
    ev = tmp_path / "ev"
    assert main(["eval", "-c", cfg, *data, *small, "--checkpoint", str(out / "best"), "--split", "test",
                 "--out", str(ev)]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert list(m) == [*PARTIAL, "eval"]  # one entry per dataset, then the eval options
    assert {"f1", "iou", "precision", "recall", "oa"} <= set(m["levir_cd"]) and "bleu4" not in m["levir_cd"]
    assert "bleu4" in m["levir_cc"] and "miou" not in m["levir_cc"] and "f1" not in m["levir_cc"]
    assert {"miou", "iou_road", "bleu4"} <= set(m["levir_mci"])
    assert {"sek", "fscd", "bleu4"} <= set(m["second_cc"])
    table = capsys.readouterr().out
    assert all(n in table for n in PARTIAL) and " F1 " in table
    saved = json.loads((out / "best" / "config.json").read_text())
    assert list(saved["datasets"]) == list(PARTIAL)
    assert saved["model"]["datasets"] == list(PARTIAL)  # one caption token each, semantic heads only where needed
    from changeagent.models import load_model

    assert set(load_model(out / "best").mask_decoder.heads) == {"levir_mci", "second_cc"}
