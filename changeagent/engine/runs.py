"""Whole runs behind the commands: evaluate a checkpoint on a split, and the end-to-end demo."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from changeagent.config import config_dir
from changeagent.data.registry import get_spec
from changeagent.data.vocab import Vocabulary
from changeagent.engine.device import set_threads
from changeagent.engine.distributed import DistInfo, cleanup, init_distributed
from changeagent.engine.evaluator import EvalOptions, evaluate
from changeagent.engine.loaders import eval_loaders
from changeagent.engine.roots import check_roots, dataset_roots
from changeagent.engine.runlog import format_table, table_notes
from changeagent.engine.schema import load_run_config
from changeagent.engine.selection import check_meteor
from changeagent.errors import ChangeAgentError
from changeagent.fileio import write_json_atomic, write_text_atomic
from changeagent.tasks.registry import shared_tasks


def load_for_eval(checkpoint: Path, device: torch.device) -> tuple[torch.nn.Module, Vocabulary, dict[str, Any] | None]:
    """(model, vocabulary, statistics per trained dataset) from a `best/` folder or a `last.pt` (its
    EMA weights when it has them, what validation used), through the one loader `models.load`."""
    from changeagent.models import load

    model, vocab, norm, _ = load(checkpoint, map_location=device)
    if vocab is None:
        raise ChangeAgentError(f"model folder {checkpoint} has no vocab.json; cannot decode captions")
    return model, vocab, norm


def evaluate_checkpoint(cfg: DictConfig, checkpoint: Path, split: str, out: Path | None,
                        save_predictions: bool = False, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Evaluate on `split` of every dataset in `cfg.data.datasets`; rank 0 writes OUT/metrics.json.

    `cfg` is the config resolved for this checkpoint (`load_run_config(..., checkpoint=, out=)`: its
    recorded statistics per dataset, its synthetic data); nothing in it is changed here."""
    check_roots(cfg)
    check_meteor(cfg, selecting=False)
    info = init_distributed(cfg.run.device)
    try:
        return _evaluate(cfg, info, Path(checkpoint), split, out, save_predictions, progress)
    finally:
        cleanup(info)


def _evaluate(cfg: DictConfig, info: DistInfo, checkpoint: Path, split: str, out: Path | None,
              save_predictions: bool, progress: bool) -> dict[str, dict[str, Any]]:
    if not checkpoint.exists():
        raise ChangeAgentError(f"checkpoint {checkpoint} does not exist")
    set_threads(cfg.run.threads)
    model, vocab, norm = load_for_eval(checkpoint, info.device)
    heads = list(getattr(model, "datasets", cfg.data.datasets))
    for name in cfg.data.datasets:  # a dataset it has no heads for: scored by its shared heads, or an error
        if name not in heads:
            _, msg = shared_tasks(list(getattr(model, "tasks", [])), get_spec(name), heads,
                                  f"eval: checkpoint {checkpoint}")
            if info.is_main:
                print(f"note: {msg}", file=sys.stderr, flush=True)
    for name in cfg.data.datasets:  # the statistics it was trained with (engine.resolve put them in cfg)
        recorded = (norm or {}).get(name)
        if recorded is not None and (recorded["mean"] != list(cfg.data[name].mean)
                                     or recorded["std"] != list(cfg.data[name].std)):
            raise ChangeAgentError(f"eval: data.{name}.mean/std differ from the statistics {checkpoint} records; "
                                   "load the config with load_run_config(..., checkpoint=) (the eval command does)")
    roots = dataset_roots(cfg, info)
    loaders = eval_loaders(cfg, info, roots, vocab, split=split, max_pairs=cfg.eval.max_pairs)
    opts = EvalOptions.from_config(cfg, progress=progress,
                                   predictions_dir=(out / "predictions") if (save_predictions and out) else None)
    results, _ = evaluate(model, loaders, vocab, info, opts)
    if info.is_main:
        print(format_table(results, f"{split} split, {checkpoint}", notes=table_notes(opts, results)))
        if out is not None:  # the options that shape the caption numbers go with them
            write_json_atomic(Path(out) / "metrics.json", {**results, "eval": opts.record()})
            write_text_atomic(Path(out) / "config.yaml", OmegaConf.to_yaml(cfg))  # the config that ran
    return results


DEMO_CONFIG = "demo.yaml"


def run_demo(out: Path, overrides: list[str], progress: bool = True) -> dict[str, Any]:
    """Synthesise both datasets, train `fast` jointly, evaluate on both test splits, print the table."""
    from changeagent.engine.trainer import train

    t0 = time.monotonic()
    out = Path(out)
    # the demo is a benchmark that is rerun: it starts afresh in its folder (run.overwrite=false refuses)
    given = [f"run.out_dir={out}", f"data.synth.dir={out / 'data'}", "run.overwrite=true", *overrides]
    cfg = load_run_config(config_dir() / DEMO_CONFIG, given)
    summary = train(cfg)
    # the test evaluation: the same config with METEOR and every test pair, resolved for best/
    test_cfg = load_run_config(config_dir() / DEMO_CONFIG, [*given, "eval.meteor=true", "eval.max_pairs=null"],
                               checkpoint=out / "best", out=out / "test")
    results = evaluate_checkpoint(test_cfg, out / "best", "test", out / "test", progress=progress)
    minutes = (time.monotonic() - t0) / 60
    report = {"test": results, "train": {k: v for k, v in summary.items() if k != "metrics"}, "minutes": minutes}
    write_json_atomic(out / "metrics.json", {**results, "eval": EvalOptions.from_config(test_cfg).record()})
    write_json_atomic(out / "demo.json", report)
    print(f"\ndemo finished in {minutes:.1f} min; model in {out / 'best'}, metrics in {out / 'metrics.json'}")
    return report
