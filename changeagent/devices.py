"""`resolve_device`: the one rule from a device name (`run.device`, `--device`) to a torch.device.

Shared by training/evaluation (one process per device under torchrun/srun) and inference/benchmarks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from changeagent.errors import ChangeAgentError

if TYPE_CHECKING:
    import torch

NAMES = "auto, cpu, cuda, cuda:N"


def resolve_device(name: str, local_rank: int = 0, key: str = "--device") -> torch.device:
    """`auto` (this process's GPU when CUDA is there, else the CPU), `cpu`, `cuda` (this process's
    GPU: `local_rank` modulo the visible GPUs) or `cuda:N` -> torch.device. A name torch does not
    know, CUDA without a GPU, or a GPU index past the visible ones is an error naming `key`."""
    import torch

    name = str(name).strip()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ChangeAgentError(f"{key} {name!r} is not a device ({NAMES})") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ChangeAgentError(f"{key} {name!r}: only {NAMES} are supported")
    if not torch.cuda.is_available():
        raise ChangeAgentError(f"{key} {name}: CUDA is not available on this machine")
    count = torch.cuda.device_count()
    if dev.index is None:
        return torch.device("cuda", local_rank % max(count, 1))
    if dev.index >= count:
        raise ChangeAgentError(f"{key} {name}: this machine shows {count} GPU(s) (cuda:0..cuda:{count - 1})")
    return dev
