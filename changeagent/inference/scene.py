"""Scene mode: whole georeferenced rasters of any size with bounded memory.

Windows are read one window-row at a time, their blended logits kept only for one band of rows
(`StripBlender`), and finished rows written straight into a tiled, compressed GeoTIFF. Memory is
about (channels + 2) x tile x width x 4 bytes plus one batch of windows: independent of the height.
Every window gets its own caption, written as a GeoJSON Feature with the window's footprint.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window
from tqdm import tqdm

from changeagent.errors import ChangeAgentError
from changeagent.fileio import atomic_path, clean_stale_temps
from changeagent.inference import outputs as out
from changeagent.inference import postprocess as post
from changeagent.inference.predictor import Predictor
from changeagent.inference.raster import data_count, open_pair, raster_stats, read_window, select_bands
from changeagent.inference.tiling import ColumnBand, Grid, StripBlender, pad_to

BAND_BYTES = 128 * 2**20  # strip buffer budget; wider scenes are run in column bands
# GDAL's default block cache is 5 % of RAM and counts towards RSS; rasterio reads an int as bytes
GDAL_CACHE_BYTES = 128 * 2**20


def scene_paths(out_dir: Path, name: str, head: str) -> dict[str, Path]:
    """Final output files of a scene (`<name>_mask.tif`, `<name>_captions.geojson`, ...)."""
    paths = {k: out_dir / f"{name}_{k}.tif" for k in post.palettes(head) if k != "change"}
    paths["geojson"] = out_dir / f"{name}_captions.geojson"
    paths["record"] = out_dir / f"{name}_scene.json"
    return paths


def predict_scene(pred: Predictor, a_path: str, b_path: str, out_dir: str | Path, *,
                  align: bool = False, name: str | None = None, progress: bool = True,
                  band_width: int | None = None) -> dict[str, Any]:
    """Run scene mode; returns the scene record (also written to `<name>_scene.json`).

    `band_width` caps the columns of one pass (default: what fits in `BAND_BYTES`).
    """
    t_start = time.perf_counter()
    out_dir = Path(out_dir).absolute()  # every path in the record is absolute
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out_dir)
    name = name or Path(a_path).stem
    paths = scene_paths(out_dir, name, pred.head)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), open_pair(a_path, b_path, align) as (a, b):
        bands_a = select_bands(data_count(a), pred.bands, pred.in_channels, a_path)
        bands_b = select_bands(data_count(b), pred.bands, pred.in_channels, b_path)
        grid = Grid(a.height, a.width, pred.tile, pred.overlap)
        per_col = (pred.channels + 2) * grid.win_h * 4  # logits + validity + weight sum
        col_bands = grid.col_bands(band_width or max(BAND_BYTES // per_col, 2 * grid.win_w))
        lo_hi = raster_stats(a, bands_a, b, bands_b, pred.scaler)  # one stretch for both dates
        stats = (lo_hi, lo_hi)
        writers: dict[str, Any] = {}
        # every output is a fileio temp file: renamed into place together at the end, discarded on error
        with contextlib.ExitStack() as files:
            gj = out.GeoJSONWriter(files.enter_context(atomic_path(paths["geojson"])), a.crs)
            try:
                for key, path in paths.items():
                    if key in ("geojson", "record"):
                        continue
                    dst = rasterio.open(files.enter_context(atomic_path(path)), "w",
                                        **out.geotiff_profile(grid.width, grid.height, a.crs, a.transform))
                    dst.write_colormap(1, out.colormap(post.palettes(pred.head)[key]))
                    writers[key] = dst
                summary = _stream(pred, (a, b), (bands_a, bands_b), stats, grid, col_bands, writers, gj, progress)
                if summary["valid_pixels"] == 0:
                    raise ChangeAgentError(f"{a_path} / {b_path}: every pixel is nodata in one of the inputs")
                for dst in writers.values():
                    dst.close()
                gj.finish()
            except BaseException:
                gj.close()
                for dst in writers.values():
                    with contextlib.suppress(Exception):
                        dst.close()
                raise
        record = {
            "a": str(Path(a_path).absolute()), "b": str(Path(b_path).absolute()), "head": post.spec_of(pred.head).id,
            **{k: str(p) for k, p in paths.items() if k != "record"},
            "crs": a.crs.to_string() if a.crs else None, "transform": list(a.transform)[:6],
            "width": grid.width, "height": grid.height, "tile": grid.tile, "overlap": grid.overlap,
            **summary,
        }
    record["timings"]["total_s"] = round(time.perf_counter() - t_start, 3)
    record["megapixels_per_s"] = round(grid.width * grid.height / 1e6 / max(record["timings"]["total_s"], 1e-9), 4)
    out.write_json(paths["record"], record)
    return record


def _stream(pred: Predictor, srcs: tuple[Any, Any], bands: tuple[list[int], list[int]],
            stats: tuple[Any, Any], grid: Grid, col_bands: list[ColumnBand], writers: dict[str, Any],
            gj: out.GeoJSONWriter, progress: bool) -> dict[str, Any]:
    """The window loop, one column band after the other (usually one band).

    The blender holds the head's logits plus one validity channel. A window on a band boundary is
    run by both bands but reported (GeoJSON, skip count) by the band owning its first column.
    """
    k = pred.channels
    hist = {key: np.zeros(256, np.int64) for key in ("mask", "change", "from", "to")}
    t = {"read_s": 0.0, "model_s": 0.0, "write_s": 0.0}
    skipped = runs = 0
    bar = tqdm(total=len(grid), desc="scene windows", unit="win", disable=not progress)
    for band in col_bands:
        blender = StripBlender(grid, k + 1, band.span0, band.span1)
        o0, o1 = band.own0 - band.span0, band.own1 - band.span0
        for r in grid.rows:
            pending: list[tuple[int, np.ndarray, np.ndarray]] = []
            for c in band.cols:
                t0 = time.perf_counter()
                win = Window(c, r, min(grid.win_w, grid.width - c), min(grid.win_h, grid.height - r))
                xs, valid = [], None
                for src, idx, (lo, hi) in zip(srcs, bands, stats):
                    data, v = read_window(src, win, idx)
                    valid = v if valid is None else valid & v
                    xs.append(pred.normalise_raw(data, lo, hi))
                t["read_s"] += time.perf_counter() - t0
                assert valid is not None
                owned = band.own0 <= c < band.own1
                if not valid.any():
                    skipped += owned  # nothing to see: no model call, the pixels stay nodata
                    bar.update(int(owned))
                    continue
                pending.append((c, pad_to(np.stack(xs), grid.win_h, grid.win_w), valid))
                if len(pending) == pred.batch_size:
                    t["model_s"] += _run_batch(pred, r, pending, blender, gj, srcs[0].transform, band, bar)
                    runs += len(pending)
                    pending = []
            if pending:
                t["model_s"] += _run_batch(pred, r, pending, blender, gj, srcs[0].transform, band, bar)
                runs += len(pending)
            t0 = time.perf_counter()
            first, logits, wsum = blender.flush()
            logits, wsum = logits[:, :, o0:o1], wsum[:, o0:o1]
            maps = post.decode_maps(logits[:k], pred.head, (logits[k] > 0.5) & (wsum > 0))
            for key, counts in post.class_histogram(maps, pred.head).items():
                hist[key] += counts
            for key, dst in writers.items():
                dst.write(maps[key], 1, window=Window(band.own0, first, band.own1 - band.own0, logits.shape[1]))
            t["write_s"] += time.perf_counter() - t0
    bar.close()
    return {
        **post.fractions(hist, pred.head), "windows": len(grid), "windows_skipped": skipped,
        "windows_run": runs, "column_bands": len(col_bands), "captions": gj.n,
        "timings": {key: round(v, 3) for key, v in t.items()},
    }


def _run_batch(pred: Predictor, row: int, pending: list[tuple[int, np.ndarray, np.ndarray]],
               blender: StripBlender, gj: out.GeoJSONWriter, transform: Any, band: ColumnBand,
               bar: Any) -> float:
    """Model on a batch of windows of one window-row; adds logits and GeoJSON features."""
    t0 = time.perf_counter()
    logits, fields = pred.run_windows(np.stack([x for _, x, _ in pending]))
    dt = time.perf_counter() - t0
    g = blender.grid
    for (col, _, valid), lg, f in zip(pending, logits, fields):
        h, w = valid.shape
        vchan = pad_to(valid[None].astype(np.float32), g.win_h, g.win_w)
        blender.add(row, col, np.concatenate([lg, vchan]))
        if not band.own0 <= col < band.own1:
            continue  # reported by the neighbouring band
        bar.update(1)
        maps = post.decode_maps(lg[:, :h, :w], pred.head, valid)
        fr = post.fractions(post.class_histogram(maps, pred.head), pred.head)
        gj.add(out.window_polygon(transform, row, col, h, w), {
            "row": row, "col": col, "height": h, "width": w, **f,  # the tasks' fields (caption)
            "changed_fraction": fr["changed_fraction"], "change_fraction": fr["change_fraction"],
            "object_counts": post.object_counts(maps, pred.head, pred.min_area),
            "valid_fraction": float(valid.mean()),
        })
    return dt
