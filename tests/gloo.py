"""Two-process Gloo groups for the DDP tests, started by fork: the workers inherit the imported
torch, so a group starts in well under a second (spawn re-imports torch in every process)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp


def _run(rank: int, world: int, init_file: str, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()
        os._exit(0)  # skip the inherited interpreter's (pytest's) exit handlers in the forked child


def run_gloo(fn: Callable[..., None], tmp: Path, *args: Any, world: int = 2) -> None:
    """Run fn(rank, world, *args) in `world` forked processes joined in one Gloo group; a failing
    rank fails the caller."""
    mp.start_processes(_run, args=(world, str(tmp / "gloo_init"), fn, args), nprocs=world, join=True,
                       start_method="fork")
