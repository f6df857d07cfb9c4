"""Section 1: the mamba-ssm kernel against our PyTorch scan, the `mamba` model with and without the
kernel, and the faithful MCI port against the shared reference fixture on CUDA and on the CPU.

Dry run (no CUDA): the kernel's place is taken by the same computation in float64 on the CPU, so the
comparison code, tolerances and gradients all run; the kernel checks themselves are reported skipped.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gpucheck.context import Context, autocast, exact_fp32, rel_err
from gpucheck.report import Check, Report

# scale-free error max|a-b| / max|b| allowed. fp32: both paths accumulate the recurrence in fp32 and
# differ only in operation order. bf16: inputs/outputs are bf16 (8 mantissa bits, ~4e-3 relative), so a
# few rounding steps of the largest value are allowed; gradients are reductions over batch and length.
SCAN_TOL = {"fp32": {"forward": 1e-3, "grad": 5e-3}, "bf16": {"forward": 2e-2, "grad": 5e-2}}
# whole `mamba` model (encoder, neck, decoders), kernel vs PyTorch scan, same weights, eval mode
MODEL_TOL = {"fp32": 1e-3, "bf16": 5e-2}
MCI_TOL = 1e-4  # the fixture's README: mask logits and valid caption logits within 1e-4, tokens exact
GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def run(ctx: Context, report: Report) -> None:
    report.run("equivalence", "mamba_ssm_kernel", lambda c: kernel_status(ctx, c))
    for precision in ("fp32", "bf16"):
        report.run("equivalence", f"selective_scan_{precision}", lambda c, p=precision: scan_check(ctx, c, p))
    for precision in ("fp32", "bf16"):
        report.run("equivalence", f"mamba_model_{precision}", lambda c, p=precision: mamba_model_check(ctx, c, p))
    report.run("equivalence", "mci_fixture", lambda c: mci_fixture_check(ctx, c))


def kernel_status(ctx: Context, c: Check) -> None:
    """Whether the kernel imports; without it the kernel comparisons below are skipped with the reason."""
    c.figures["mamba_ssm"] = ctx.mamba_reason
    if not ctx.cuda:
        c.skip(f"no CUDA (dry run); {ctx.mamba_reason}")
    elif not ctx.mamba_kernel:
        c.skip(ctx.mamba_reason)
    else:
        c.verdict(True)


# -- selective scan --------------------------------------------------------------------------------


def scan_inputs(ctx: Context, precision: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random scan operands in mamba-ssm's layout; sequence operands in the tested dtype, A/D/bias fp32."""
    bt, d, length, n = ctx.sizes.scan
    g = torch.Generator().manual_seed(seed)
    dt = torch.bfloat16 if precision == "bf16" else torch.float32

    def r(*shape: int, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale + shift

    t = {
        "u": r(bt, d, length).to(dt), "delta": r(bt, d, length, scale=0.5).to(dt),
        "A": -torch.exp(r(d, n, scale=0.5)), "B": r(bt, n, length).to(dt), "C": r(bt, n, length).to(dt),
        "D": r(d), "z": r(bt, d, length).to(dt), "delta_bias": r(d, scale=0.5, shift=-3.0),  # Δ ~ 0.05
    }
    return {k: v.to(ctx.device).requires_grad_(True) for k, v in t.items()}


def _scan_with_grads(fn: Callable[..., torch.Tensor], inputs: dict[str, torch.Tensor], cast: torch.dtype | None,
                     weight: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Output and input gradients of `sum(fn(inputs) * weight)`; `cast` runs fn on converted leaves."""
    leaves = {k: (v.detach().to(cast) if cast else v.detach().clone()).requires_grad_(True)
              for k, v in inputs.items()}
    out = fn(**leaves, delta_softplus=True)
    (out.float() * weight).sum().backward()
    return out.detach(), {k: v.grad.detach() for k, v in leaves.items()}


def reference_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor, z: torch.Tensor, delta_bias: torch.Tensor, delta_softplus: bool) -> torch.Tensor:
    """The S6 recurrence one time step at a time (shapes as in selective_scan_torch), in the inputs'
    dtype: the dry run's independent stand-in for the kernel."""
    delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = torch.nn.functional.softplus(delta)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])  # [Bt, D, N]
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(delta[..., t, None] * A) * h + (delta[..., t] * u[..., t])[..., None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, -1) + u * D[:, None]
    return y * torch.nn.functional.silu(z)


def scan_check(ctx: Context, c: Check, precision: str) -> None:
    from changeagent.models.necks.selective_scan import selective_scan

    tol = SCAN_TOL[precision]
    c.headline = ("forward_rel_err", "grad_worst_rel_err", "tol_forward", "tol_grad")
    c.figures.update(shape_Bt_D_L_N=list(ctx.sizes.scan), tol_forward=tol["forward"], tol_grad=tol["grad"])
    if ctx.cuda and not ctx.mamba_kernel:
        c.skip(ctx.mamba_reason)
        return
    inputs = scan_inputs(ctx, precision)
    bt, d, length, _ = ctx.sizes.scan
    weight = torch.randn(bt, d, length, generator=torch.Generator().manual_seed(1)).to(ctx.device)
    with exact_fp32():
        ref_out, ref_grads = _scan_with_grads(lambda **kw: selective_scan(**kw, backend="torch"), inputs, None, weight)
        if ctx.cuda:
            c.note = "mamba-ssm selective_scan_fn vs changeagent's PyTorch scan, same inputs"
            out, grads = _scan_with_grads(lambda **kw: selective_scan(**kw, backend="kernel"), inputs, None, weight)
        else:  # dry run: the kernel's stand-in is the recurrence written out step by step in float64
            c.note = "dry run: PyTorch scan vs a step-by-step float64 recurrence (no kernel without CUDA)"
            out, grads = _scan_with_grads(reference_scan, inputs, torch.float64, weight)
    c.figures["forward_rel_err"] = rel_err(out, ref_out)
    for k in GRAD_NAMES:
        c.figures[f"grad_{k}_rel_err"] = rel_err(grads[k], ref_grads[k])
    worst_grad = max(c.figures[f"grad_{k}_rel_err"] for k in GRAD_NAMES)
    c.figures["grad_worst_rel_err"] = worst_grad
    c.verdict(c.figures["forward_rel_err"] <= tol["forward"] and worst_grad <= tol["grad"])


# -- the mamba model with and without the kernel -----------------------------------------------------


def _set_backend(model: torch.nn.Module, backend: str) -> None:
    from changeagent.models.necks.mamba import Mamba

    mixers = [m for m in model.modules() if isinstance(m, Mamba)]
    if not mixers:
        raise RuntimeError("the mamba model config built no Mamba mixers")
    for m in mixers:
        m.backend = backend


def _outputs(model: torch.nn.Module, image: torch.Tensor, captions: torch.Tensor, names: list[str],
             ctx: Context, precision: str) -> dict[str, torch.Tensor]:
    with torch.no_grad(), autocast(ctx, precision):
        out = model(image, captions, names)
        tokens = model.predict(image, names, max_len=ctx.sizes.decode_len + 2)["tokens"]
    flat = {"change": out["change"], "caption": out["caption"], "tokens": tokens}
    flat.update({f"mask_{k}": v for k, v in out["masks"].items()})
    return flat


def mamba_model_check(ctx: Context, c: Check, precision: str) -> None:
    from changeagent.data.constants import DATASETS, END, START
    from changeagent.models import create_model

    tol = MODEL_TOL[precision]
    c.figures["tol"] = tol
    if ctx.cuda and not ctx.mamba_kernel:
        c.skip(ctx.mamba_reason)
        return
    torch.manual_seed(0)
    vocab_size, size, b = 64, ctx.sizes.image, ctx.sizes.equiv_batch
    model = create_model(ctx.model_config("mamba"), vocab_size).to(ctx.device).eval()
    g = torch.Generator().manual_seed(0)
    image = torch.randn(b, 2, 3, size, size, generator=g).to(ctx.device)
    captions = torch.randint(4, vocab_size, (b, 12), generator=g)
    captions[:, 0], captions[:, -1] = START, END
    captions = captions.to(ctx.device)
    names = [DATASETS[i % len(DATASETS)] for i in range(b)]
    with exact_fp32():
        _set_backend(model, "torch")
        ref = _outputs(model, image, captions, names, ctx, precision)
        if ctx.cuda:
            c.note = "same weights and inputs; neck scan on the mamba-ssm kernel vs the PyTorch scan"
            _set_backend(model, "kernel")
            got = _outputs(model, image, captions, names, ctx, precision)
        else:
            c.note = "dry run: model vs a float64 copy of it (no kernel without CUDA)"
            ref64 = copy.deepcopy(model).double()
            got = ref
            ref = _outputs(ref64, image.double(), captions, names, ctx, "fp32")
    errs = {f"{k}_rel_err": rel_err(got[k], ref[k]) for k in got if k != "tokens"}
    c.figures.update(errs)
    c.figures["greedy_tokens_equal"] = bool(torch.equal(got["tokens"], ref["tokens"]))  # informative: ties
    c.verdict(max(errs.values()) <= tol)


# -- faithful MCI on the shared fixture ------------------------------------------------------------------


def mci_fixture_check(ctx: Context, c: Check) -> None:
    c.figures.update(tol=MCI_TOL, fixture=str(ctx.fixture))
    if importlib.util.find_spec("changeagent.models.mci") is None:
        c.skip("changeagent.models.mci not available")
        return
    if not (ctx.fixture / "reference.json").is_file():
        c.skip(f"no MCI fixture at {ctx.fixture} (--fixture DIR)")
        return
    if not ctx.vocab.is_file():
        c.skip(f"no reference vocabulary at {ctx.vocab} (--vocab FILE)")
        return
    from changeagent.models.mci.fixture import build_reference_checkpoint, compare_to_fixture

    work = ctx.work / "mci_fixture"
    work.mkdir(parents=True, exist_ok=True)
    pth, model_dir = work / "mci_reference.pth", work / "mci_converted"
    build_reference_checkpoint(ctx.fixture / "reference.json", pth)
    convert(pth, ctx.vocab, model_dir)
    pth.unlink()  # ~0.5 GB
    devices = ["cuda", "cpu"] if ctx.cuda else ["cpu"]
    c.note = "built from the fill rule, converted by the CLI, compared on " + " and ".join(devices)
    c.headline = tuple(f"{d}_{k}" for d in devices for k in ("mask_max_abs_err", "caption_max_abs_err", "greedy_equal"))
    ok = True
    for dev in devices:
        with exact_fp32():
            res = compare_to_fixture(model_dir, ctx.fixture, device=dev)
        c.figures[dev] = res
        c.figures.update({f"{dev}_{k}": v for k, v in res.items() if isinstance(v, (bool, int, float))})
        ok = ok and _fixture_ok(res)
    c.verdict(ok)


def convert(pth: Path, vocab: Path, out: Path) -> None:
    """`changeagent convert change-agent PTH --vocab VOCAB -o OUT`, the users' command."""
    from changeagent.cli import main as cli

    code = cli(["convert", "change-agent", str(pth), "--vocab", str(vocab), "-o", str(out)])
    if code != 0:
        raise RuntimeError(f"changeagent convert change-agent exited with {code}")


def _fixture_ok(res: dict[str, Any]) -> bool:
    """Every error figure (keys with 'err' or 'max') within MCI_TOL and every flag true."""
    flags = [v for v in res.values() if isinstance(v, bool)]
    errs = [float(v) for k, v in res.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and ("err" in k or "max" in k)]
    if not flags or not errs:
        raise RuntimeError(f"compare_to_fixture returned no error figures or flags: {res}")
    return all(flags) and all(e <= MCI_TOL for e in errs)
