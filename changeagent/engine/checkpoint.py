"""Checkpoints: `last.pt` (everything needed to resume exactly) and the `best/` export folder.

`last.pt` is a `torch.save` dict of tensors and plain Python values only, loaded with
`weights_only=True` (nothing is unpickled beyond that). Writes go to a temporary file in the same
folder and are moved into place with `os.replace`, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from changeagent.data.io import swap_dir_into_place, write_text_atomic
from changeagent.errors import ChangeAgentError

FORMAT_VERSION = 1
REQUIRED = ("format", "model", "optimizer", "scheduler", "step", "stage", "config", "vocab", "rng")


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def _public(path: str | Path, directory: bool = False) -> None:
    """mkstemp/mkdtemp create private files; give the final ones the usual umask permissions."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _public(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None and tensors/numpy scalars -> numbers, so the file is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def atomic_write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` (see `REQUIRED`) atomically to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save({"format": FORMAT_VERSION, **state}, tmp)
        _public(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Read a `last.pt`; a missing, truncated or foreign file raises ChangeAgentError naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise ChangeAgentError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/garbage zip files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ChangeAgentError(
            f"checkpoint {path} is corrupt or truncated ({reason}); delete it or resume from another file"
        ) from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED):
        missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
        raise ChangeAgentError(f"checkpoint {path} is not a changeagent training checkpoint (missing {missing})")
    if state["format"] != FORMAT_VERSION:
        raise ChangeAgentError(f"checkpoint {path} has format {state['format']}, this version reads {FORMAT_VERSION}")
    return state


# --- the run folder ------------------------------------------------------------------------------

RUN_FILES = ("last.pt", "best", "metrics.jsonl", "metrics.csv", "config.yaml")  # a run's files: run.overwrite deletes them
REUSED = ("synth",)  # the engine's generated data (data.synth.dir default): a fresh run reuses it


def check_run_folder(out: Path, resume: Any, overwrite: bool) -> None:
    """A run never silently replaces another: a run.out_dir that holds anything besides the reusable
    synthetic data is refused unless the run continues it (`resume`) or starts afresh (`overwrite`)."""
    from changeagent.paths import check_output_folder

    check_output_folder(out, "run.out_dir")
    if not out.is_dir():
        return
    held = sorted(p.name for p in out.iterdir() if p.name not in REUSED)
    if not held or overwrite:
        return
    listed = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
    fresh = "start afresh with run.overwrite=true (deletes its last.pt, best/ and metrics), or choose another run.out_dir"
    if resume is True or resume == "true":
        if (out / "last.pt").is_file():
            return
        raise ChangeAgentError(f"resume=true: run.out_dir {out} has no last.pt to continue (it holds {listed}); {fresh}")
    if resume not in (False, None, "", "false"):
        return  # resume=PATH: continuing that checkpoint here was asked for explicitly
    raise ChangeAgentError(f"run.out_dir {out} is not empty (it holds {listed}): continue that run with "
                           f"resume=true, {fresh}")


def clear_run_folder(out: Path) -> list[str]:
    """run.overwrite: delete the earlier run's files (`RUN_FILES`, leftover best/ exports); returns their names."""
    removed = []
    for p in sorted(out.iterdir()) if out.is_dir() else []:
        if p.name in RUN_FILES or p.name.startswith(".best."):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            removed.append(p.name)
    return removed


# --- best/ folder -------------------------------------------------------------------------------


def training_record(cfg: Any, roots: dict[str, Path], step: int, score: float | None, select: str | None,
                    out_dir: Path) -> dict[str, Any]:
    """The record a saved model carries (models.hub `TRAINING`): each dataset trained on, synthetic
    (`data.<id>.synthetic`, or a folder written by `changeagent data synth`) or real, the steps and
    the validation score the weights were chosen on."""
    from changeagent.data.synth import is_synthetic

    datasets = {}
    for name in cfg.data.datasets:
        root = roots.get(name)
        synthetic = bool(cfg.data[name].synthetic) or (root is not None and is_synthetic(root))
        datasets[name] = {"synthetic": synthetic, "root": str(Path(root).absolute()) if root is not None else None}
    selected = None if score is None else {"split": "val", "select": select, "score": float(score)}
    return {"datasets": datasets, "synthetic_only": all(d["synthetic"] for d in datasets.values()),
            "steps": int(step), "selected_on": selected, "run": str(Path(out_dir).absolute())}


def export_best(model: Any, out_dir: Path, norm: dict[str, dict[str, list[float]]], metrics: dict[str, Any],
                datasets: Any = None, training: dict[str, Any] | None = None) -> Path:
    """Write `out_dir/best/` with `models.save_pretrained` (weights, vocabulary, `norm`: the statistics
    per trained dataset, the datasets trained on, the training record) plus metrics.json.

    The folder is built next to the old one and swapped in, so readers never see a partial export.
    """
    from changeagent.models import save_pretrained

    final = Path(out_dir) / "best"
    tmp = Path(tempfile.mkdtemp(prefix=".best.", dir=out_dir))
    try:
        save_pretrained(model, tmp, norm=norm, datasets=datasets, training=training)
        atomic_write_json(tmp / "metrics.json", metrics)
        _public(tmp, directory=True)
        for f in tmp.iterdir():
            _public(f)
        swap_dir_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
