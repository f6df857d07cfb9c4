"""Process-group set-up from the launcher's environment: torchrun first, then SLURM `srun`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. Under `srun` without torchrun
we read SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID; MASTER_ADDR / MASTER_PORT must then be exported by
the job script (tools/slurm_train.sh does). NCCL on CUDA, Gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from changeagent.devices import resolve_device
from changeagent.errors import ChangeAgentError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False  # we created the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ChangeAgentError(f"environment variable {name}={value!r} is not an integer") from None


def launcher_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun or SLURM variables; (0, 1, 0) when neither is set."""
    world = _env_int("WORLD_SIZE")
    if world is not None:
        return _env_int("RANK") or 0, world, _env_int("LOCAL_RANK") or 0
    # srun sets SLURM_PROCID and the step's task count; the batch script itself is a 1-task step, so a
    # plain `python -m changeagent train` there stays a single process instead of waiting for peers
    ntasks = _env_int("SLURM_STEP_NUM_TASKS") or _env_int("SLURM_NTASKS")
    if ntasks is not None and ntasks > 1 and _env_int("SLURM_PROCID") is not None:
        return _env_int("SLURM_PROCID") or 0, ntasks, _env_int("SLURM_LOCALID") or 0
    return 0, 1, 0


def init_distributed(device_pref: str = "auto", timeout_minutes: float = 30.0) -> DistInfo:
    """Join (or create) the default process group when the launcher asks for more than one process."""
    rank, world, local_rank = launcher_env()
    device = resolve_device(device_pref, local_rank, key="run.device")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world <= 1:
        return DistInfo(0, 1, 0, device)
    if dist.is_initialized():  # e.g. a caller already set it up
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise ChangeAgentError(
                f"{world} processes requested but {key} is not set; launch with torchrun or export "
                "MASTER_ADDR/MASTER_PORT in the SLURM script (see tools/slurm_train.sh)"
            )
    import datetime

    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend, rank=rank, world_size=world, timeout=datetime.timedelta(minutes=timeout_minutes),
        device_id=device if device.type == "cuda" else None,
    )
    return DistInfo(rank, world, local_rank, device, initialised_here=True)


def cleanup(info: DistInfo) -> None:
    if info.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def any_true(flag: bool, info: DistInfo) -> bool:
    """Logical OR of a flag over ranks, so every rank takes the same branch (stop, NaN, ...)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Picklable object from every rank, in rank order (a one-element list without DDP)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's object on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean_(tensors: list[torch.Tensor], info: DistInfo) -> None:
    """Average tensors (e.g. gradients of parameters outside the DDP module) across ranks in place."""
    if not info.enabled:
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(info.world_size)


def broadcast_buffers_(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank. DDP only syncs them at the start
    of a forward, so after the last step each rank holds its own; evaluation must use rank 0's."""
    if not info.enabled:
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=0)
