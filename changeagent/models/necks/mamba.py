"""Bi-temporal Mamba block: selective state-space scans over the joint A/B token sequence.

``MambaTemporalBlock(xa, xb)`` flattens the two feature maps into one token sequence (interleaved
``a_1, b_1, a_2, b_2, ...`` and/or concatenated ``a_1..a_N, b_1..b_N``), runs ``depth`` pre-norm
residual layers of Mamba mixers over it (forward and, if ``bidirectional``, reversed), and splits the
result back into two maps. Because every token's state carries the tokens scanned before it, A
features see B features and vice versa.

:class:`Mamba` keeps mamba-ssm's parameter names (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``,
``A_log``, ``D``, ``out_proj``), so its weights load into ``mamba_ssm.Mamba`` and back. The scan runs
on mamba-ssm's CUDA kernel when available and the tensors are on CUDA, otherwise on the exact
PyTorch scan in :mod:`.selective_scan`; the same checkpoint gives the same function on both.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from changeagent.errors import ChangeAgentError
from changeagent.models.necks import selective_scan as _ss
from changeagent.models.necks.base import NeckCfg
from changeagent.models.necks.selective_scan import BACKENDS, selective_scan
from changeagent.typed import fail, opt

logger = logging.getLogger(__name__)

SCANS = ("interleave", "concat", "both")


@dataclass
class MambaNeckCfg(NeckCfg):
    """`mamba`: residual layers of selective state-space scans over the joint A/B token sequence."""

    name: str = opt("mamba", "neck type")
    depth: int = opt(2, "residual Mamba layers", ge=1)
    d_state: int = opt(16, "SSM state size N", ge=1)
    d_conv: int = opt(4, "causal depth-wise conv width", ge=1)
    expand: int = opt(2, "inner width / block width", ge=1)
    scan: str = opt("interleave", "token order: interleave (a1 b1 a2 b2 ...), concat (A then B) or both",
                    choices=SCANS)
    bidirectional: bool = opt(True, "also scan every order reversed")
    dropout: float = opt(0.0, "dropout on each layer's mixer output", ge=0, lt=1)
    backend: str = opt("auto", "selective scan: auto (mamba-ssm kernel on CUDA when installed), torch, kernel",
                       choices=BACKENDS)

    def validate(self, key: str) -> None:
        # a broken mamba-ssm install is reported now, not swallowed into the slow path for the whole run
        if _ss.KERNEL_ERROR is not None and self.backend != "torch":
            fail(f"{key}.backend", f"mamba-ssm is installed but cannot be imported ({_ss.KERNEL_ERROR}); "
                 "reinstall it for this torch/CUDA, uninstall it, or set backend=torch")


class Mamba(nn.Module):
    """Mamba (S6) mixer over a token sequence: ``[Bt, L, d_model] -> [Bt, L, d_model]``.

    Args:
        d_model: token width. d_state: SSM state size N. d_conv: causal depthwise conv width.
        expand: inner width ``d_inner = expand * d_model``. dt_rank: rank of the Δ projection
            (``"auto"``: ``ceil(d_model / 16)``). dt_min/dt_max/dt_init_floor: range of the initial
            step sizes Δ. backend: ``"auto" | "torch" | "kernel"`` (not saved in the state dict).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv), ("expand", expand)):
            if not isinstance(value, int) or value < 1:
                raise ChangeAgentError(f"Mamba: {name} must be a positive integer, got {value!r}")
        if backend not in BACKENDS:
            raise ChangeAgentError(f"Mamba: backend must be one of {BACKENDS}, got {backend!r}")
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.backend = backend

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        # S4D-real init: A = -(1..N) for every channel, stored as log so A stays negative in training
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]
        self.D._no_weight_decay = True  # type: ignore[attr-defined]
        self._init_dt(dt_min, dt_max, dt_init_floor)

    @torch.no_grad()
    def _init_dt(self, dt_min: float, dt_max: float, floor: float) -> None:
        """Initial Δ = softplus(bias) log-uniform in [dt_min, dt_max], so the scan neither forgets
        everything at once nor never forgets."""
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        log_dt = torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        dt = torch.exp(log_dt).clamp(min=floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse of softplus

    def forward(self, x: Tensor) -> Tensor:
        """x: float ``[Bt, L, d_model]`` -> ``[Bt, L, d_model]`` (causal along L)."""
        length = x.shape[1]
        xz = self.in_proj(x).transpose(1, 2)  # [Bt, 2*d_inner, L]
        u, z = xz.chunk(2, dim=1)
        u = F.silu(self.conv1d(u)[..., :length])  # trim right padding -> causal conv
        dt, b, c = self.x_proj(u.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # bias goes in as delta_bias, as mamba-ssm does
        # one dtype for every sequence operand so the kernel and torch paths see identical inputs
        dtype = u.dtype
        y = selective_scan(
            u,
            dt.transpose(1, 2).to(dtype),
            -torch.exp(self.A_log.float()),
            b.transpose(1, 2).to(dtype),
            c.transpose(1, 2).to(dtype),
            self.D.float(),
            z=z.to(dtype),
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            backend=self.backend,
        )
        return self.out_proj(y.transpose(1, 2))


class _MambaLayer(nn.Module):
    """Pre-norm residual layer: ``x + dropout(mean_k path_k(norm(x)))`` over ``[B, 2N, C]`` in the
    concatenated token layout; each path reorders the tokens, runs its own mixer and restores order."""

    def __init__(self, dim: int, paths: list[str], dropout: float, **mamba_kwargs: object) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mixers = nn.ModuleDict({p: Mamba(dim, **mamba_kwargs) for p in paths})  # type: ignore[arg-type]
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        out = torch.zeros_like(x)
        for path, mixer in self.mixers.items():
            order, direction = path.split("_")
            seq = _to_interleaved(h) if order == "interleave" else h
            seq = seq.flip(1) if direction == "bwd" else seq
            y = mixer(seq)
            y = y.flip(1) if direction == "bwd" else y
            out = out + (_from_interleaved(y) if order == "interleave" else y)
        return x + self.drop(out / len(self.mixers))


def _to_interleaved(x: Tensor) -> Tensor:
    """``[B, 2N, C]`` as ``a_1..a_N, b_1..b_N`` -> ``a_1, b_1, ..., a_N, b_N``."""
    bsz, length, dim = x.shape
    return x.view(bsz, 2, length // 2, dim).transpose(1, 2).reshape(bsz, length, dim)


def _from_interleaved(x: Tensor) -> Tensor:
    """Inverse of :func:`_to_interleaved`."""
    bsz, length, dim = x.shape
    return x.view(bsz, length // 2, 2, dim).transpose(1, 2).reshape(bsz, length, dim)


class MambaTemporalBlock(nn.Module):
    """Spatio-temporal Mamba block exchanging information between date A and date B features.

    Args:
        dim: channels C of both maps. depth: number of residual layers.
        d_state, d_conv, expand: :class:`Mamba` sizes.
        scan: ``"interleave"`` (a_1, b_1, a_2, b_2, ...: each location meets its other-date twin
            right away), ``"concat"`` (all of A then all of B) or ``"both"`` (one mixer per order).
        bidirectional: also scan every order reversed (own mixer), so A sees B even with ``concat``
            and every token sees the whole sequence.
        dropout: on each layer's mixer output. backend: ``"auto" | "torch" | "kernel"``.
        **unused: other neck options, ignored so one config dict can feed every temporal block.

    State-dict keys: ``layers.{i}.norm.*``, ``layers.{i}.mixers.{order}_{fwd|bwd}.<mamba-ssm name>``,
    ``norm.*``.
    """

    def __init__(
        self,
        dim: int,
        depth: int = 2,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        scan: str = "interleave",
        bidirectional: bool = True,
        dropout: float = 0.0,
        backend: str = "auto",
        **unused: object,
    ) -> None:
        super().__init__()
        if scan not in SCANS:
            raise ChangeAgentError(f"MambaTemporalBlock: scan must be one of {SCANS}, got {scan!r}")
        if not isinstance(depth, int) or depth < 1:
            raise ChangeAgentError(f"MambaTemporalBlock: depth must be a positive integer, got {depth!r}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ChangeAgentError(f"MambaTemporalBlock: dropout must be in [0, 1), got {dropout!r}")
        if unused:
            logger.debug("MambaTemporalBlock ignores options %s", sorted(unused))
        self.dim, self.scan, self.bidirectional = dim, scan, bidirectional
        orders = ["interleave", "concat"] if scan == "both" else [scan]
        paths = [f"{o}_{d}" for o in orders for d in (("fwd", "bwd") if bidirectional else ("fwd",))]
        self.layers = nn.ModuleList(
            _MambaLayer(dim, paths, float(dropout), d_state=d_state, d_conv=d_conv, expand=expand, backend=backend)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    @property
    def backend(self) -> str:
        """Scan path request shared by every mixer: ``"auto" | "torch" | "kernel"``."""
        return next(m for m in self.modules() if isinstance(m, Mamba)).backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise ChangeAgentError(f"MambaTemporalBlock: backend must be one of {BACKENDS}, got {value!r}")
        for m in self.modules():
            if isinstance(m, Mamba):
                m.backend = value

    def forward(self, xa: Tensor, xb: Tensor) -> tuple[Tensor, Tensor]:
        """xa, xb: float ``[B, C, H, W]`` (C = dim) -> (ya, yb), same shapes."""
        if xa.dim() != 4 or xa.shape != xb.shape:
            raise ChangeAgentError(
                f"MambaTemporalBlock: expected two [B, C, H, W] maps of the same shape, "
                f"got {tuple(xa.shape)} and {tuple(xb.shape)}"
            )
        if xa.shape[1] != self.dim:
            raise ChangeAgentError(f"MambaTemporalBlock: expected {self.dim} channels, got {xa.shape[1]}")
        bsz, dim, height, width = xa.shape
        n = height * width
        x = torch.cat([xa.flatten(2), xb.flatten(2)], dim=2).transpose(1, 2)  # [B, 2N, C]
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x).transpose(1, 2)  # [B, C, 2N]
        ya = x[:, :, :n].reshape(bsz, dim, height, width)
        yb = x[:, :, n:].reshape(bsz, dim, height, width)
        return ya, yb
