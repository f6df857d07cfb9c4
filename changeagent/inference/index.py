"""`changeagent index`: embed tile pairs, scene windows or a dataset split once into a search index.

Each item is run through the model once (batched): its pair embedding, generated caption and
changed-pixel fractions are stored (see index_store.py for the layout). Interrupted runs resume:
the same command skips every item already stored. A pair larger than one tile is embedded from its
overview (area-resampled so the long side is one tile); index it as a scene for window-level search.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from changeagent.errors import ChangeAgentError
from changeagent.fileio import atomic_path
from changeagent.inference import outputs as out
from changeagent.inference import postprocess as post
from changeagent.inference.index_store import TEXT_CONFIG, TEXT_ONNX, TEXT_WEIGHTS, VOCAB, IndexStore
from changeagent.inference.predictor import Predictor
from changeagent.inference.provenance import model_fingerprint
from changeagent.inference.tiling import ceil_to, pad_to

# (item record, normalised float32 [2, C, h, w] with h, w multiples of 32, content size (h, w), valid [h, w] | None)
Job = tuple[dict[str, Any], np.ndarray, tuple[int, int], "np.ndarray | None"]


def model_header(pred: Predictor, kind: str, source: dict[str, Any], crs: str | None = None) -> dict[str, Any]:
    """Index header fields that tie it to one model: its folder, the sha256 of its weights and D."""
    ck = Path(pred.source)
    retrieval = getattr(pred.model, "retrieval", None)
    if retrieval is None:
        raise ChangeAgentError(f"checkpoint {ck}: the model has no retrieval head (model.retrieval.enabled was "
                               "false when it was trained); train one with it to build a search index")
    return {"kind": kind, "dim": int(retrieval.cfg.dim), "head": pred.head, "crs": crs, "source": source,
            "model": model_fingerprint(ck)}


def save_text_encoder(pred: Predictor, folder: Path) -> None:
    """The caption encoder, its config and the vocabulary: what `search` needs to embed queries."""
    from safetensors.torch import save_file

    text = pred.model.retrieval.text
    if not (folder / TEXT_WEIGHTS).is_file():
        with atomic_path(folder / TEXT_WEIGHTS) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in text.state_dict().items()}, str(tmp))
    cfg = {"vocab_size": int(text.vocab_size), "retrieval": pred.model.retrieval.cfg.to_dict(),
           "max_len": int(pred.decode["max_len"])}  # type: ignore[call-overload]
    if not (folder / TEXT_ONNX).is_file():
        export_text_encoder(text, cfg["max_len"], folder / TEXT_ONNX)
    out.write_json(folder / TEXT_CONFIG, cfg)
    pred.vocab.save(folder / VOCAB)


def export_text_encoder(text: Any, max_len: int, path: Path) -> None:
    """The caption encoder as ONNX for `search` (onnxruntime, no torch at start-up). Queries are padded
    with <NULL> to `max_len`, which the encoder masks, so the input is one fixed shape [1, max_len]
    (the TorchScript exporter bakes sequence lengths into the attention's reshapes)."""
    import warnings

    was_training = text.training
    text.eval()
    try:
        with warnings.catch_warnings(), atomic_path(path) as tmp:
            warnings.simplefilter("ignore")  # the exporter's notes on constant folding and tracing
            torch.onnx.export(text.cpu(), (torch.ones(1, max_len, dtype=torch.long),), str(tmp),
                              input_names=["ids"], output_names=["embedding"], dynamo=False, opset_version=17)
    finally:
        text.train(was_training)


def fit_to_tile(pred: Predictor, x: np.ndarray) -> tuple[np.ndarray, tuple[int, int], bool]:
    """[2, C, H, W] -> (padded to multiples of 32, content size, resampled?): pairs larger than one
    tile are area-resampled so the long side is one tile (the overview the caption head also uses)."""
    _, _, H, W = x.shape
    resampled = H > pred.tile or W > pred.tile
    if resampled:
        f = pred.tile / max(H, W)
        H, W = max(1, round(H * f)), max(1, round(W * f))
        x = F.interpolate(torch.from_numpy(np.ascontiguousarray(x)), size=(H, W), mode="area").numpy()
    return pad_to(x, ceil_to(H), ceil_to(W)), (H, W), resampled


def _embed_jobs(pred: Predictor, store: IndexStore, jobs: Iterable[Job], total: int, progress: bool,
                desc: str) -> dict[str, Any]:
    """Batch the jobs by padded shape, run the model, append rows + items; returns counters."""
    bar = tqdm(total=total, desc=desc, unit="item", disable=not progress)
    pending: list[Job] = []
    n, t_model, t0 = 0, 0.0, time.perf_counter()

    def flush() -> None:
        nonlocal n, t_model, pending
        t = time.perf_counter()
        logits, fields, raw = pred.embed_windows(np.stack([j[1] for j in pending]))
        t_model += time.perf_counter() - t
        items = []
        for (rec, _, (h, w), valid), lg, f in zip(pending, logits, fields):
            maps = post.decode_maps(lg[:, :h, :w], pred.head, valid)
            fr = post.fractions(post.class_histogram(maps, pred.head), pred.head)
            items.append({**rec, "caption": "", **f, "changed_fraction": fr["changed_fraction"],
                          "change_fraction": fr["change_fraction"]})
        store.append(raw["pair_emb"].float().cpu().numpy(), items)
        n += len(items)
        bar.update(len(items))
        pending = []

    for job in jobs:
        if pending and (job[1].shape != pending[0][1].shape or len(pending) == pred.batch_size):
            flush()
        pending.append(job)
    if pending:
        flush()
    bar.close()
    dt = time.perf_counter() - t0
    return {"indexed": n, "seconds": round(dt, 3), "model_s": round(t_model, 3),
            "items_per_s": round(n / dt, 2) if n and dt > 0 else None}


def _finish(store: IndexStore, counters: dict[str, Any], skipped: int, ann: str | None,
            ann_params: dict[str, Any] | None) -> dict[str, Any]:
    store.finish()
    if ann and ann != "none":
        from changeagent.inference.search import build_ann

        build_ann(store, ann, **(ann_params or {}))
    return {"index": str(store.path), "kind": store.header["kind"], "count": store.header["count"],
            "already_done": skipped, "ann": store.header.get("ann"), **counters}


def index_pairs(pred: Predictor, a_dir: str | Path, b_dir: str | Path, out_dir: str | Path, *,
                progress: bool = True, overwrite: bool = False, ann: str | None = None,
                ann_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Folder mode: every A/<name> with a B/<name>; item name = the file stem."""
    from changeagent.inference.pairs import list_pairs
    from changeagent.inference.raster import both_valid, read_pair

    pairs = list_pairs(a_dir, b_dir)
    source = {"a_dir": str(Path(a_dir).resolve()), "b_dir": str(Path(b_dir).resolve())}
    store = IndexStore.create_or_resume(out_dir, model_header(pred, "pairs", source), overwrite)
    save_text_encoder(pred, store.path)
    done = store.done_names()
    todo = [(stem, a, b) for stem, a, b in pairs if stem not in done]

    def jobs() -> Iterator[Job]:
        for stem, a, b in todo:
            pa, pb = read_pair(str(a), str(b), pred.bands, pred.in_channels, False)
            x, size, resampled = fit_to_tile(pred, pred.prepare(pa, pb))  # one stretch for both dates
            valid = None if resampled else both_valid(pa.valid, pb.valid)
            rec: dict[str, Any] = {"name": stem, "a": str(a), "b": str(b)}
            if pa.georeferenced:
                rec.update(crs=pa.crs.to_string(), footprint=out.window_polygon(pa.transform, 0, 0, *pa.data.shape[1:]))
            yield rec, x, size, valid

    counters = _embed_jobs(pred, store, jobs(), len(todo), progress, "index pairs")
    return _finish(store, counters, len(pairs) - len(todo), ann, ann_params)


def index_scene(pred: Predictor, a_path: str | Path, b_path: str | Path, out_dir: str | Path, *,
                align: bool = False, name: str | None = None, progress: bool = True,
                overwrite: bool = False, ann: str | None = None,
                ann_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Scene mode: every window of the sliding-window grid of `predict --scene` (same tile and
    overlap) with valid pixels in both dates; item name `<scene>:r<row>_c<col>`, footprint in the
    raster CRS."""
    import rasterio
    from rasterio.windows import Window

    from changeagent.inference.raster import data_count, open_pair, raster_stats, read_window, select_bands
    from changeagent.inference.scene import GDAL_CACHE_BYTES
    from changeagent.inference.tiling import Grid

    scene = name or Path(a_path).stem
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), open_pair(str(a_path), str(b_path), align) as (a, b):
        bands = (select_bands(data_count(a), pred.bands, pred.in_channels, str(a_path)),
                 select_bands(data_count(b), pred.bands, pred.in_channels, str(b_path)))
        grid = Grid(a.height, a.width, pred.tile, pred.overlap)
        crs = a.crs.to_string() if a.crs else None
        source = {"a": str(Path(a_path).resolve()), "b": str(Path(b_path).resolve()), "scene": scene,
                  "tile": grid.tile, "overlap": grid.overlap, "align": align}
        store = IndexStore.create_or_resume(out_dir, model_header(pred, "scene", source, crs), overwrite)
        save_text_encoder(pred, store.path)
        done = store.done_names()
        lo_hi = raster_stats(a, bands[0], b, bands[1], pred.scaler)  # one stretch for both dates
        stats = (lo_hi, lo_hi)
        windows = [(r, c) for r in grid.rows for c in grid.cols]
        todo = [(r, c) for r, c in windows if f"{scene}:r{r}_c{c}" not in done]
        skipped_nodata = 0

        def jobs() -> Iterator[Job]:
            nonlocal skipped_nodata
            for r, c in todo:
                h, w = min(grid.win_h, grid.height - r), min(grid.win_w, grid.width - c)
                xs, valid = [], None
                for src, idx, (lo, hi) in zip((a, b), bands, stats):
                    data, v = read_window(src, Window(c, r, w, h), idx)
                    valid = v if valid is None else valid & v
                    xs.append(pred.normalise_raw(data, lo, hi))
                assert valid is not None
                if not valid.any():
                    skipped_nodata += 1
                    continue
                rec = {"name": f"{scene}:r{r}_c{c}", "scene": scene, "row": r, "col": c, "height": h, "width": w,
                       "footprint": out.window_polygon(a.transform, r, c, h, w),
                       "valid_fraction": float(valid.mean())}
                yield rec, pad_to(np.stack(xs), grid.win_h, grid.win_w), (h, w), valid

        counters = _embed_jobs(pred, store, jobs(), len(todo), progress, "index windows")
    counters["windows_nodata"] = skipped_nodata
    return _finish(store, counters, len(windows) - len(todo), ann, ann_params)


def index_dataset(pred: Predictor, datasets: dict[str, Any], source: dict[str, Any], split: str,
                  out_dir: str | Path, *, num_workers: int = 0, progress: bool = True, overwrite: bool = False,
                  ann: str | None = None, ann_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Config mode: the readers of one `split` (dataset id -> its reader, read with the statistics of
    the head that decodes it); item name `<dataset>/<file name>`, with the pair's reference captions
    and change flag. `source` (the run config, overrides, split and roots) goes into the index
    header, so a resume with other data is refused. The command line builds the readers from a run
    config (`inference.cli`: the engine's schema and loaders, which this layer does not import)."""
    from torch.utils.data import DataLoader, Subset

    from changeagent.data.joint import collate

    store = IndexStore.create_or_resume(out_dir, model_header(pred, "dataset", source), overwrite)
    save_text_encoder(pred, store.path)
    done = store.done_names()
    todo = {n: [i for i, name in enumerate(_item_names(ds)) if f"{n}/{name}" not in done] for n, ds in datasets.items()}
    total = sum(len(v) for v in todo.values())
    skipped = sum(len(ds) for ds in datasets.values()) - total

    def jobs() -> Iterator[Job]:
        for n, ds in datasets.items():
            loader = DataLoader(Subset(ds, todo[n]), batch_size=pred.batch_size, collate_fn=collate,
                                num_workers=num_workers)
            for batch in loader:
                image = batch["image"].numpy()
                for i, fname in enumerate(batch["name"]):
                    x, size, _ = fit_to_tile(pred, image[i])
                    refs = batch.get("captions")
                    rec = {"name": f"{n}/{fname}", "dataset": n, "references": list(refs[i]) if refs else [],
                           "changeflag": int(batch["changeflag"][i]) if "changeflag" in batch else None}
                    yield rec, x, size, None

    counters = _embed_jobs(pred, store, jobs(), total, progress, f"index {split}")
    return _finish(store, counters, skipped, ann, ann_params)


def _item_names(ds: Any) -> list[str]:
    """File names of a dataset reader's items in index order, known without reading any image."""
    names = getattr(ds, "names", None)
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    pairs = getattr(ds, "pairs", None)
    if isinstance(pairs, list):
        return [p.name for p in pairs]
    raise ChangeAgentError(f"index: cannot list the items of {type(ds).__name__} without reading them")
