"""Selective scan (the S6 recurrence of Mamba) with a CUDA-kernel path and an exact PyTorch path.

Both paths compute, per batch ``b``, channel ``d`` and state ``n``::

    Δ_t = softplus(delta_t + delta_bias)          (when delta_softplus)
    h_t = exp(Δ_t A) * h_{t-1} + Δ_t B_t u_t,    h_0 = 0
    y_t = <C_t, h_t> + D u_t
    out = y * silu(z)                             (when z is given)

The kernel path is ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` (optional extra
``changeagent[cuda]``). The PyTorch path follows the kernel's numerics: the recurrence runs in float32
whatever the input dtype and the result is cast back to ``u.dtype``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from changeagent.errors import ChangeAgentError

logger = logging.getLogger(__name__)

# optional: needs a CUDA build of mamba-ssm. Not installed -> no kernel here; installed but failing to
# import (built for another CUDA/torch) -> KERNEL_ERROR, reported when a mamba neck is configured.
KERNEL_ERROR: str | None = None
try:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _kernel_scan
except ModuleNotFoundError as _e:
    _kernel_scan = None
    if not (_e.name or "").startswith("mamba_ssm"):  # mamba-ssm is there but one of its imports is not
        KERNEL_ERROR = f"{type(_e).__name__}: {_e}"
except (ImportError, OSError, RuntimeError) as _e:  # OSError/RuntimeError: extension built for another CUDA
    _kernel_scan = None
    KERNEL_ERROR = f"{type(_e).__name__}: {str(_e).splitlines()[0] if str(_e) else ''}"

BACKENDS = ("auto", "torch", "kernel")
_logged: set[str] = set()


def kernel_available() -> bool:
    """True when mamba-ssm's selective-scan CUDA kernel could be imported."""
    return _kernel_scan is not None


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map ``"auto" | "torch" | "kernel"`` to the path actually used on ``device``.

    ``auto`` takes the kernel only when mamba-ssm imported AND the tensors are on CUDA. Asking for
    ``kernel`` where it cannot run is an error rather than a silent fallback.
    """
    if backend not in BACKENDS:
        raise ChangeAgentError(f"Mamba scan backend must be one of {BACKENDS}, got {backend!r}")
    can_kernel = _kernel_scan is not None and device.type == "cuda"
    if backend == "kernel" and not can_kernel:
        why = "mamba-ssm is not installed (pip install changeagent[cuda])" if _kernel_scan is None else (
            f"tensors are on {device.type}, the kernel needs CUDA"
        )
        raise ChangeAgentError(f"Mamba scan backend 'kernel' requested but {why}")
    chosen = "kernel" if (backend == "kernel" or (backend == "auto" and can_kernel)) else "torch"
    if chosen not in _logged:  # once per process and path: the scan runs many times per step
        _logged.add(chosen)
        logger.debug("Mamba selective scan: using the %s path on %s", chosen, device.type)
        if backend == "auto" and device.type == "cuda" and chosen == "torch":
            # a GPU run of the reference-speed path needs the kernel: several times slower without it
            why = f"mamba-ssm failed to import ({KERNEL_ERROR})" if KERNEL_ERROR else \
                "mamba-ssm is not installed (pip install changeagent[cuda])"
            note(f"note: model.neck.backend=auto on CUDA uses the PyTorch selective scan: {why}; "
                 "set model.neck.backend=torch to silence this, or install mamba-ssm for the kernel")
    return chosen


def note(msg: str) -> None:
    """A visible `note:` line (as the engine's device notes), from the first process only."""
    if os.environ.get("RANK", "0") in ("", "0"):
        tqdm.write(msg)


def selective_scan_torch(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """Exact selective scan in plain PyTorch (same signature and layout as mamba-ssm's).

    u, delta, z: ``[Bt, Dm, L]``; A: ``[Dm, N]`` (negative reals); B, C: ``[Bt, N, L]``;
    D, delta_bias: ``[Dm]``. Returns ``[Bt, Dm, L]`` in ``u.dtype``.

    The discretisation is vectorised over all of ``[L, Bt, Dm, N]`` up front (time-major, so each
    step reads one contiguous block); only the first-order recurrence ``h = a_t * h + b_t`` loops
    over L, one fused op per step: the cheapest exact form on CPU for the short sequences of the
    deepest feature level.
    """
    dtype_in = u.dtype
    u, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    # contiguous time-major operands: broadcast results inherit their inputs' memory layout
    delta_t = delta.permute(2, 0, 1).contiguous()  # [L, Bt, Dm]
    decay = torch.exp(delta_t.unsqueeze(-1) * A.float())  # [L, Bt, Dm, N]
    b_t = B.float().permute(2, 0, 1).unsqueeze(2)  # [L, Bt, 1, N]
    inject = (delta_t * u.permute(2, 0, 1)).unsqueeze(-1) * b_t
    h = torch.zeros_like(decay[0])
    states = []
    # unbind, not indexing: a slice's backward would allocate a full-size gradient per step
    for a_step, b_step in zip(decay.unbind(0), inject.unbind(0)):
        h = torch.addcmul(b_step, a_step, h)
        states.append(h)
    hs = torch.stack(states)  # [L, Bt, Dm, N]
    y = torch.matmul(hs, C.float().permute(2, 0, 1).unsqueeze(-1)).squeeze(-1).permute(1, 2, 0)
    if D is not None:
        y = y + u * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype_in)


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    backend: str = "auto",
) -> Tensor:
    """Selective scan on the path chosen by :func:`resolve_backend`; shapes as in
    :func:`selective_scan_torch`. Both paths compute the same function."""
    if resolve_backend(backend, u.device) == "kernel":
        # the kernel wants u/delta/B/C/z in one dtype and A/D/delta_bias in float32
        dt = u.dtype
        fn: Callable[..., Tensor] = _kernel_scan  # type: ignore[assignment]
        return fn(
            u.contiguous(), delta.to(dt).contiguous(), A.float(), B.to(dt).contiguous(), C.to(dt).contiguous(),
            D=None if D is None else D.float(),
            z=None if z is None else z.to(dt).contiguous(),
            delta_bias=None if delta_bias is None else delta_bias.float(),
            delta_softplus=delta_softplus,
        )
    return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
