"""What every section needs: the device, the sizes, the work folder and model configs."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpucheck.sizes import Sizes


@dataclass
class Context:
    device: torch.device
    dry_run: bool
    sizes: Sizes
    work: Path
    fixture: Path
    vocab: Path
    mamba_kernel: bool
    mamba_reason: str

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def model_config(self, name: str) -> dict[str, Any]:
        """configs/model/NAME.yaml, narrowed by the dry run's overrides (only keys the config has)."""
        from changeagent.config import load_model_config

        cfg = load_model_config(name)
        _merge_known(cfg, self.sizes.model_overrides.get(name, {}))
        return cfg

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def _merge_known(dst: dict[str, Any], src: dict[str, Any]) -> None:
    """Deep-update `dst` with `src`, but only for keys `dst` already has (a config another branch
    reshapes keeps working in the dry run; the full-size check uses the config untouched)."""
    for k, v in copy.deepcopy(src).items():
        if k not in dst:
            continue
        if isinstance(v, dict) and isinstance(dst[k], dict):
            _merge_known(dst[k], v)
        else:
            dst[k] = v


@contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off for matmuls and convolutions: fp32 comparisons on Ampere+ GPUs mean real fp32."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (float64): one scale-free number per tensor pair."""
    a64, b64 = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a64 - b64).abs().max() / b64.abs().max().clamp_min(1e-12))


def autocast(ctx: Context, precision: str) -> Any:
    from contextlib import nullcontext

    if precision == "fp32":
        return nullcontext()
    return torch.autocast(ctx.device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
