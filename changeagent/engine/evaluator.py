"""Validation/test evaluation: masks and captions together, per dataset, exact under DDP.

Each dataset is scored with its own metrics, chosen by its registry spec (`DatasetSpec.metrics`,
`decoding`, `has_captions`): binary change (precision, recall, F1, IoU of the change class and OA
from one confusion matrix over all pixels), class maps (MIoU, per-class IoU), SECOND's SCD protocol,
and captions for the datasets that have them.

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

from changeagent.data.constants import IGNORE_INDEX
from changeagent.data.registry import get_spec
from changeagent.data.spec import DatasetSpec
from changeagent.engine.device import autocast_dtype
from changeagent.engine.distributed import DistInfo, all_gather_objects, broadcast_object
from changeagent.engine.retrieval_eval import retrieval_embeddings, retrieval_scores
from changeagent.metrics import SegmentationMetrics, SemanticChangeMetrics
from changeagent.metrics.segmentation import binary_scores
from changeagent.models.decode_cfg import DECODE


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


def predicted_maps(pred: dict[str, Any], spec: DatasetSpec) -> torch.Tensor:
    """Class maps from `model.predict` logits, by the spec's decoding: `classes` int64 [B, H, W]
    (argmax of its head); `semantic_pair` int64 [B, 2, H, W] (unchanged (0) unless the change head
    fires, else the argmax over classes 1..K-1); `binary` int64 [B, H, W] 0/1 from the change head."""
    changed = pred["change"][:, 0] > 0  # [B, H, W]
    if spec.decoding == "binary":
        return changed.long()
    logits = pred["masks"][spec.id]
    if spec.decoding == "classes":
        return logits.argmax(1)
    land = logits[:, :, 1:].argmax(2) + 1  # [B, 2, H, W]
    return torch.where(changed[:, None], land, torch.zeros_like(land))


TARGET_KEY = {"binary": "change", "classes": "mask", "semantic_pair": "sem"}


def _mask_metrics(spec: DatasetSpec, device: torch.device) -> tuple[Any, Any]:
    """(SegmentationMetrics or None, SemanticChangeMetrics or None) for one dataset."""
    if not spec.has_mask:
        return None, None
    classes = ("no_change", "change") if spec.decoding == "binary" else spec.classes
    seg = SegmentationMetrics(len(classes), class_names=classes).to(device)
    scd = SemanticChangeMetrics().to(device) if "scd" in spec.metrics else None
    return seg, scd


def _mask_scores(spec: DatasetSpec, seg: Any, scd: Any) -> dict[str, Any]:
    if seg is None:
        return {}
    scores = seg.compute()
    if "binary" in spec.metrics:
        return binary_scores(scores)
    if scd is not None:  # SECOND: the SCD protocol's headline keys plus per-class IoU over both dates
        return {**{k: v for k, v in scores.items() if k.startswith("iou")}, **scd.compute()}
    return scores


def _denorm(img: torch.Tensor, mean: list[float], std: list[float]) -> np.ndarray:
    """float [C, H, W] normalised -> uint8 [H, W, 3] (first three channels)."""
    x = img[:3].float().cpu().numpy().transpose(1, 2, 0)
    x = x * np.asarray(std[:3], np.float32) + np.asarray(mean[:3], np.float32)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)


@torch.no_grad()
def evaluate(model: Any, loaders: dict[str, DataLoader], vocab: Any, info: DistInfo,
             opts: EvalOptions) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Returns ({dataset: metrics}, {dataset: visual records}) on every rank (records on rank 0)."""
    was_training = model.training
    model.eval()
    results: dict[str, dict[str, Any]] = {}
    visuals: dict[str, list[dict[str, Any]]] = {}
    amp_dtype = autocast_dtype(opts.amp, info.device, info.is_main)
    for dataset, loader in loaders.items():
        spec = opts.spec(dataset)
        seg, scd = _mask_metrics(spec, info.device)
        captions: list[tuple[str, str, list[str], int]] = []
        embeddings: list[tuple[Any, Any]] = []  # per pair (pair_emb [D], its captions' embeddings [5, D])
        vis: list[dict[str, Any]] = []
        n_local = 0
        bar = tqdm(loader, desc=f"eval {dataset}", disable=not (opts.progress and info.is_main), leave=False)
        for batch in bar:
            image = batch["image"].to(info.device, non_blocking=True)
            n_local += image.shape[0]
            ctx = torch.autocast(info.device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
            with ctx:
                if spec.has_captions or not hasattr(model, "features"):
                    pred = model.predict(image, dataset=list(batch["dataset"]), method=opts.method,
                                         beam_size=opts.beam_size, max_len=opts.max_len,
                                         length_penalty=opts.length_penalty)
                else:  # mask-only dataset: no caption decoding
                    change, masks, _ = model.features(image, list(batch["dataset"]))
                    pred = {"change": change, "masks": masks}
            maps = target = None
            if seg is not None:
                maps = predicted_maps(pred, spec)
                target = batch[TARGET_KEY[spec.decoding]].to(info.device)
                if scd is not None:
                    scd.update_stacked(maps, target)
                seg.update(maps.flatten(0, 1) if maps.dim() == 4 else maps,
                           target.flatten(0, 1) if target.dim() == 4 else target)
            tokens = pred["tokens"].cpu().tolist() if spec.has_captions else None
            if tokens is not None and pred.get("pair_emb") is not None:
                embeddings.extend(retrieval_embeddings(model, vocab, pred["pair_emb"], batch["captions"], info.device))
            for i, name in enumerate(batch["name"]):
                hyp = vocab.decode(tokens[i]) if tokens is not None else ""
                if tokens is not None:
                    captions.append((name, hyp, list(batch["captions"][i]), int(batch["changeflag"][i])))
                if len(vis) < opts.vis_pairs and info.is_main and maps is not None and target is not None:
                    vis.append(_visual(batch, i, maps[i], target[i], hyp, opts))
            if opts.predictions_dir is not None and maps is not None:
                _save_masks(opts.predictions_dir / dataset, batch["name"], maps.cpu(), spec)
        # exact global confusion matrices (sum over ranks), computed on every rank
        scores = _mask_scores(spec, seg, scd)
        if spec.has_captions:
            has_head = getattr(getattr(model, "module", model), "retrieval", None) is not None
            scores.update(_caption_scores(dataset, captions, vocab, info, opts, vis, embeddings if has_head else None))
        else:  # mask-only: count the pairs here (caption scoring counts them otherwise)
            scores["n_pairs"] = sum(all_gather_objects(n_local, info))
        results[dataset] = broadcast_object(scores if info.is_main else None, info)
        visuals[dataset] = vis
    if was_training:
        model.train()
    return results, visuals


def _caption_scores(dataset: str, captions: list[tuple[str, str, list[str], int]], vocab: Any, info: DistInfo,
                    opts: EvalOptions, vis: list[dict[str, Any]],
                    embeddings: list[tuple[Any, Any]] | None = None) -> dict[str, Any]:
    """Caption metrics of one dataset on rank 0 (other ranks send their captions and get {}), and the
    retrieval protocol: the learned head's (`embeddings`, one entry per caption tuple; None without a
    head, the same on every rank) and the caption-matching baseline."""
    from changeagent.metrics import caption_report  # noqa: PLC0415  (heavy pycocoevalcap import)

    gathered = [c for part in all_gather_objects(captions, info) for c in part]
    gathered_emb = [e for part in all_gather_objects(embeddings, info) for e in part] if embeddings is not None else []
    if not info.is_main:
        return {}
    ids = [f"{dataset}/{name}" for name, *_ in gathered]
    if len(set(ids)) != len(ids):
        raise RuntimeError(f"evaluation saw duplicate pairs in {dataset}; the sampler must not pad")
    hyps = {i: c[1] for i, c in zip(ids, gathered)}
    refs = {i: c[2] for i, c in zip(ids, gathered)}
    flags = {i: c[3] for i, c in zip(ids, gathered)}
    id_level = opts.caption_level == "id"
    report = caption_report(hyps, refs, flags, meteor=opts.meteor, id_level=id_level,
                            vocab=vocab if id_level else None)
    scores: dict[str, Any] = dict(report["all"] or {})
    scores.update(change=report["change"], no_change=report["no_change"], counts=report["counts"],
                  no_change_accuracy=report["no_change_accuracy"], n_pairs=len(ids))
    scores.update(retrieval_scores(gathered, gathered_emb))
    if opts.predictions_dir is not None:
        from changeagent.engine.checkpoint import atomic_write_json

        atomic_write_json(opts.predictions_dir / dataset / "captions.json",
                          {c[0]: {"prediction": c[1], "references": c[2]} for c in gathered})
    _per_pair_scores(vis, refs_of={c[0]: c[2] for c in gathered})
    return scores


def _visual(batch: dict[str, Any], i: int, pred: torch.Tensor, target: torch.Tensor, hyp: str,
            opts: EvalOptions) -> dict[str, Any]:
    """One wandb record: images uint8 [H, W, 3], masks int [H, W] (SECOND: date B's land cover)."""
    image, name = batch["image"][i], batch["dataset"][i]
    norm = opts.norm.get(name) or opts.spec(name).norm  # the statistics its images were read with
    p, t = pred.cpu().numpy(), target.cpu().numpy()
    if p.ndim == 3:  # SECOND: show the post-change land cover on image B
        p, t = p[1], t[1]
    valid = t != IGNORE_INDEX
    inter = np.logical_and(p > 0, t > 0)[valid].sum()
    union = np.logical_or(p > 0, t > 0)[valid].sum()
    return {
        "name": batch["name"][i], "a": _denorm(image[0], norm["mean"], norm["std"]), "b": _denorm(image[1], norm["mean"], norm["std"]),
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


def _save_masks(folder: Path, names: list[str], maps: torch.Tensor, spec: DatasetSpec) -> None:
    """Palette PNGs in the dataset's colours: one map `<name>`; per-date maps `<stem>_A.png`, `<stem>_B.png`."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    pal = [v for c in spec.palette for v in c]
    for name, m in zip(names, maps.numpy().astype(np.uint8)):
        stem = Path(name).stem
        items = [(f"{stem}.png", m)] if m.ndim == 2 else [(f"{stem}_A.png", m[0]), (f"{stem}_B.png", m[1])]
        for fname, arr in items:
            img = Image.fromarray(arr, mode="P")
            img.putpalette(pal)
            tmp = folder / f".{fname}.tmp"
            img.save(tmp, format="PNG")
            tmp.replace(folder / fname)
