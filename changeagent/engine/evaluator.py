"""Validation/test evaluation: every task of the model on every dataset it applies to, exact under DDP.

Per dataset, the tasks enabled for it (`TaskSpec.enabled_for`) each keep a metric accumulator
(`TaskSpec.metric`: e.g. the mask task's confusion matrices, summed by the torchmetrics states; the
caption task's generated captions, gathered to rank 0 and scored there once, one METEOR Java process
per evaluation); one `model.predict` call per batch runs exactly those tasks' heads. Every rank
predicts its shard (no padding, see `ShardSampler`); rank 0's numbers are broadcast so every rank
takes the same decisions. `metrics[<dataset>]` holds every task's keys plus `n_pairs`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from changeagent.data.registry import get_spec
from changeagent.data.spec import DatasetSpec
from changeagent.engine.batches import to_device
from changeagent.engine.device import autocast_dtype
from changeagent.engine.distributed import DistInfo, all_gather_objects, broadcast_object
from changeagent.models.decode_cfg import DECODE
from changeagent.tasks.registry import get_task
from changeagent.tasks.spec import EvalContext, TaskContext


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, ...: each item exactly once over all ranks (unlike
    DistributedSampler, which pads with duplicates to equal lengths)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.rank, self.world = n, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


@dataclass
class EvalOptions:
    method: str = DECODE.method
    beam_size: int = DECODE.beam_size
    length_penalty: float = DECODE.length_penalty
    max_len: int = DECODE.max_len
    meteor: bool = True
    caption_level: str = "word"  # word | id (vocabulary-id strings, like the reference code)
    amp: str = "none"
    vis_pairs: int = 0  # first N pairs of each dataset kept as visual records (rank 0's shard)
    predictions_dir: Path | None = None  # write mask PNGs and captions.json per dataset
    progress: bool = True
    norm: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # {id: {"mean", "std"}} its data's
    specs: dict[str, DatasetSpec] = field(default_factory=dict)  # bound specs (custom classes); else registry

    def spec(self, dataset: str) -> DatasetSpec:
        return self.specs.get(dataset) or get_spec(dataset)

    @classmethod
    def from_config(cls, cfg: Any, **kw: Any) -> EvalOptions:
        """Options from a run config's `eval`, `train.amp` and `data.<id>.mean/std`; `kw` overrides."""
        ev = cfg.eval
        norm = {n: {"mean": list(cfg.data[n].mean), "std": list(cfg.data[n].std)} for n in cfg.data.datasets}
        base = dict(method=ev.method, beam_size=ev.beam_size, length_penalty=ev.length_penalty,
                    max_len=ev.max_len, meteor=ev.meteor, caption_level=ev.caption_level, amp=cfg.train.amp,
                    norm=norm)
        return cls(**{**base, **kw})

    def record(self) -> dict[str, Any]:
        """The options that shape the numbers, written next to them (metrics.json `eval`)."""
        return {"method": self.method, "beam_size": self.beam_size, "length_penalty": self.length_penalty,
                "max_len": self.max_len, "caption_level": self.caption_level, "meteor": self.meteor,
                "norm": self.norm}


class DistSync:
    """`tasks.spec.Sync` over the engine's process group (identities in one process)."""

    def __init__(self, info: DistInfo) -> None:
        self.info, self.is_main = info, info.is_main

    def gather(self, obj: Any) -> list[Any]:
        return all_gather_objects(obj, self.info)

    def broadcast(self, obj: Any) -> Any:
        return broadcast_object(obj, self.info)


def _denorm(img: torch.Tensor, mean: list[float], std: list[float]) -> np.ndarray:
    """float [C, H, W] normalised -> uint8 [H, W, 3] (first three channels)."""
    x = img[:3].float().cpu().numpy().transpose(1, 2, 0)
    x = x * np.asarray(std[:3], np.float32) + np.asarray(mean[:3], np.float32)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


@torch.no_grad()
def evaluate(model: Any, loaders: dict[str, DataLoader], vocab: Any, info: DistInfo,
             opts: EvalOptions) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Returns ({dataset: metrics}, {dataset: visual records}) on every rank (records on rank 0)."""
    net = getattr(model, "module", model)  # the model under a wrapper (EMA's AveragedModel)
    was_training = model.training
    model.eval()
    results: dict[str, dict[str, Any]] = {}
    visuals: dict[str, list[dict[str, Any]]] = {}
    amp_dtype = autocast_dtype(opts.amp, info.device, info.is_main)
    sync = DistSync(info)
    decode = {"method": opts.method, "beam_size": opts.beam_size, "max_len": opts.max_len,
              "length_penalty": opts.length_penalty}
    for dataset, loader in loaders.items():
        spec = opts.spec(dataset)
        tasks = [t for t in net.tasks if get_task(t).enabled_for(spec)]
        # a dataset the model has no heads for (eval checked that its shared heads serve it: e.g. the
        # change head of binary masks): no dataset given, so no dataset-specific part is looked up
        known = dataset in getattr(net, "datasets", [dataset])
        folder = opts.predictions_dir / dataset if opts.predictions_dir is not None else None
        ctx = EvalContext(dataset=spec, vocab=vocab, options=opts, device=info.device, sync=sync,
                          predictions_dir=folder)
        data_ctx = TaskContext(vocab=vocab, max_len=opts.max_len, train=False, dataset=spec)
        metrics = {t: m for t in tasks if (m := get_task(t).metric(ctx)) is not None}
        vis: list[dict[str, Any]] = []
        n_local = 0
        bar = tqdm(loader, desc=f"eval {dataset}", disable=not (opts.progress and info.is_main), leave=False)
        for batch in bar:
            image = batch["image"].to(info.device, non_blocking=True)
            n_local += image.shape[0]
            inputs: dict[str, Any] = {}
            for t in tasks:
                inputs.update(get_task(t).eval_inputs(batch, data_ctx))
            autocast = torch.autocast(info.device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
            with autocast:
                pred = model.predict(image, dataset=list(batch["dataset"]) if known else None, tasks=tasks,
                                     inputs=to_device(inputs, info.device), **decode)
            for metric in metrics.values():
                metric.update(pred, batch)
            for i in range(len(batch["name"])):
                if len(vis) >= opts.vis_pairs or not info.is_main:
                    break
                vis.append(_visual(batch, i, pred, tasks, ctx))
        # every rank computes (the collectives of the accumulators), rank 0's numbers are broadcast
        scores: dict[str, Any] = {}
        for metric in metrics.values():
            scores.update(metric.compute())
        scores["n_pairs"] = sum(all_gather_objects(n_local, info))
        results[dataset] = broadcast_object(scores if info.is_main else None, info)
        visuals[dataset] = vis
    if was_training:
        model.train()
    return results, visuals


def _visual(batch: dict[str, Any], i: int, pred: dict[str, Any], tasks: list[str], ctx: EvalContext) -> dict[str, Any]:
    """One wandb record: the images uint8 [H, W, 3] and every task's fields (`TaskSpec.visual`)."""
    image, name = batch["image"][i], batch["dataset"][i]
    norm = ctx.options.norm.get(name) or ctx.options.spec(name).norm  # the statistics its images were read with
    record: dict[str, Any] = {"name": batch["name"][i], "a": _denorm(image[0], norm["mean"], norm["std"]),
                              "b": _denorm(image[1], norm["mean"], norm["std"])}
    for t in tasks:
        record.update(get_task(t).visual(pred, batch, i, ctx))
    return record
