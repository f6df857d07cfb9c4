"""Exact resume: the one owner of what `last.pt` holds and how a run gets it back.

`capture(trainer)` builds the state dict (`STATE`: model, EMA, optimizer, scheduler, scaler, loss
weighting, the loop counters, every rank's RNG streams, config, vocabulary, datasets, wandb id, time
spent, the training record `model-info -k last.pt` shows); `restore_loop` (counters, EMA, time, wandb id) and `restore_stage` (optimizer, scheduler,
scaler, weighting, RNG: at the first stage after the resume) put it back; `find_resume` says which
file, `check_resume_config` refuses one trained with another model or data. Writing and reading the
file is `engine.checkpoint` (`save_checkpoint`, `load_checkpoint`); the augmentation of each item
needs no state (`engine.seeding.EpochSeeded` seeds it from seed, epoch and index)."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from changeagent.data.vocab import Vocabulary
from changeagent.engine.distributed import all_gather_objects
from changeagent.errors import ChangeAgentError

# loop counters of the trainer, saved and restored as they are
COUNTERS = ("step", "stage", "stage_step", "epoch", "batch_in_epoch", "best_score", "best_step", "bad_evals",
            "skipped")
# every key of last.pt besides `format` (engine.checkpoint adds it); `checkpoint.REQUIRED` is a subset
STATE = ("model", "ema", "ema_ready", "optimizer", "scheduler", "scaler", "weighting", "optimizer_stage",
         *COUNTERS, "config", "vocab", "rng", "world_size", "datasets", "wandb_id", "elapsed_s",
         "training")  # training: what the model was trained on (models.hub TRAINING), for model-info


def capture(tr: Any) -> dict[str, Any] | None:
    """The state of trainer `tr` to save (every key of `STATE`); None on ranks other than 0. A
    collective: every rank calls it (the RNG streams of all ranks are gathered)."""
    rngs = all_gather_objects(rng_state(), tr.info)
    if not tr.info.is_main:
        return None
    state = {
        "model": tr.model.state_dict(), "ema": tr.ema.state_dict() if tr.ema is not None else None,
        "ema_ready": tr.ema is not None and tr.ema.warmed_up,
        "optimizer": tr.opt.state_dict(), "scheduler": tr.sched.state_dict(),
        "scaler": tr.scaler.state_dict(), "weighting": tr.weighting.state_dict(),
        "optimizer_stage": tr._opt_stage, **{k: getattr(tr, k) for k in COUNTERS}, "config": tr.c,
        "vocab": tr.data.vocab.word_to_id, "rng": rngs, "world_size": tr.info.world_size,
        "datasets": tr.trained,  # classes for models.load (with those kept from train.init_from)
        "wandb_id": tr.wandb.run_id, "elapsed_s": time.monotonic() - tr.t0,
        "training": tr.training_record(None),
    }
    assert tuple(state) == STATE
    return state


def restore_loop(tr: Any, ck: dict[str, Any]) -> str | None:
    """Counters, EMA weights and time spent of checkpoint `ck` into trainer `tr`; returns its wandb id."""
    for key in COUNTERS:
        setattr(tr, key, ck[key])
    if ck.get("ema") is not None and tr.ema is not None:
        tr.ema.load_state_dict(ck["ema"])
    tr.t0 -= float(ck.get("elapsed_s", 0.0))  # train.max_minutes counts the interrupted run(s) too
    if ck["world_size"] != tr.info.world_size:
        tr._say(f"note: checkpoint written by {ck['world_size']} processes, resuming with "
                f"{tr.info.world_size}; data order after resume differs from an uninterrupted run")
    return ck.get("wandb_id")


def restore_stage(tr: Any, ck: dict[str, Any]) -> None:
    """At the first stage after a resume: the optimizer, scheduler, scaler and weighting states (when
    `ck` was saved inside this stage; saved at a stage end, the next stage starts fresh) and this
    rank's RNG streams."""
    if ck["optimizer_stage"] == tr.stage:
        tr.opt.load_state_dict(ck["optimizer"])
        tr.sched.load_state_dict(ck["scheduler"])
        tr.scaler.load_state_dict(ck["scaler"])
        tr.weighting.load_state_dict(ck["weighting"])
    rngs = ck["rng"]
    set_rng_state(rngs[tr.info.rank] if len(rngs) == tr.info.world_size else rngs[0])


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
# model keys that change how it runs, not its weights: a resumed run may switch them
RUNTIME_KEYS = ("model.compile", "model.channels_last")


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
            if k in RUNTIME_KEYS:
                continue
            if old.get(k, "<absent>") != new.get(k, "<absent>"):
                diffs.append(f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}")
    if diffs:
        raise ChangeAgentError(f"resume: {path} was trained with another config; differing keys: {'; '.join(diffs)}. "
                               "Restore them, or start a new run.out_dir")


def vocab_of(ckpt: dict[str, Any] | None) -> Vocabulary | None:
    return Vocabulary(dict(ckpt["vocab"])) if ckpt is not None else None


# -- RNG streams (only tensors and plain values, so that weights_only loading works) --------------


def rng_state() -> dict[str, Any]:
    """This process's python / numpy / torch (and CUDA) generator states."""
    np_state = np.random.get_state(legacy=False)
    out: dict[str, Any] = {
        "python": _tuple_to_lists(random.getstate()),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_lists_to_tuple(state["python"]))
    npst = state["numpy"]
    np.random.set_state({
        "bit_generator": npst["bit_generator"],
        "state": {"key": npst["key"].numpy().astype(np.uint32), "pos": npst["pos"]},
        "has_gauss": npst["has_gauss"],
        "gauss": npst["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _tuple_to_lists(x: Any) -> Any:
    return [_tuple_to_lists(v) for v in x] if isinstance(x, tuple) else x


def _lists_to_tuple(x: Any) -> Any:
    return tuple(_lists_to_tuple(v) for v in x) if isinstance(x, list) else x
