"""Mamba temporal block: the PyTorch scan against a naive reference, wiring, checkpoints, AMP, kernel."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from changeagent.errors import ChangeAgentError
from changeagent.models.necks import selective_scan as ss
from changeagent.models.necks.mamba import Mamba, MambaTemporalBlock

MAMBA_SSM_KEYS = {
    "in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight",
    "dt_proj.weight", "dt_proj.bias", "A_log", "D", "out_proj.weight",
}


def naive_scan(u, delta, A, B, C, D, z, delta_bias):
    """Mamba equations, one timestep at a time (float64):
    Δ = softplus(delta + bias); h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_t; y_t = C_t h_t + D x_t; y *= silu(z)."""
    u, delta, A, B, C, D, z, delta_bias = (t.double() for t in (u, delta, A, B, C, D, z, delta_bias))
    dt = F.softplus(delta + delta_bias[:, None])
    bsz, dm, length = u.shape
    h = torch.zeros(bsz, dm, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(length):
        d_t = dt[:, :, t, None]  # [B, Dm, 1]
        h = torch.exp(d_t * A) * h + d_t * B[:, None, :, t] * u[:, :, t, None]
        ys.append((h * C[:, None, :, t]).sum(-1) + D * u[:, :, t])
    return torch.stack(ys, dim=-1) * F.silu(z)


def scan_inputs(bsz=2, dm=6, n=4, length=9, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    tensors = dict(
        u=r(bsz, dm, length), delta=r(bsz, dm, length) * 0.5, A=-torch.exp(r(dm, n) * 0.5),
        B=r(bsz, n, length), C=r(bsz, n, length), D=r(dm), z=r(bsz, dm, length), delta_bias=r(dm) * 0.5,
    )
    return {k: v.requires_grad_(requires_grad) for k, v in tensors.items()}


def test_torch_scan_matches_naive_reference():
    x = scan_inputs(length=33)
    out = ss.selective_scan_torch(**x, delta_softplus=True)
    assert out.dtype == torch.float32 and out.shape == (2, 6, 33)
    torch.testing.assert_close(out.double(), naive_scan(**x), atol=1e-5, rtol=1e-5)


def test_torch_scan_gradients_match_naive_reference():
    x = scan_inputs(requires_grad=True)
    ref = {k: v.detach().double().requires_grad_() for k, v in x.items()}
    w = torch.randn(2, 6, 9, dtype=torch.float64)
    (ss.selective_scan_torch(**x, delta_softplus=True).double() * w).sum().backward()
    (naive_scan(**ref) * w).sum().backward()
    for k in x:
        torch.testing.assert_close(x[k].grad.double(), ref[k].grad, atol=1e-5, rtol=1e-4, msg=k)


def test_torch_scan_low_precision_inputs_run_in_float32():
    x = {k: v.bfloat16() for k, v in scan_inputs().items()}
    out = ss.selective_scan_torch(**x, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    expected = naive_scan(**{k: v.float() for k, v in x.items()}).bfloat16()
    torch.testing.assert_close(out, expected, atol=1e-2, rtol=1e-2)


def test_mixer_equals_naive_recomputation_from_its_parameters():
    torch.manual_seed(0)
    m = Mamba(8, d_state=4, d_conv=3, expand=2)
    x = torch.randn(2, 7, 8)
    u, z = (x @ m.in_proj.weight.T).transpose(1, 2).chunk(2, dim=1)
    u = F.silu(F.conv1d(F.pad(u, (2, 0)), m.conv1d.weight, m.conv1d.bias, groups=16))  # causal
    dt, b, c = (u.transpose(1, 2) @ m.x_proj.weight.T).split([1, 4, 4], dim=-1)
    y = naive_scan(u, (dt @ m.dt_proj.weight.T).transpose(1, 2), -torch.exp(m.A_log), b.transpose(1, 2),
                   c.transpose(1, 2), m.D, z, m.dt_proj.bias)
    expected = y.float().transpose(1, 2) @ m.out_proj.weight.T
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)


def test_mixer_state_dict_uses_mamba_ssm_names_and_shapes():
    m = Mamba(32, d_state=8, d_conv=4, expand=2)
    sd = m.state_dict()
    assert set(sd) == MAMBA_SSM_KEYS
    assert sd["A_log"].shape == (64, 8) and sd["D"].shape == (64,)
    assert sd["conv1d.weight"].shape == (64, 1, 4) and sd["in_proj.weight"].shape == (128, 32)
    assert sd["x_proj.weight"].shape == (2 + 16, 64) and sd["dt_proj.weight"].shape == (64, 2)
    assert torch.all(-torch.exp(sd["A_log"]) < 0)
    # initial step sizes softplus(bias) lie in the [dt_min, dt_max] range
    assert torch.all((F.softplus(sd["dt_proj.bias"]) > 9e-4) & (F.softplus(sd["dt_proj.bias"]) < 0.11))


@pytest.mark.parametrize("scan", ["interleave", "concat", "both"])
def test_block_shapes_and_gradients(scan):
    torch.manual_seed(0)
    blk = MambaTemporalBlock(16, depth=2, d_state=4, scan=scan)
    xa = torch.randn(2, 16, 3, 5, requires_grad=True)
    xb = torch.randn(2, 16, 3, 5, requires_grad=True)
    ya, yb = blk(xa, xb)
    assert ya.shape == xa.shape and yb.shape == xb.shape
    (ya.square().mean() + yb.sin().sum()).backward()
    for name, p in blk.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert xa.grad.abs().sum() > 0 and xb.grad.abs().sum() > 0


@pytest.mark.parametrize("scan", ["interleave", "concat", "both"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_a_and_b_interact_and_scan_is_causal(scan, bidirectional):
    torch.manual_seed(1)
    blk = MambaTemporalBlock(8, depth=1, d_state=4, scan=scan, bidirectional=bidirectional).eval()
    xa, xb = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    ya, yb = blk(xa, xb)
    ya2, yb2 = blk(xa, xb + torch.randn_like(xb))
    if scan == "concat" and not bidirectional:
        # all of A is scanned before any of B: B cannot reach A's outputs
        torch.testing.assert_close(ya2, ya, atol=0, rtol=0)
        assert (blk(xa + torch.randn_like(xa), xb)[1] - yb).abs().max() > 1e-4  # A reaches B
    else:
        assert (ya2 - ya).abs().max() > 1e-4
    if scan == "interleave" and not bidirectional:
        # a_1 is the first token of the interleaved sequence: nothing of B precedes it
        torch.testing.assert_close(ya2[..., 0, 0], ya[..., 0, 0], atol=0, rtol=0)


def test_state_dict_round_trip_through_safetensors(tmp_path):
    torch.manual_seed(0)
    blk = MambaTemporalBlock(16, depth=2, d_state=4, scan="both")
    keys = set(blk.state_dict())
    mixer_keys = {k for k in keys if ".mixers." in k}
    assert {k.split(".", 4)[4] for k in mixer_keys} == MAMBA_SSM_KEYS
    assert {k.split(".")[3] for k in mixer_keys} == {"interleave_fwd", "interleave_bwd", "concat_fwd", "concat_bwd"}
    assert keys - mixer_keys == {"layers.0.norm.weight", "layers.0.norm.bias", "layers.1.norm.weight",
                                 "layers.1.norm.bias", "norm.weight", "norm.bias"}
    save_file(blk.state_dict(), str(tmp_path / "mamba.safetensors"))

    torch.manual_seed(123)
    fresh = MambaTemporalBlock(16, depth=2, d_state=4, scan="both", backend="torch")
    xa, xb = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    assert not torch.equal(fresh(xa, xb)[0], blk(xa, xb)[0])
    fresh.load_state_dict(load_file(str(tmp_path / "mamba.safetensors")))
    for got, want in zip(fresh(xa, xb), blk(xa, xb)):
        assert torch.equal(got, want)


def test_bf16_autocast_on_cpu():
    torch.manual_seed(0)
    blk = MambaTemporalBlock(16, depth=2, d_state=4)
    xa, xb = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    ref_a, _ = blk(xa, xb)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya, yb = blk(xa, xb)
        loss = ya.float().square().mean() + yb.float().square().mean()
    loss.backward()
    assert ya.shape == xa.shape and torch.isfinite(ya.float()).all() and torch.isfinite(yb.float()).all()
    assert all(torch.isfinite(p.grad).all() for p in blk.parameters())
    assert F.cosine_similarity(ya.float().flatten(), ref_a.flatten(), dim=0) > 0.99


def test_backend_selection_and_logging(caplog, monkeypatch):
    monkeypatch.setattr(ss, "_logged", set())
    with caplog.at_level(logging.DEBUG, logger=ss.__name__):
        assert ss.resolve_backend("auto", torch.device("cpu")) == "torch"
        assert ss.resolve_backend("torch", torch.device("cpu")) == "torch"
    assert "using the torch path on cpu" in caplog.text
    with pytest.raises(ChangeAgentError, match="kernel"):
        ss.resolve_backend("kernel", torch.device("cpu"))
    with pytest.raises(ChangeAgentError, match="backend"):
        ss.resolve_backend("fast", torch.device("cpu"))
    blk = MambaTemporalBlock(8, depth=1, d_state=4)
    blk.backend = "torch"
    assert blk.backend == "torch" and all(m.backend == "torch" for m in blk.modules() if isinstance(m, Mamba))
    assert not any("backend" in k for k in blk.state_dict())


def test_bad_inputs_raise_changeagent_error():
    blk = MambaTemporalBlock(8, depth=1, d_state=4, heads=4)  # unknown neck options are ignored
    with pytest.raises(ChangeAgentError, match="same shape"):
        blk(torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 5))
    with pytest.raises(ChangeAgentError, match="channels"):
        blk(torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4))
    with pytest.raises(ChangeAgentError, match="scan"):
        MambaTemporalBlock(8, scan="zigzag")
    with pytest.raises(ChangeAgentError, match="depth"):
        MambaTemporalBlock(8, depth=0)
    with pytest.raises(ChangeAgentError, match="d_state"):
        Mamba(8, d_state=0)


def test_kernel_dispatch_passes_the_kernels_argument_contract(monkeypatch):
    """Without CUDA, stand in for mamba-ssm's selective_scan_fn with a function of its signature that
    checks what the CUDA kernel requires, then runs the naive scan: the dispatch code is exercised."""
    calls = []

    def kernel_like(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                    return_last_state=False):
        assert all(t.dtype == u.dtype and t.is_contiguous() for t in (u, delta, B, C, z))
        assert A.dtype == D.dtype == delta_bias.dtype == torch.float32 and delta_softplus
        calls.append(u.dtype)
        return naive_scan(u, delta, A, B, C, D, z, delta_bias).to(u.dtype)

    monkeypatch.setattr(ss, "_kernel_scan", kernel_like)
    monkeypatch.setattr(ss, "resolve_backend", lambda backend, device: backend)
    torch.manual_seed(0)
    m = Mamba(8, d_state=4)
    x = torch.randn(2, 7, 8)
    for ctx_dtype in (None, torch.bfloat16):
        with torch.autocast("cpu", dtype=ctx_dtype or torch.float32, enabled=ctx_dtype is not None):
            m.backend = "kernel"
            y_kernel = m(x)
            m.backend = "torch"
            y_torch = m(x)
        tol = 1e-5 if ctx_dtype is None else 2e-2
        torch.testing.assert_close(y_kernel, y_torch, atol=tol, rtol=tol)
    assert calls == [torch.float32, torch.bfloat16]


@pytest.mark.skipif(not (torch.cuda.is_available() and ss.kernel_available()), reason="needs CUDA + mamba_ssm")
def test_kernel_path_matches_torch_path():
    x = {k: v.cuda().requires_grad_() for k, v in scan_inputs(bsz=2, dm=32, n=8, length=64).items()}
    y_kernel = ss.selective_scan(**x, delta_softplus=True, backend="kernel")
    grads_kernel = torch.autograd.grad(y_kernel.square().sum(), list(x.values()))
    y_torch = ss.selective_scan(**x, delta_softplus=True, backend="torch")
    grads_torch = torch.autograd.grad(y_torch.square().sum(), list(x.values()))
    torch.testing.assert_close(y_kernel, y_torch, atol=1e-4, rtol=1e-4)
    for gk, gt in zip(grads_kernel, grads_torch):
        torch.testing.assert_close(gk, gt, atol=1e-3, rtol=1e-3)

    torch.manual_seed(0)
    blk = MambaTemporalBlock(64, depth=2, scan="both").cuda().eval()
    xa, xb = torch.randn(2, 64, 8, 8, device="cuda"), torch.randn(2, 64, 8, 8, device="cuda")
    assert ss.resolve_backend(blk.backend, xa.device) == "kernel"
    out_kernel = blk(xa, xb)
    blk.backend = "torch"
    for got, want in zip(blk(xa, xb), out_kernel):  # two layers of different summation orders
        torch.testing.assert_close(got, want, atol=5e-4, rtol=5e-4)
