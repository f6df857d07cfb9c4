"""The training checks that need a second process: DDP in one process over NCCL (gloo in the dry run)
with every multi-process branch of the engine taken, and a `changeagent train` process killed mid-run
and resumed from its last.pt, which must end with the weights of a run never interrupted."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from gpucheck.context import Context
from gpucheck.report import Check
from gpucheck.training import loss_figures, median, run_config, train_losses, write_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_method(ctx: Context) -> str:
    """spawn next to CUDA (a forked child cannot use CUDA); fork on the CPU, where it saves the
    child's imports (half a minute on a busy machine). Spawn children get this process's sys.path."""
    return "spawn" if ctx.cuda else "fork"


def ddp_check(ctx: Context, c: Check) -> None:
    import multiprocessing

    out = ctx.work / "train" / "ddp"
    cfg = write_config(run_config(ctx, "fast", "bf16" if ctx.cuda else "fp32", out), ctx.work / "ddp.yaml")
    backend = "nccl" if ctx.cuda else "gloo"
    proc = multiprocessing.get_context(start_method(ctx)).Process(
        target=ddp_worker, args=(_free_port(), str(cfg), backend))
    proc.start()
    proc.join(timeout=600)
    if proc.exitcode != 0:
        proc.kill()
        raise RuntimeError(f"the DDP process exited with {proc.exitcode}")
    res = json.loads((out / "ddp_result.json").read_text())
    losses, rates = train_losses(out)
    c.headline = ("backend", "ddp_wrapped", "all_reduce_ok", "loss_first", "loss_last", "falling")
    c.figures.update(world_size=1, **res, **loss_figures(losses))
    c.figures["pairs_per_s"] = median(rates[len(rates) // 3:])
    c.note = "one process, process group over env:// rendezvous; DDP wrapper and every collective taken"
    c.verdict(res["ddp_wrapped"] and res["backend"] == backend and res["all_reduce_ok"]
              and c.figures["finite"] and c.figures["falling"])


def ddp_worker(port: int, cfg_path: str, backend: str) -> None:
    """Child process: joins a 1-process group, then runs the engine's Trainer with DDP.

    The engine only wraps in DDP when world_size > 1 (a 1-process torchrun needs no wrapper), so the
    DistInfo here says `enabled` to take the multi-process branches: DDP(model), all_reduce for stop
    and NaN decisions, all_gather of RNG states, metric sync.
    """
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import datetime

    import torch.distributed as dist

    from changeagent.devices import resolve_device
    from changeagent.engine.distributed import DistInfo
    from changeagent.engine.schema import load_run_config
    from changeagent.engine.trainer import Trainer

    class OneProcessDDP(DistInfo):
        @property
        def enabled(self) -> bool:
            return True

    cfg = load_run_config(cfg_path)
    device = resolve_device(cfg.run.device, 0, key="run.device")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method="env://", rank=0, world_size=1,
                            timeout=datetime.timedelta(minutes=5),
                            device_id=device if device.type == "cuda" else None)
    try:
        info = OneProcessDDP(0, 1, 0, device, initialised_here=True)
        trainer = Trainer(cfg, info)
        summary = trainer.fit()
        probe = torch.ones(1, device=device)
        dist.all_reduce(probe)
        result = {"backend": dist.get_backend(), "ddp_wrapped": trainer.ddp is not None,
                  "all_reduce_ok": float(probe.item()) == 1.0, "stop_reason": summary["stop_reason"]}
        (Path(cfg.run.out_dir) / "ddp_result.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def resume_check(ctx: Context, c: Check) -> None:
    """Uninterrupted run vs a run SIGKILLed one step after its checkpoint and resumed with --resume."""
    s = ctx.sizes
    kill_at = s.resume_save_every + 2  # the step after the checkpoint is done, then lost
    base = run_config(ctx, "fast", "fp32", ctx.work / "resume" / "full", steps=s.resume_steps,
                      save_every=s.resume_save_every)
    base["run"]["deterministic"] = True
    full_cfg = write_config(base, ctx.work / "resume" / "full.yaml")
    killed = ctx.work / "resume" / "killed"
    base["run"]["out_dir"] = str(killed)
    killed_cfg = write_config(base, ctx.work / "resume" / "killed.yaml")
    with _restore_determinism():  # run.deterministic changes process-wide switches
        _resume_runs(ctx, c, kill_at, full_cfg, killed_cfg, killed)


@contextmanager
def _restore_determinism() -> Iterator[None]:
    old = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
           torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old[0], warn_only=old[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old[2], old[3]


def _resume_runs(ctx: Context, c: Check, kill_at: int, full_cfg: Path, killed_cfg: Path, killed: Path) -> None:
    import multiprocessing

    from changeagent.cli import main as cli
    from gpucheck import killed_train

    s = ctx.sizes
    proc = multiprocessing.get_context(start_method(ctx)).Process(
        target=killed_train.run, args=(kill_at, ["-c", str(killed_cfg)]))
    proc.start()
    proc.join(timeout=600)
    c.figures["killed_exitcode"] = proc.exitcode
    if proc.exitcode != -signal.SIGKILL:
        proc.kill()
        raise RuntimeError(f"the training process was not killed at step {kill_at} (exit {proc.exitcode})")
    saved = torch.load(killed / "last.pt", weights_only=True, map_location="cpu")["step"]
    c.figures.update(killed_at_step=kill_at, resumed_from_step=saved)
    if cli(["train", "-c", str(killed_cfg), "--resume", str(killed / "last.pt")]) != 0:
        raise RuntimeError("changeagent train --resume failed")
    if cli(["train", "-c", str(full_cfg)]) != 0:
        raise RuntimeError("the uninterrupted changeagent train failed")
    a = torch.load(ctx.work / "resume" / "full" / "last.pt", weights_only=True, map_location="cpu")
    b = torch.load(killed / "last.pt", weights_only=True, map_location="cpu")
    diff = _max_diff(a["model"], b["model"])
    c.figures.update(final_step=b["step"], bitwise_equal=diff == 0.0, max_abs_weight_diff=diff)
    if diff == 0.0 or not ctx.cuda:
        c.verdict(diff == 0.0 and a["step"] == b["step"] == s.resume_steps)
        return
    # a few CUDA kernels (bilinear upsampling backward, 2-D NLL) have no deterministic version even with
    # run.deterministic: measure that noise with a second uninterrupted run and allow ten times it
    if cli(["train", "-c", str(full_cfg), f"run.out_dir={ctx.work / 'resume' / 'full2'}"]) != 0:
        raise RuntimeError("the second uninterrupted changeagent train failed")
    a2 = torch.load(ctx.work / "resume" / "full2" / "last.pt", weights_only=True, map_location="cpu")
    floor = _max_diff(a["model"], a2["model"])
    c.figures["run_to_run_noise"] = floor
    c.note = "not bitwise equal: compared with the run-to-run noise of two uninterrupted runs"
    c.verdict(a["step"] == b["step"] == s.resume_steps and diff <= 10 * floor)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    if a.keys() != b.keys():
        return math.inf
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0 for k in a)
