"""Section 2: training on the device through the engine's real loop (`changeagent.engine.trainer`).

- every model x precision (fp32, bf16 autocast, fp16 + GradScaler) for a fixed number of steps on
  generated 256-px LEVIR-MCI-layout data: losses finite and falling, pairs/s, peak memory;
- `model.compile=true` against the eager run;
- DDP and resume after a kill (`gpucheck.multiproc`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from gpucheck.context import Context
from gpucheck.report import Check, Report
from gpucheck.sizes import AMP, PRECISIONS


def run(ctx: Context, report: Report) -> None:
    from gpucheck import multiproc  # imports this module's helpers

    report.run("training", "synth_data", lambda c: data_check(ctx, c))
    eager: dict[tuple[str, str], dict[str, Any]] = {}
    for model in ctx.sizes.models:
        for precision in PRECISIONS if model in ctx.sizes.precision_models else ("fp32",):
            c = report.run("training", f"{model}_{precision}",
                           lambda c, m=model, p=precision: train_check(ctx, c, m, p))
            eager[(model, precision)] = c.figures
    for model in ctx.sizes.compile_models:
        precision = "bf16" if ctx.cuda else "fp32"
        report.run("training", f"{model}_{precision}_compile",
                   lambda c, m=model, p=precision: train_check(ctx, c, m, p, compile=True,
                                                               eager=eager.get((m, p))))
    report.run("training", "ddp_1proc_" + ("nccl" if ctx.cuda else "gloo"), lambda c: multiproc.ddp_check(ctx, c))
    report.run("training", "resume_after_kill", lambda c: multiproc.resume_check(ctx, c))


# -- run configs --------------------------------------------------------------------------------------


def run_config(ctx: Context, model: str, precision: str, out: Path, compile: bool = False,
               **train: Any) -> dict[str, Any]:
    """A plain run-config dict (validated by `engine.schema.validate`) on the generated data."""
    s = ctx.sizes
    return {
        "run": {"out_dir": str(out), "seed": 0, "device": str(ctx.device), "threads": 1 if ctx.dry_run else None},
        "data": {
            "datasets": ["levir_mci"], "levir_mci": {"synthetic": True},
            # the engine generates the synthetic benchmark once into this folder and reuses it
            "synth": {"dir": str(ctx.work / "synth"), "n_train": s.train_pairs, "n_val": s.val_pairs,
                      "n_test": 1, "size": s.image, "seed": 0},
            "batch_size": s.batch, "eval_batch_size": s.batch, "min_count": 0,
            "num_workers": 2 if ctx.cuda else 0,  # workers + pinned memory: the GPU input path
        },
        "model": {**ctx.model_config(model), **({"compile": True} if compile else {})},
        "optim": {"lr": s.model_lr.get(model, s.lr)},
        "sched": {"name": "constant"},
        "train": {"steps": s.steps, "amp": AMP[precision], "log_every": 1, "save_every": 10**6, **train},
        "eval": {"meteor": False, "max_pairs": s.val_pairs, "select": "miou+bleu4", "max_len": 12},
        "wandb": {"mode": "disabled"},
    }


def write_config(cfg: dict[str, Any], path: Path) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_losses(out: Path) -> tuple[list[float], list[float]]:
    """Per logged step (log_every=1) of the run's metrics.jsonl: mask + caption loss, and pairs/s.

    Not `loss/total`: the default weighting divides each task loss by its own detached value, so the
    total is constant (2.0) and shows nothing."""
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    recs = [r for r in recs if r.get("kind") == "train"]
    return [r["loss/mask"] + r["loss/caption"] for r in recs], [r["pairs_per_s"] for r in recs]


def loss_figures(losses: list[float]) -> dict[str, Any]:
    """Finite and falling: the mean of the last third of the steps below the mean of the first third."""
    k = max(len(losses) // 3, 1)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    return {"steps_logged": len(losses), "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None, "loss_mean_first_third": first,
            "loss_mean_last_third": last, "finite": bool(losses) and all(math.isfinite(x) for x in losses),
            "falling": last < first}


@contextmanager
def dry_compile() -> Iterator[None]:
    """Dry run only: `nn.Module.compile` with the eager backend, so Dynamo traces the model but no C++
    is generated and built on a busy CPU (minutes), and at most one recompile per frame (the model's
    forward guards on caption id values, see the GPU figures). On the GPU the engine's defaults run."""
    orig = torch.nn.Module.compile

    def eager(self: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("backend", "eager")
        orig(self, *args, **kwargs)

    torch.nn.Module.compile = eager  # type: ignore[method-assign]
    try:
        # one retrace per frame at most: the dry run proves the model traces, not how often it retraces
        with torch._dynamo.config.patch(recompile_limit=1):
            yield
    finally:
        torch.nn.Module.compile = orig  # type: ignore[method-assign]


def median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


# -- checks ---------------------------------------------------------------------------------------------


def data_check(ctx: Context, c: Check) -> None:
    """Generate the LEVIR-MCI-layout data once, as the engine does for `synthetic: true` (every run reuses it)."""
    import time

    from changeagent.engine.distributed import DistInfo
    from changeagent.engine.roots import dataset_roots
    from changeagent.engine.schema import validate

    cfg = validate(run_config(ctx, "fast", "fp32", ctx.work / "train" / "data"))
    t0 = time.perf_counter()
    roots = dataset_roots(cfg, DistInfo())
    s = ctx.sizes
    c.figures.update(size=s.image, train_pairs=s.train_pairs, val_pairs=s.val_pairs,
                     generate_s=round(time.perf_counter() - t0, 2), root=str(roots["levir_mci"]))
    c.verdict((roots["levir_mci"] / "LevirCCcaptions.json").is_file())


def train_check(ctx: Context, c: Check, model: str, precision: str, compile: bool = False,
                eager: dict[str, Any] | None = None) -> None:
    from changeagent.engine.schema import validate
    from changeagent.engine.trainer import train

    if ctx.cuda and precision == "bf16" and not torch.cuda.is_bf16_supported():
        c.skip("this GPU has no bf16 support")
        return
    c.headline = ("loss_first", "loss_last", "finite", "falling", "pairs_per_s", "peak_mem_gib",
                  "speedup_vs_eager", "dynamo_unique_graphs")
    out = ctx.work / "train" / f"{model}_{precision}{'_compile' if compile else ''}"
    cfg = validate(run_config(ctx, model, precision, out, compile=compile))
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    if compile:
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
    with dry_compile() if (compile and not ctx.cuda) else nullcontext():
        summary = train(cfg)
    if compile:  # recompiles (guards on values, new shapes) and graph breaks cost time on every change
        counters = torch._dynamo.utils.counters
        c.figures["dynamo_unique_graphs"] = int(counters["stats"]["unique_graphs"])
        c.figures["dynamo_graph_breaks"] = int(sum(counters["graph_break"].values()))
        torch._dynamo.reset()
    losses, rates = train_losses(out)
    c.figures.update(loss_figures(losses))
    c.figures["pairs_per_s"] = median(rates[len(rates) // 3:])  # after warm-up (and compilation)
    c.figures["stop_reason"] = summary["stop_reason"]
    if ctx.cuda:
        c.figures["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(ctx.device) / 2**30, 3)
    if compile:
        c.note = "model.compile=true" + (" (dry run: Dynamo with the eager backend)" if not ctx.cuda else "")
        if eager and eager.get("loss_first") is not None:
            # step 1 sees the same weights and batch: compiled and eager losses agree to rounding
            c.figures["loss_first_vs_eager_rel"] = abs(c.figures["loss_first"] - eager["loss_first"]) / \
                max(abs(eager["loss_first"]), 1e-12)
            if eager.get("pairs_per_s") and c.figures["pairs_per_s"]:
                c.figures["speedup_vs_eager"] = c.figures["pairs_per_s"] / eager["pairs_per_s"]
    c.verdict(c.figures["finite"] and c.figures["falling"] and summary["stop_reason"] == "done")
