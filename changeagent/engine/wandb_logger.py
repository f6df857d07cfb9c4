"""The wandb dashboard (rank 0 only): config, losses, weights, lr, throughput, metrics, mask overlays,
a predictions table and the best checkpoint as an artifact.

Modes: `online`, `offline` (sync later with `wandb sync`), `disabled`. `online` without an API key
(WANDB_API_KEY or a netrc entry) falls back to `offline` with a note, so a run never blocks on a login
prompt. `WANDB_DIR` chooses where the run folder goes (default: the run's out_dir).
"""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from changeagent.data.constants import IGNORE_INDEX
from changeagent.data.registry import get_spec
from changeagent.tasks.spec import VisMask, VisText


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str) -> str:
    if mode == "online" and not has_api_key():
        print("wandb: no API key found (WANDB_API_KEY / netrc); logging offline - `wandb sync` later",
              file=sys.stderr)
        return "offline"
    return mode


def class_labels(dataset: str) -> dict[int, str]:
    """Class id -> name for the dataset's masks (its registry spec), plus the ignored id."""
    names = get_spec(dataset).classes or ("no_change", "change")
    return {**dict(enumerate(names)), IGNORE_INDEX: "ignored"}


class WandbLogger:
    """No-op unless enabled (rank 0) and mode != disabled; `run_id` continues a resumed run."""

    def __init__(self, cfg: dict[str, Any], out_dir: Path, enabled: bool, run_id: str | None = None) -> None:
        wcfg = cfg["wandb"]
        self.mode = resolve_mode(wcfg["mode"]) if enabled else "disabled"
        self.run: Any = None
        if self.mode == "disabled":
            return
        import wandb

        self._wandb = wandb
        root = Path(os.environ.get("WANDB_DIR") or out_dir)
        root.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=wcfg["project"], entity=wcfg["entity"], name=cfg["run"]["name"] or Path(out_dir).name,
            tags=list(wcfg["tags"]), config=cfg, dir=str(root), mode=self.mode,  # type: ignore[arg-type]
            id=run_id, resume="allow" if run_id else None,
        )
        # every metric is plotted against the optimizer step
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    @property
    def active(self) -> bool:
        return self.run is not None

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def log(self, values: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.run.log({**{k: v for k, v in values.items() if v is not None}, "step": step})

    def log_summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    def log_predictions(self, vis: dict[str, list[dict[str, Any]]], step: int) -> None:
        """Overlays and a table from the evaluator's visual records: "name", images "a"/"b" (uint8
        HWC) and each task's fields (`TaskSpec.visual`): `VisMask`s are drawn on B and shown in the
        dataset's colours, `VisText`s fill cells (predictions also caption the overlay)."""
        if self.run is None or not vis:
            return
        wandb = self._wandb
        fields: list[str] = []
        for records in vis.values():
            for r in records:
                fields.extend(k for k in r if k not in RECORD_KEYS and k not in fields)
        table = wandb.Table(columns=["dataset", "name", "A", "B", *fields])
        media: dict[str, Any] = {}
        for dataset, records in vis.items():
            labels = class_labels(dataset)
            overlays = []
            for r in records:
                masks = {v.role: {"mask_data": v.mask, "class_labels": labels} for v in r.values() if isinstance(v, VisMask)}
                said = " / ".join(v.text for v in r.values() if isinstance(v, VisText) and v.role == "prediction")
                overlays.append(wandb.Image(r["b"], masks=masks or None, caption=f"{r['name']}: {said}" if said else r["name"]))
                table.add_data(dataset, r["name"], wandb.Image(r["a"]), wandb.Image(r["b"]),
                               *(_cell(wandb, r.get(f), dataset) for f in fields))
            media[f"val/{dataset}/overlays"] = overlays
        media["val/predictions"] = table
        self.log(media, step)

    def log_artifact(self, best_dir: Path, metrics: dict[str, Any]) -> None:
        if self.run is None:
            return
        art = self._wandb.Artifact(f"model-{self.run.id}", type="model", metadata=metrics)
        art.add_dir(str(best_dir))
        self.run.log_artifact(art, aliases=["best", "latest"])

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
            # finish() can return before the wandb service has written the run file's last records
            # (artifact, exit); teardown waits for the service, so an offline run is complete on disk
            self._wandb.teardown()


RECORD_KEYS = ("name", "a", "b")  # what every visual record has; the rest are the tasks' fields


def _cell(wandb: Any, value: Any, dataset: str) -> Any:
    if isinstance(value, VisMask):
        return wandb.Image(_colour(value.mask, dataset))
    if isinstance(value, VisText):
        return value.text
    return value


def _colour(mask: np.ndarray, dataset: str) -> np.ndarray:
    """Class ids [H, W] -> RGB uint8 [H, W, 3] in the dataset's published colours (others: grey)."""
    pal = np.asarray(get_spec(dataset).palette or ((0, 0, 0), (255, 255, 255)), np.uint8)
    out = np.full((*mask.shape, 3), 96, np.uint8)
    valid = mask < len(pal)
    out[valid] = pal[mask[valid]]
    return out
