"""Training-step and inference timing of a model config on random tensors (`changeagent bench`)."""

from __future__ import annotations

import functools
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from changeagent.data.constants import END, START
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


def random_inputs(model: Any, batch: int, length: int, gen: torch.Generator, dev: torch.device) -> dict[str, Any]:
    """Random values of every input the model's heads read: token ids `<START> w... <END>` int64
    [B, length] (captions, questions, ...), unless a head makes its own (`example_inputs`)."""
    out: dict[str, Any] = {}
    for task in model.tasks:
        head = model.head(task)
        make = getattr(head, "example_inputs", None)
        if callable(make):
            out.update(make(batch, length, gen))
            continue
        for name in head.inputs:
            ids = torch.randint(4, model.vocab_size, (batch, length), generator=gen)
            ids[:, 0], ids[:, -1] = START, END
            out.setdefault(name, ids)
    return {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in out.items()}  # texts stay texts


def predict_inputs(model: Any, batch: int, length: int, gen: torch.Generator, dev: torch.device) -> dict[str, Any]:
    """The random inputs `model.predict` reads at inference (questions, expressions): `random_inputs`
    without the teacher-forced captions, which only training reads."""
    return {k: v for k, v in random_inputs(model, batch, length, gen, dev).items()
            if any(k in (*model.head(t).inputs, *getattr(model.head(t), "extra_inputs", ())) for t in model.tasks)
            and k not in ("captions", "retrieval_captions")}


def bench_predict(model: Any, image: torch.Tensor, names: list[str], inputs: dict[str, Any], decode_len: int,
                  tasks: list[str] | None = None) -> dict[str, Any]:
    """The call the benchmark times: the heads of `tasks` (None: every head) from one encoder pass of
    image [B, 2, C, H, W], greedy captions of exactly `decode_len` tokens (tests/models compare it)."""
    with torch.inference_mode():
        return dict(model.predict(image, names, tasks=tasks, inputs=inputs, max_len=decode_len, min_len=decode_len))


def plain_loss(out: Any) -> torch.Tensor:
    """A stand-in for the task losses (changeagent.tasks): the mean square of every float output of
    every head, so the backward pass reaches each head as a real training step does."""
    tensors = [t for t in _tensors(out) if t.is_floating_point() and t.requires_grad]
    return sum((t.float().square().mean() for t in tensors), torch.zeros(()))


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def run_benchmark(cfg: dict[str, Any], vocab_size: int = 468, batch: int = 8, size: int = 256, steps: int = 5,
                  warmup: int = 2, device: str = "cpu", threads: int = 2, caption_len: int = 25,
                  decode_len: int = 12, infer_batches: list[int] | tuple[int, ...] = (1, 16),
                  seed: int = 0, train: bool = True, per_task: bool = True,
                  compile: bool = False) -> dict[str, Any]:
    """Train-step and predict timings per pair; see `changeagent bench --help`.

    Inference is timed with every head (`infer_s_per_pair_b<B>`) and, with `per_task`, with each
    task's head alone from its own encoder pass (`tasks_s_per_pair_b<B>`: {task: s}), iterating
    `model.tasks` (whatever heads the config builds). `compile`: `torch.compile` every part first."""
    if any(b < 1 for b in infer_batches):
        raise ChangeAgentError(f"inference batch sizes must be positive, got {list(infer_batches)}")
    dev = resolve_device(device)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = create_model(cfg, vocab_size).to(dev)
    if compile:
        from changeagent.models.change_captioner import compile_model

        compile_model(model)
    channels = model.config["in_channels"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    image = torch.randn(batch, 2, channels, size, size, generator=gen).to(dev)
    inputs = random_inputs(model, batch, caption_len, gen, dev)
    names = [model.datasets[i % len(model.datasets)] for i in range(batch)]  # every dataset's rows get used

    def train_step() -> None:
        out = model(image, dataset=names, **inputs)
        loss = plain_loss(out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    result: dict[str, Any] = {
        "model": cfg.get("name"), "params": model.param_counts(), "batch": batch, "size": size,
        "steps": steps, "warmup": warmup, "device": str(dev), "threads": threads,
        "caption_len": caption_len, "decode_len": decode_len, "torch": torch.__version__,
        "tasks": list(model.tasks), "compile": compile, "channels_last": bool(model.config.get("channels_last", True)),
    }
    if train:
        model.train()
        train_s = _timed(train_step, steps, warmup, dev, "train")
        opt.state.clear()  # free the AdamW moments before inference
        result.update(train_s_per_step=train_s, train_s_per_pair=train_s / batch)
    model.eval()
    for b in infer_batches:
        pairs = torch.randn(b, 2, channels, size, size, generator=gen).to(dev)
        ids = [model.datasets[i % len(model.datasets)] for i in range(b)]

        extra = predict_inputs(model, b, caption_len, gen, dev)

        def infer(image: torch.Tensor = pairs, names: list[str] = ids, tasks: list[str] | None = None,
                  extra: dict[str, Any] = extra) -> None:
            bench_predict(model, image, names, extra, decode_len, tasks)

        s = _timed(infer, steps, max(1, warmup // 2), dev, f"predict b{b}")
        result[f"infer_s_per_step_b{b}"] = s
        result[f"infer_s_per_pair_b{b}"] = s / b
        if per_task:
            result[f"tasks_s_per_pair_b{b}"] = {
                t: _timed(functools.partial(infer, tasks=[t]), steps, max(1, warmup // 2), dev, f"{t} b{b}") / b
                for t in model.tasks}
    result["peak_rss_mb"] = _peak_rss_mb()
    return result
