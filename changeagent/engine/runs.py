"""Whole runs behind the commands: evaluate a checkpoint on a split, and the end-to-end demo."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from changeagent.config import config_dir
from changeagent.data.vocab import Vocabulary
from changeagent.engine import builders
from changeagent.engine.checkpoint import atomic_write_json
from changeagent.engine.distributed import DistInfo, cleanup, init_distributed
from changeagent.engine.evaluator import EvalOptions, evaluate
from changeagent.engine.runlog import format_table
from changeagent.engine.schema import load_run_config
from changeagent.errors import ChangeAgentError


def load_for_eval(checkpoint: Path, device: torch.device) -> tuple[torch.nn.Module, Vocabulary, dict[str, Any] | None]:
    """(model, vocabulary, data_norm) from a `best/` folder or a `last.pt` (its EMA weights when it
    has them, what validation used), through the one loader `models.load`."""
    from changeagent.models import load

    model, vocab, norm, _ = load(checkpoint, map_location=device)
    if vocab is None:
        raise ChangeAgentError(f"model folder {checkpoint} has no vocab.json; cannot decode captions")
    return model, vocab, norm


def evaluate_checkpoint(cfg: DictConfig, checkpoint: Path, split: str, out: Path | None,
                        save_predictions: bool = False, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Evaluate on `split` of every dataset in `cfg.data.datasets`; rank 0 writes OUT/metrics.json."""
    builders.check_roots(cfg)
    builders.check_meteor(cfg, selecting=False)
    info = init_distributed(cfg.run.device)
    try:
        return _evaluate(cfg, info, Path(checkpoint), split, out, save_predictions, progress)
    finally:
        cleanup(info)


def _evaluate(cfg: DictConfig, info: DistInfo, checkpoint: Path, split: str, out: Path | None,
              save_predictions: bool, progress: bool) -> dict[str, dict[str, Any]]:
    if not checkpoint.exists():
        raise ChangeAgentError(f"checkpoint {checkpoint} does not exist")
    builders.set_threads(cfg.run.threads)
    model, vocab, norm = load_for_eval(checkpoint, info.device)
    untrained = [n for n in cfg.data.datasets if n not in getattr(model, "datasets", cfg.data.datasets)]
    if untrained:
        raise ChangeAgentError(f"checkpoint {checkpoint} was not trained on {untrained} (it knows "
                               f"{getattr(model, 'datasets', [])}); set data.datasets accordingly")
    if norm:  # evaluate with the training normalisation, whatever the config says
        cfg.data.mean, cfg.data.std = list(norm["mean"]), list(norm["std"])
    if not cfg.data.synth.dir and any(cfg.data[n].synthetic for n in cfg.data.datasets):
        # the training run's synthetic data, when it sits next to best/
        guess = (checkpoint if checkpoint.is_dir() else checkpoint.parent).parent / "synth"
        cfg.data.synth.dir = str(guess if guess.is_dir() else Path(out or cfg.run.out_dir) / "synth")
    roots = builders.dataset_roots(cfg, info)
    loaders = builders.eval_loaders(cfg, info, roots, vocab, split=split, max_pairs=cfg.eval.max_pairs)
    opts = EvalOptions.from_config(cfg, progress=progress,
                                   predictions_dir=(out / "predictions") if (save_predictions and out) else None)
    results, _ = evaluate(model, loaders, vocab, info, opts)
    if info.is_main:
        print(format_table(results, f"{split} split, {checkpoint}", caption_level=opts.caption_level))
        if out is not None:  # the options that shape the caption numbers go with them
            atomic_write_json(Path(out) / "metrics.json", {**results, "eval": opts.record()})
    return results


DEMO_CONFIG = "demo.yaml"


def run_demo(out: Path, overrides: list[str], progress: bool = True) -> dict[str, Any]:
    """Synthesise both datasets, train `fast` jointly, evaluate on both test splits, print the table."""
    from changeagent.engine.trainer import train

    t0 = time.monotonic()
    out = Path(out)
    # the demo is a benchmark that is rerun: it starts afresh in its folder (run.overwrite=false refuses)
    cfg = load_run_config(config_dir() / DEMO_CONFIG, [f"run.out_dir={out}", f"data.synth.dir={out / 'data'}",
                                                        "run.overwrite=true", *overrides])
    summary = train(cfg)
    test_cfg = cfg.copy()
    test_cfg.eval.meteor, test_cfg.eval.max_pairs = True, None
    results = evaluate_checkpoint(test_cfg, out / "best", "test", out / "test", progress=progress)
    minutes = (time.monotonic() - t0) / 60
    report = {"test": results, "train": {k: v for k, v in summary.items() if k != "metrics"}, "minutes": minutes}
    atomic_write_json(out / "metrics.json", {**results, "eval": EvalOptions.from_config(test_cfg).record()})
    atomic_write_json(out / "demo.json", report)
    print(f"\ndemo finished in {minutes:.1f} min; model in {out / 'best'}, metrics in {out / 'metrics.json'}")
    return report
