"""Section 3: train and inference pairs/s per model and precision, peak GPU memory, the largest 256-px
training batch that fits, and scene-mode MP/s on a generated GeoTIFF pair. Figures only: nothing
here fails the run except a crash, which is reported as the check's error."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from gpucheck.context import Context, autocast
from gpucheck.report import Check, Report
from gpucheck.sizes import PRECISIONS

VOCAB = 468  # the reference vocabulary's size: the caption head's real width
CAPTION_LEN = 25


def run(ctx: Context, report: Report) -> None:
    for model in ctx.sizes.models:
        for precision in PRECISIONS if model in ctx.sizes.precision_models else ("fp32",):
            report.run("throughput", f"{model}_{precision}", lambda c, m=model, p=precision: speed_check(ctx, c, m, p))
    for model in (m for m in ctx.sizes.models if m in ctx.sizes.max_batch_models):
        report.run("throughput", f"{model}_max_batch_bf16", lambda c, m=model: max_batch_check(ctx, c, m, "bf16"))
    report.run("throughput", "scene_fast", lambda c: scene_check(ctx, c))


OOM_TEXT = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED",
            "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE")  # cuBLAS/cuDNN report a failed allocation in their own words


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and any(t in str(e) for t in OOM_TEXT))


def build(ctx: Context, name: str) -> torch.nn.Module:
    """The model as the engine trains it: configs/model/NAME.yaml, on the device, NHWC weights when its
    `channels_last` says so (engine.model_init.build_model)."""
    from changeagent.models import create_model

    torch.manual_seed(0)
    model = create_model(ctx.model_config(name), VOCAB).to(ctx.device)
    return model.to(memory_format=torch.channels_last) if model.config.get("channels_last") else model


def device_batch(ctx: Context, b: int) -> dict[str, Any]:
    """Random tensors of the documented batch shapes, made on the device (large batches stay cheap)."""
    from changeagent.data.constants import END, NUM_CLASSES, START

    s, dev = ctx.sizes.image, ctx.device
    caps = torch.randint(4, VOCAB, (b, CAPTION_LEN), device=dev)
    caps[:, 0], caps[:, -1] = START, END
    return {"image": torch.randn(b, 2, 3, s, s, device=dev),
            "change": torch.randint(0, 2, (b, s, s), device=dev),
            # one target per semantic head of the default model (models.bench.plain_loss: [B, maps, H, W])
            "targets": {"levir_mci": torch.randint(0, NUM_CLASSES["levir_mci"], (b, 1, s, s), device=dev),
                        "second_cc": torch.randint(0, NUM_CLASSES["second_cc"], (b, 2, s, s), device=dev)},
            "captions": caps, "dataset": ["levir_mci"] * b}  # the head every model has (mci: the only one)


def train_step_fn(ctx: Context, model: torch.nn.Module, opt: torch.optim.Optimizer, scaler: Any,
                  data: dict[str, Any], precision: str) -> Callable[[], None]:
    from changeagent.models.bench import plain_loss

    def step() -> None:
        with autocast(ctx, precision):
            loss = plain_loss(model(data["image"], data["captions"], data["dataset"]), data)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def timed(ctx: Context, fn: Callable[[], None]) -> float:
    """Median seconds of one call after warm-up (CUDA synchronised around each call)."""
    times = []
    for i in range(ctx.sizes.bench_warmup + ctx.sizes.bench_steps):
        ctx.sync()
        t0 = time.perf_counter()
        fn()
        ctx.sync()
        if i >= ctx.sizes.bench_warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_reset(ctx: Context) -> None:
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)


def _peak(ctx: Context) -> float | None:
    return round(torch.cuda.max_memory_allocated(ctx.device) / 2**30, 3) if ctx.cuda else None


def _free(ctx: Context) -> None:
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()


def speed_check(ctx: Context, c: Check, name: str, precision: str) -> None:
    s = ctx.sizes
    if ctx.cuda and precision == "bf16" and not torch.cuda.is_bf16_supported():
        c.skip("this GPU has no bf16 support")
        return
    model = build(ctx, name).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision == "fp16")
    c.headline = ("train_pairs_per_s", "train_peak_mem_gib",
                  *(f"infer_pairs_per_s_b{b}" for b in s.infer_batches), f"infer_peak_mem_gib_b{s.infer_batches[-1]}")
    c.figures.update(image=s.image, train_batch=s.bench_batch, decode_len=s.decode_len,
                     params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2))
    _peak_reset(ctx)
    sec = timed(ctx, train_step_fn(ctx, model, opt, scaler, device_batch(ctx, s.bench_batch), precision))
    c.figures.update(train_pairs_per_s=s.bench_batch / sec, train_peak_mem_gib=_peak(ctx))
    if name == "mamba":
        from changeagent.models.necks.selective_scan import resolve_backend

        c.figures["mamba_scan"] = resolve_backend("auto", ctx.device)  # kernel, or the PyTorch scan
    del opt, scaler
    model.zero_grad(set_to_none=True)
    _free(ctx)
    model.eval()
    for b in s.infer_batches:
        image = torch.randn(b, 2, 3, s.image, s.image, device=ctx.device)
        names = ["levir_mci"] * b

        def infer(image: torch.Tensor = image, names: list[str] = names) -> None:
            with torch.inference_mode(), autocast(ctx, precision):
                model.predict(image, names, max_len=s.decode_len, min_len=s.decode_len)

        _peak_reset(ctx)
        try:
            c.figures[f"infer_pairs_per_s_b{b}"] = b / timed(ctx, infer)
            c.figures[f"infer_peak_mem_gib_b{b}"] = _peak(ctx)
        except RuntimeError as e:
            if not is_oom(e):
                raise
            c.figures[f"infer_pairs_per_s_b{b}"] = "out of memory"
        del image
        _free(ctx)
    c.note = f"random tensors, {precision}; inference decodes exactly {s.decode_len} tokens per pair"


def max_batch_check(ctx: Context, c: Check, name: str, precision: str) -> None:
    """Largest training batch at the tile size whose step (forward, backward, AdamW) fits in memory:
    doubling from 8, then bisection to within 1/8; out-of-memory errors are caught and memory freed."""
    s = ctx.sizes
    if ctx.cuda and precision == "bf16" and not torch.cuda.is_bf16_supported():
        precision = "fp32"
    model = build(ctx, name).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision == "fp16")
    probes: dict[int, bool] = {}
    errors: dict[int, str] = {}

    def fits(b: int) -> bool:
        ok = True
        try:
            train_step_fn(ctx, model, opt, scaler, device_batch(ctx, b), precision)()
            ctx.sync()
        except RuntimeError as e:  # out of memory, or a kernel's size limit (> 2^31 elements) at huge batches
            ok = False
            if not is_oom(e):
                errors[b] = str(e).splitlines()[0][:300]
        opt.zero_grad(set_to_none=True)
        _free(ctx)
        probes[b] = ok
        return ok

    lo, b = 0, min(8, s.max_batch_cap)
    while b <= s.max_batch_cap and fits(b):
        lo, b = b, b * 2
    hi = b if b <= s.max_batch_cap else None  # None: the cap fits
    while hi is not None and hi - lo > max(1, lo // 8):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    c.headline = ("max_batch", "first_oom", "peak_mem_gib_at_max", "probes")
    c.figures.update(precision=precision, image=s.image, max_batch=lo, first_oom=hi, cap=s.max_batch_cap,
                     probes=len(probes), reached_cap=hi is None, non_oom_errors=errors)
    if not ctx.cuda:
        c.note = "dry run: the CPU never runs out of memory here, so the search stops at the cap"
    if lo:
        _peak_reset(ctx)
        fits(lo)
        c.figures["peak_mem_gib_at_max"] = _peak(ctx)


def scene_check(ctx: Context, c: Check) -> None:
    """`changeagent predict --scene`'s code (Predictor + predict_scene) on a generated S x S GeoTIFF pair."""
    from changeagent.data.registry import get_spec
    from changeagent.data.vocab import Vocabulary
    from changeagent.inference.bench import make_scene
    from changeagent.inference.predictor import Predictor
    from changeagent.inference.scene import predict_scene
    from changeagent.models import create_model, save_pretrained

    s = ctx.sizes
    vocab = Vocabulary.load(ctx.vocab) if ctx.vocab.is_file() else \
        Vocabulary.build([["a", "house", "is", "built", "the", "scene", "is", "the", "same"]], min_count=0)
    torch.manual_seed(0)
    model = create_model(ctx.model_config("fast"), len(vocab))
    ckpt = ctx.work / "scene_model"
    # an untrained stand-in for a model trained on its heads' datasets, recorded as such (predict needs it)
    save_pretrained(model, ckpt, vocab=vocab, datasets=model.datasets,
                    norm={n: get_spec(n).norm for n in model.datasets})
    a, b = ctx.work / "scene_a.tif", ctx.work / "scene_b.tif"
    t0 = time.perf_counter()
    make_scene(a, b, s.scene)
    c.headline = ("size", "windows", "megapixels_per_s", "predict_s", "peak_mem_gib")
    c.figures.update(size=s.scene, megapixels=s.scene**2 / 1e6, generate_s=round(time.perf_counter() - t0, 2),
                     batch=s.scene_batch)
    pred = Predictor.from_pretrained(ckpt, device=str(ctx.device), batch_size=s.scene_batch)
    _peak_reset(ctx)
    rec = predict_scene(pred, str(a), str(b), ctx.work / "scene_out", progress=False)
    c.figures.update(windows=rec.get("windows"), megapixels_per_s=rec["megapixels_per_s"],
                     predict_s=rec["timings"]["total_s"], timings=rec["timings"], peak_mem_gib=_peak(ctx))
    c.note = ("fast model with untrained weights: every window's caption runs to the 41-token cap "
              "(a trained model stops after ~8-11 tokens)")
    for p in (a, b):
        p.unlink()
