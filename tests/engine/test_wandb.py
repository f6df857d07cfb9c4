"""wandb offline: the run folder holds the metrics (summary), media (overlays, predictions table) and
the best checkpoint as an artifact; `online` without an API key falls back to offline."""

from __future__ import annotations

import json

import pytest
from engine_helpers import wandb_records, write_config

from changeagent.cli import main
from changeagent.engine.wandb_logger import resolve_mode


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_root"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    return tmp_path / "wandb_root"


def test_online_without_key_falls_back_to_offline(wandb_env):
    assert resolve_mode("online") == "offline"
    assert resolve_mode("disabled") == "disabled"


def test_offline_run_files_hold_metrics_and_media(tmp_path, synth_roots, wandb_env):
    cfg = write_config(tmp_path / "c.yaml", synth_roots, ("levir_mci", "second_cc"),
                       train={"steps": 2}, eval={"every_steps": 1, "vis_pairs": 2},
                       wandb={"mode": "offline", "project": "test"})
    assert main(["train", "-c", str(cfg)]) == 0
    runs = list((wandb_env / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = wandb_records(next(runs[0].glob("run-*.wandb")))

    def keys(kind: str) -> set[str]:
        items = (getattr(r, kind).item if kind == "history" else getattr(r, kind).update
                 for r in records if r.WhichOneof("record_type") == kind)
        return {it.key or "/".join(it.nested_key) for group in items for it in group}

    history, summary = keys("history"), keys("summary")
    for key in ("val/levir_mci/miou", "val/second_cc/sek", "val/second_cc/fscd", "val/levir_mci/bleu4",
                "val/score", "train/loss/mask", "train/loss/caption", "train/weight/mask", "train/lr",
                "train/pairs_per_s", "val/levir_mci/overlays/_type", "val/predictions/_type"):
        assert key in history and key in summary, key
    assert {"best/score", "best/step"} <= summary
    config = {it.key for r in records if r.WhichOneof("record_type") == "config" for it in r.config.update}
    assert {"model", "train", "data", "loss"} <= config  # the resolved run config
    artifacts = {r.artifact.type: [m.path for m in r.artifact.manifest.contents]
                 for r in records if r.WhichOneof("record_type") == "artifact"}
    assert {"config.json", "model.safetensors", "vocab.json", "metrics.json"} <= set(artifacts["model"])
    assert any(p.startswith("media/images/") for p in artifacts["run_table"])  # A/B/mask images of the table

    files = runs[0] / "files"
    media = [p.relative_to(files).as_posix() for p in (files / "media").rglob("*") if p.is_file()]
    assert any(m.startswith("media/images/val/levir_mci/overlays") for m in media), media
    assert any(m.startswith("media/images/val/second_cc/overlays") for m in media), media
    assert any(m.startswith("media/images/mask/val/levir_mci/") for m in media), media  # overlay masks
    table = json.loads(next((files / "media" / "table" / "val").glob("predictions*.json")).read_text())
    assert table["columns"][:6] == ["dataset", "name", "A", "B", "GT mask", "pred mask"]
    assert len(table["data"]) == 4  # 2 fixed pairs x 2 datasets
