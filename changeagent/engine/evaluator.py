"""Validation/test evaluation: masks and captions together, per dataset, exact under DDP.

Every rank predicts its shard (no padding, see `ShardSampler`); confusion matrices are summed by the
torchmetrics states; captions are gathered to rank 0, which scores them once per dataset (one METEOR
Java process per evaluation) and broadcasts the numbers so every rank takes the same decisions.
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

from changeagent.data.constants import IGNORE_INDEX, LEVIR_CLASSES, NUM_CLASSES, SECOND_CLASSES
from changeagent.engine.distributed import DistInfo, all_gather_objects, broadcast_object
from changeagent.metrics import SegmentationMetrics, SemanticChangeMetrics


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
    method: str = "greedy"
    beam_size: int = 3
    max_len: int = 41
    meteor: bool = True
    id_level: bool = False
    amp: str = "none"
    vis_pairs: int = 0  # first N pairs of each dataset kept as visual records (rank 0's shard)
    predictions_dir: Path | None = None  # write mask PNGs and captions.json per dataset
    progress: bool = True
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    @classmethod
    def from_config(cls, cfg: Any, **kw: Any) -> EvalOptions:
        """Options from a run config's `eval`, `train.amp` and `data.mean/std`; `kw` overrides."""
        ev = cfg.eval
        base = dict(method=ev.method, beam_size=ev.beam_size, max_len=ev.max_len, meteor=ev.meteor,
                    id_level=ev.id_level, amp=cfg.train.amp, mean=list(cfg.data.mean), std=list(cfg.data.std))
        return cls(**{**base, **kw})


def predicted_maps(pred: dict[str, Any], dataset: str) -> torch.Tensor:
    """Class maps from `model.predict` logits: LEVIR int64 [B, H, W]; SECOND int64 [B, 2, H, W]
    where a pixel is unchanged (0) unless the change head fires, else the argmax over classes 1..6."""
    logits = pred["masks"][dataset]
    if dataset == "levir_mci":
        return logits.argmax(1)
    changed = pred["change"][:, 0] > 0  # [B, H, W]
    land = logits[:, :, 1:].argmax(2) + 1  # [B, 2, H, W]
    return torch.where(changed[:, None], land, torch.zeros_like(land))


def _denorm(img: torch.Tensor, mean: list[float], std: list[float]) -> np.ndarray:
    """float [C, H, W] normalised -> uint8 [H, W, 3] (first three channels)."""
    x = img[:3].float().cpu().numpy().transpose(1, 2, 0)
    x = x * np.asarray(std[:3], np.float32) + np.asarray(mean[:3], np.float32)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


@torch.no_grad()
def evaluate(model: Any, loaders: dict[str, DataLoader], vocab: Any, info: DistInfo,
             opts: EvalOptions) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Returns ({dataset: metrics}, {dataset: visual records}) on every rank (records on rank 0)."""
    from changeagent.metrics import caption_report  # noqa: PLC0415  (heavy pycocoevalcap import)

    was_training = model.training
    model.eval()
    results: dict[str, dict[str, Any]] = {}
    visuals: dict[str, list[dict[str, Any]]] = {}
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(opts.amp)
    for dataset, loader in loaders.items():
        names = LEVIR_CLASSES if dataset == "levir_mci" else SECOND_CLASSES
        seg = SegmentationMetrics(NUM_CLASSES[dataset], class_names=names).to(info.device)
        scd = SemanticChangeMetrics().to(info.device) if dataset == "second_cc" else None
        captions: list[tuple[str, str, list[str], int]] = []
        vis: list[dict[str, Any]] = []
        bar = tqdm(loader, desc=f"eval {dataset}", disable=not (opts.progress and info.is_main), leave=False)
        for batch in bar:
            image = batch["image"].to(info.device, non_blocking=True)
            ctx = torch.autocast(info.device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
            with ctx:
                pred = model.predict(image, dataset=list(batch["dataset"]), method=opts.method,
                                     beam_size=opts.beam_size, max_len=opts.max_len)
            maps = predicted_maps(pred, dataset)
            if dataset == "levir_mci":
                target = batch["mask"].to(info.device)
                seg.update(maps, target)
            else:
                assert scd is not None
                target = batch["sem"].to(info.device)
                scd.update_stacked(maps, target)
                seg.update(maps.flatten(0, 1), target.flatten(0, 1))
            tokens = pred["tokens"].cpu().tolist()
            for i, name in enumerate(batch["name"]):
                hyp = vocab.decode(tokens[i])
                captions.append((name, hyp, list(batch["captions"][i]), int(batch["changeflag"][i])))
                if len(vis) < opts.vis_pairs and info.is_main:
                    vis.append(_visual(batch, i, maps[i], target[i], hyp, opts))
            if opts.predictions_dir is not None:
                _save_masks(opts.predictions_dir / dataset, batch["name"], maps.cpu(), dataset)
        # exact global confusion matrices (sum over ranks), computed on every rank
        scores = {k: v for k, v in seg.compute().items() if dataset == "levir_mci" or k.startswith("iou")}
        if scd is not None:
            scores.update(scd.compute())
        gathered = [c for part in all_gather_objects(captions, info) for c in part]
        if info.is_main:
            ids = [f"{dataset}/{name}" for name, *_ in gathered]
            if len(set(ids)) != len(ids):
                raise RuntimeError(f"evaluation saw duplicate pairs in {dataset}; the sampler must not pad")
            hyps = {i: c[1] for i, c in zip(ids, gathered)}
            refs = {i: c[2] for i, c in zip(ids, gathered)}
            flags = {i: c[3] for i, c in zip(ids, gathered)}
            report = caption_report(hyps, refs, flags, meteor=opts.meteor, id_level=opts.id_level,
                                    vocab=vocab if opts.id_level else None)
            scores.update(report["all"] or {})
            scores.update(change=report["change"], no_change=report["no_change"], counts=report["counts"],
                          no_change_accuracy=report["no_change_accuracy"])
            scores["n_pairs"] = len(ids)
            if opts.predictions_dir is not None:
                from changeagent.engine.checkpoint import atomic_write_json

                atomic_write_json(opts.predictions_dir / dataset / "captions.json",
                                  {c[0]: {"prediction": c[1], "references": c[2]} for c in gathered})
            _per_pair_scores(vis, refs_of={c[0]: c[2] for c in gathered})
        results[dataset] = broadcast_object(scores if info.is_main else None, info)
        visuals[dataset] = vis
    if was_training:
        model.train()
    return results, visuals


def _visual(batch: dict[str, Any], i: int, pred: torch.Tensor, target: torch.Tensor, hyp: str,
            opts: EvalOptions) -> dict[str, Any]:
    """One wandb record: images uint8 [H, W, 3], masks int [H, W] (SECOND: date B's land cover)."""
    image = batch["image"][i]
    p, t = pred.cpu().numpy(), target.cpu().numpy()
    if p.ndim == 3:  # SECOND: show the post-change land cover on image B
        p, t = p[1], t[1]
    valid = t != IGNORE_INDEX
    inter = np.logical_and(p > 0, t > 0)[valid].sum()
    union = np.logical_or(p > 0, t > 0)[valid].sum()
    return {
        "name": batch["name"][i], "a": _denorm(image[0], opts.mean, opts.std), "b": _denorm(image[1], opts.mean, opts.std),
        "pred": p.astype(np.uint8), "gt": t.astype(np.uint8), "hyp": hyp, "refs": list(batch["captions"][i]),
        "iou": float(inter / union) if union else 1.0,
    }


def _per_pair_scores(vis: list[dict[str, Any]], refs_of: dict[str, list[str]]) -> None:
    """Per-pair BLEU-4 and exact-match flags for the visual records (cheap: a handful of pairs)."""
    if not vis:
        return
    from pycocoevalcap.bleu.bleu import Bleu

    hyps = {r["name"]: [r["hyp"] or "<empty>"] for r in vis}
    refs = {r["name"]: refs_of[r["name"]] for r in vis}
    _, per = Bleu(4).compute_score(refs, hyps, verbose=0)
    for r, b4 in zip(vis, per[3]):
        r["bleu4"] = float(b4)
        r["match"] = r["hyp"] in r["refs"]


def _save_masks(folder: Path, names: list[str], maps: torch.Tensor, dataset: str) -> None:
    """Palette PNGs: LEVIR `<name>` (0 bg, 1 road, 2 building); SECOND `<stem>_A.png`, `<stem>_B.png`."""
    from PIL import Image

    from changeagent.engine.wandb_logger import _PALETTE, _SECOND_PALETTE

    folder.mkdir(parents=True, exist_ok=True)
    pal = (_SECOND_PALETTE if dataset == "second_cc" else _PALETTE).flatten().tolist()
    for name, m in zip(names, maps.numpy().astype(np.uint8)):
        stem = Path(name).stem
        items = [(f"{stem}.png", m)] if m.ndim == 2 else [(f"{stem}_A.png", m[0]), (f"{stem}_B.png", m[1])]
        for fname, arr in items:
            img = Image.fromarray(arr, mode="P")
            img.putpalette(pal)
            tmp = folder / f".{fname}.tmp"
            img.save(tmp, format="PNG")
            tmp.replace(folder / fname)
