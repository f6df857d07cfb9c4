"""What the machine offers a training process: its CPU cores, loader workers, autocast.

A recipe written for a GPU node (bf16 autocast, 8 loader workers) must still learn when it runs on a
small CPU machine, so the engine adapts what depends on the device and says so once:

- autocast runs only on CUDA. CPUs without native bf16/fp16 units (most; AVX512-BF16/AMX are rare)
  emulate the half-precision kernels and run several times slower than float32;
- loader workers are capped to the cores this process may use minus one (the training process needs
  one core itself); more workers than cores only add process switches and memory.
"""

from __future__ import annotations

import os

import torch
from tqdm import tqdm

_said: set[str] = set()


def reset_notes() -> None:
    """Forget the notes said so far (a new run in the same process says them again)."""
    _said.clear()


def say_once(msg: str, is_main: bool = True) -> None:
    """Print `msg` (a `note:` line) once per run; only the main rank prints."""
    if is_main and msg not in _said:
        _said.add(msg)
        tqdm.write(msg)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and `taskset` set)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows have no affinity API
        return os.cpu_count() or 1


def local_processes() -> int:
    """Training processes on this node (torchrun's LOCAL_WORLD_SIZE, SLURM's tasks per node, else 1)."""
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def cores_per_process() -> int:
    return max(available_cores() // local_processes(), 1)


def loader_workers(requested: int, is_main: bool = True) -> int:
    """`data.num_workers` capped to this process's cores minus one (0 = load in the main process)."""
    cap = max(cores_per_process() - 1, 0)
    if requested > cap:
        say_once(f"note: data.num_workers={requested} capped to {cap}: {cores_per_process()} CPU core(s) "
                 f"per process, one stays with the main process", is_main)
        return cap
    return requested


def autocast_dtype(amp: str, device: torch.device, is_main: bool = True) -> torch.dtype | None:
    """The autocast dtype for `train.amp` on `device`: bf16/fp16 on CUDA, None (float32) elsewhere."""
    if amp == "none":
        return None
    if device.type != "cuda":
        say_once(f"note: train.amp={amp} is off on {device.type}: autocast only speeds up CUDA "
                 f"(on a CPU half precision is emulated and slower); training in float32", is_main)
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))
