"""Resuming a run: which `last.pt` to continue from, and the config keys it must share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from changeagent.data.vocab import Vocabulary
from changeagent.errors import ChangeAgentError


def find_resume(cfg: DictConfig, out: Path) -> Path | None:
    """`resume=true` -> DIR/last.pt when it exists (a fresh start otherwise); a path must exist."""
    value = cfg.resume
    if value in (False, None, "", "false"):
        return None
    if value is True or value == "true":
        path = out / "last.pt"
        return path if path.is_file() else None
    path = Path(str(value))
    path = path / "last.pt" if path.is_dir() else path
    if not path.is_file():
        raise ChangeAgentError(f"resume checkpoint {path} does not exist")
    return path


# what a resumed run must share with its checkpoint: the model, what it trains on, the batch per step
RESUME_KEYS = ("model", "data.datasets", "data.batch_size", "train.grad_accum")


def _pick(cfg: dict[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _leaves(d: Any, prefix: str) -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_leaves(v, f"{prefix}.{k}"))
        return out or {prefix: {}}
    return {prefix: d}


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], path: Path | None) -> None:
    """Refuse to resume with another model, dataset list or batch size (the keys that differ named)."""
    diffs = []
    for key in RESUME_KEYS:
        old, new = _leaves(_pick(saved, key), key), _leaves(_pick(current, key), key)
        if key == "model":  # compare the resolved model configs (defaults filled in on both sides)
            from changeagent.models.factory import resolve_config

            old, new = (_leaves(resolve_config(_pick(c, key)), key) for c in (saved, current))
        for k in sorted(set(old) | set(new)):
            if old.get(k, "<absent>") != new.get(k, "<absent>"):
                diffs.append(f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}")
    if diffs:
        raise ChangeAgentError(f"resume: {path} was trained with another config; differing keys: {'; '.join(diffs)}. "
                               "Restore them, or start a new run.out_dir")


def vocab_of(ckpt: dict[str, Any] | None) -> Vocabulary | None:
    return Vocabulary(dict(ckpt["vocab"])) if ckpt is not None else None
