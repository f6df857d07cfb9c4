"""Training-step and inference timing of a model config on random tensors (`changeagent bench`)."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from changeagent.data.constants import END, NULL, START
from changeagent.devices import resolve_device
from changeagent.errors import ChangeAgentError
from changeagent.models.factory import create_model


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _timed(fn: Callable[[], None], steps: int, warmup: int, dev: torch.device, desc: str) -> float:
    """Median wall time of `fn` over `steps` calls after `warmup` untimed calls (seconds)."""
    times = []
    for i in tqdm(range(warmup + steps), desc=desc, leave=False, file=sys.stderr):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def random_batch(batch: int, size: int, channels: int, vocab_size: int, caption_len: int,
                 dev: torch.device, gen: torch.Generator, heads: dict[str, tuple[int, int]],
                 datasets: list[str]) -> dict[str, Any]:
    """Tensors of the documented batch shapes, one random target per semantic head (`heads`:
    {dataset: (maps, classes)}), datasets alternating so every head gets a loss."""
    captions = torch.randint(4, vocab_size, (batch, caption_len), generator=gen)
    captions[:, 0], captions[:, -1] = START, END
    return {
        "image": torch.randn(batch, 2, channels, size, size, generator=gen).to(dev),
        "change": torch.randint(0, 2, (batch, size, size), generator=gen).to(dev),
        "targets": {d: torch.randint(0, k, (batch, maps, size, size), generator=gen).to(dev)
                    for d, (maps, k) in heads.items()},
        "captions": captions.to(dev),
        "dataset": [datasets[i % len(datasets)] for i in range(batch)],
    }


def plain_loss(out: dict[str, Any], b: dict[str, Any]) -> torch.Tensor:
    """Unweighted sum of plain cross-entropies (the real losses live in changeagent.losses)."""
    loss = F.binary_cross_entropy_with_logits(out["change"][:, 0], b["change"].float())
    for name, logits in out["masks"].items():
        target = b["targets"][name]  # [B, maps, H, W]
        lg = logits if logits.dim() == 5 else logits[:, None]  # [B, maps, K, H, W]
        loss = loss + F.cross_entropy(lg.flatten(0, 1), target.flatten(0, 1))
    logits = out["caption"]
    return loss + F.cross_entropy(logits.flatten(0, 1).float(), b["captions"][:, 1:].flatten(), ignore_index=NULL)


def run_benchmark(cfg: dict[str, Any], vocab_size: int = 468, batch: int = 8, size: int = 256, steps: int = 5,
                  warmup: int = 2, device: str = "cpu", threads: int = 2, caption_len: int = 25,
                  decode_len: int = 12, infer_batches: list[int] | tuple[int, ...] = (1, 16),
                  seed: int = 0, train: bool = True) -> dict[str, Any]:
    """Train-step and predict timings per pair; see `changeagent bench --help`."""
    if any(b < 1 for b in infer_batches):
        raise ChangeAgentError(f"inference batch sizes must be positive, got {list(infer_batches)}")
    dev = resolve_device(device)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = create_model(cfg, vocab_size).to(dev)
    channels = model.config["in_channels"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = random_batch(batch, size, channels, vocab_size, caption_len, dev, gen,
                        model.mask_decoder.head_shapes, model.datasets)

    def train_step() -> None:
        out = model(data["image"], data["captions"], data["dataset"])
        loss = plain_loss(out, data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    result: dict[str, Any] = {
        "model": cfg.get("name"), "params": model.param_counts(), "batch": batch, "size": size,
        "steps": steps, "warmup": warmup, "device": str(dev), "threads": threads,
        "caption_len": caption_len, "decode_len": decode_len, "torch": torch.__version__,
    }
    if train:
        model.train()
        train_s = _timed(train_step, steps, warmup, dev, "train")
        opt.state.clear()  # free the AdamW moments before inference
        result.update(train_s_per_step=train_s, train_s_per_pair=train_s / batch)
    model.eval()
    for b in infer_batches:
        image = torch.randn(b, 2, channels, size, size, generator=gen).to(dev)
        names = [model.datasets[i % len(model.datasets)] for i in range(b)]

        def infer(image: torch.Tensor = image, names: list[str] = names) -> None:
            with torch.inference_mode():
                model.predict(image, names, max_len=decode_len, min_len=decode_len)

        s = _timed(infer, steps, max(1, warmup // 2), dev, f"predict b{b}")
        result[f"infer_s_per_step_b{b}"] = s
        result[f"infer_s_per_pair_b{b}"] = s / b
    result["peak_rss_mb"] = _peak_rss_mb()
    return result
