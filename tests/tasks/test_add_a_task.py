"""docs/design.md's "Adding a task": its head file, its spec file and one line in each table make a
task that the real engine trains, balances, evaluates (metrics.json, the table), and `predict` and
`config show` know, next to the tasks of today."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from changeagent.cli import main
from changeagent.data.registry import get_spec

DOC = Path(__file__).resolve().parents[2] / "docs" / "design.md"
TINY = {"encoder": "tu-mobilenetv3_small_050", "neck": {"name": "diff", "dim": 32}, "mask_decoder": {"channels": 16},
        "memory": {"dim": 32}, "caption_decoder": {"layers": 1, "heads": 2}}


def _block(doc: str, path: str) -> str:
    return re.search(rf"```python\n# {re.escape(path)}\n(.*?)```", doc, re.S).group(1)


@pytest.fixture
def change_bin(tmp_path, monkeypatch):
    """The two files of the example as modules, registered by one line in each table."""
    from changeagent.models import heads
    from changeagent.tasks import registry

    doc = DOC.read_text()
    (tmp_path / "change_bin_head_example.py").write_text(_block(doc, "changeagent/models/change_bin.py"))
    (tmp_path / "change_bin_task_example.py").write_text(_block(doc, "changeagent/tasks/change_bin.py"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(heads.HEADS, "change_bin", "change_bin_head_example")
    monkeypatch.setitem(registry.REGISTRY, "change_bin", "change_bin_task_example")
    yield
    for name in ("change_bin_head_example", "change_bin_task_example"):
        sys.modules.pop(name, None)


def test_the_worked_example_of_design_md_adds_a_task(tmp_path, change_bin, capsys):
    roots = {n: tmp_path / n for n in ("levir_mci", "levir_cc")}
    for i, (name, root) in enumerate(roots.items()):
        get_spec(name).synth(root, 8, 3, 3, size=32, seed=i, progress=False)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {**TINY, "tasks": ["mask", "caption", "change_bin"], "change_bin": {"hidden": 8}},
        "run": {"out_dir": str(tmp_path / "run"), "device": "cpu", "threads": 1},
        "data": {"datasets": list(roots), "batch_size": 4, "eval_batch_size": 3, "min_count": 0,
                 **{n: {"root": str(r)} for n, r in roots.items()}},
        "optim": {"lr": 1e-3}, "loss": {"weighting": {"name": "uncertainty"}},
        "train": {"steps": 3, "log_every": 1, "save_every": 100},
        "eval": {"meteor": False, "select": "miou+bleu4"}}))
    assert main(["config", "show", "-c", str(cfg)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["model"]["tasks"] == ["mask", "caption", "change_bin"] and shown["model"]["change_bin"] == {"hidden": 8}

    assert main(["train", "-c", str(cfg)]) == 0
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"][-1]
    assert train["loss/change_bin"] > 0 and "weight/change_bin" in train  # balanced with the other tasks
    val = [r for r in records if r["kind"] == "val"][-1]
    assert 0.0 <= val["levir_mci"]["change_bin_acc"] <= 1.0
    assert "change_bin_acc" not in val["levir_cc"]  # captions only: no change map to derive it from
    assert json.loads((run / "best" / "config.json").read_text())["model"]["tasks"][-1] == "change_bin"

    capsys.readouterr()
    ev = tmp_path / "ev"
    assert main(["eval", "-c", str(cfg), "--checkpoint", str(run / "best"), "--split", "test", "--out", str(ev)]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    assert 0.0 <= metrics["levir_mci"]["change_bin_acc"] <= 1.0 and metrics["levir_mci"]["n_pairs"] == 3
    assert {"miou", "bleu4"} <= set(metrics["levir_mci"])  # the other tasks as before
    assert "Bin-acc" in capsys.readouterr().out

    a = next((roots["levir_mci"] / "images" / "test" / "A").glob("*.png"))
    out = tmp_path / "pred"
    assert main(["predict", "-k", str(run / "best"), str(a), str(a.parent.parent / "B" / a.name), "-o", str(out),
                 "--max-len", "5", "--no-vis"]) == 0
    record = json.loads((out / f"{a.stem}.json").read_text())
    assert record["change_bin"] in range(4) and "caption" in record
