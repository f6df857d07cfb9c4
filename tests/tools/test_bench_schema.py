"""tools/bench.py on a tiny dry configuration: the JSON's schema and the table (no timing is checked)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from tool_loader import load_tool

pytestmark = pytest.mark.slow  # five child processes that each import torch: ~1-2 min on 2 cores

ROOT = Path(__file__).resolve().parents[2]




def test_bench_json_has_every_task_per_configuration(tmp_path, monkeypatch):
    fast = yaml.safe_load((ROOT / "configs/model/fast.yaml").read_text())
    fast.pop("recipe", None)
    tiny = {**fast, "name": "tiny", "encoder": "resnet18", "neck": {**fast["neck"], "dim": 16, "heads": 2},
            "mask_decoder": {"channels": 8, "fine": 0}, "memory": {**fast["memory"], "dim": 16},
            "caption_decoder": {**fast["caption_decoder"], "layers": 1, "heads": 2},
            "retrieval": {**fast["retrieval"], "dim": 8, "text_dim": 16, "text_layers": 1, "heads": 2}}
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "bench"
    bench = load_tool("bench")
    code = bench.main(["--out", str(out), "--models", str(cfg), "--size", "32", "--batch", "2", "--batches", "1,2",
                       "--threads", "1", "--steps", "1", "--decode-len", "2", "--skip-inference", "--skip-app"])
    assert code == 0
    data = json.loads((out / "bench.json").read_text())
    assert data["settings"]["batches"] == [1, 2] and set(data["models"]) == {"tiny"}
    row = data["models"]["tiny"]
    assert row["tasks"] == ["mask", "caption", "retrieval", "qa", "grounding"]  # fast's five
    assert row["train"]["batch"] == 2 and row["train"]["peak_rss_mb"] > 0
    for b in ("1", "2"):
        r = row["infer"][b]
        assert set(r["tasks_s_per_pair"]) == set(row["tasks"]), b  # every task of the model, from the registry
        assert r["all_tasks_s_per_pair"] > 0 and r["peak_rss_mb"] > 0
    table = (out / "table.md").read_text()
    assert "| tiny | predict b2 |" in table and "retrieval ms/pair" in table and "| tiny | train b2 |" in table
