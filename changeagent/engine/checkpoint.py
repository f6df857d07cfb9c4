"""Checkpoints: `last.pt` (everything needed to resume exactly) and the `best/` export folder.

`last.pt` is a `torch.save` dict of tensors and plain Python values only, loaded with
`weights_only=True` (nothing is unpickled beyond that). Every write goes through `changeagent.fileio`
(unique temp file, fsync, rename, fsync of the folder), so a crash never leaves a half-written file.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from changeagent.errors import ChangeAgentError
from changeagent.fileio import atomic_dir, atomic_path, write_json_atomic

FORMAT_VERSION = 1
REQUIRED = ("format", "model", "optimizer", "scheduler", "step", "stage", "config", "vocab", "rng")


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` (see `REQUIRED`) atomically to `path`."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT_VERSION, **state}, tmp)


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
    with atomic_dir(final) as tmp:
        save_pretrained(model, tmp, norm=norm, datasets=datasets, training=training)
        write_json_atomic(tmp / "metrics.json", metrics)
    return final
