"""The machine the check runs on, and whether mamba-ssm's selective-scan kernel imports (and why not)."""

from __future__ import annotations

import importlib
import platform
from importlib import metadata
from typing import Any

import torch


def mamba_status() -> tuple[bool, str]:
    """(kernel importable, "version X" or the reason it is not)."""
    try:
        version = metadata.version("mamba-ssm")
    except metadata.PackageNotFoundError:
        return False, "mamba-ssm is not installed (pip install -e '.[cuda]')"
    try:
        importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    except Exception as e:  # ImportError, OSError (CUDA ABI), RuntimeError: report the first line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return False, f"mamba-ssm {version} fails to import: {type(e).__name__}: {first}"
    from changeagent.models.necks.selective_scan import kernel_available

    if not kernel_available():  # our module caught an import error the direct import did not see
        return False, f"mamba-ssm {version} imports, but changeagent's selective_scan could not load it"
    return True, f"version {version}"


def describe(device: torch.device) -> dict[str, Any]:
    ok, why = mamba_status()
    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
        "cuda_runtime": torch.version.cuda, "mamba_ssm": why, "mamba_kernel": ok,
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version(), nccl=_nccl_version(),
                    bf16_supported=torch.cuda.is_bf16_supported())
    return info


def _nccl_version() -> str:
    try:
        v = torch.cuda.nccl.version()
    except Exception as e:  # a build without NCCL: the DDP check will say more
        return f"unavailable ({type(e).__name__})"
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
