"""One pair or one scene through the inference code, into a request folder, as a `DetectResult` dict.

Pair mode is `changeagent predict A B` (`inference.pairs.write_pair`: `pair_mask.png` or `.tif`,
`pair.json`); scene mode is `predict --scene` (`inference.scene.predict_scene`: `scene_mask.tif`,
`scene_captions.geojson`, `scene_scene.json`). Both add the previews (`a.png`, `b.png`, `classes.png`,
`overlay.png`, at most `preview.PREVIEW_SIDE` px) and the per-class table computed from the class map
that was written, so the table always matches the mask file.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from PIL import Image, UnidentifiedImageError
from rasterio.enums import Resampling

from changeagent.app import preview
from changeagent.app.schemas import ClassChange
from changeagent.errors import ChangeAgentError
from changeagent.inference import outputs as out
from changeagent.inference import postprocess as post
from changeagent.inference.pairs import write_pair
from changeagent.inference.raster import (
    MAX_PAIR_PIXELS,
    Scaler,
    data_count,
    is_raster,
    open_pair,
    open_raster,
    raster_stats,
    read_pair,
    select_bands,
)
from changeagent.inference.scene import predict_scene, scene_paths


def image_size(path: Path, what: str) -> tuple[int, int]:
    """(width, height) from the file header, without decoding pixels; a clear error for a bad file."""
    if is_raster(path):
        with open_raster(path) as src:
            return int(src.width), int(src.height)
    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ChangeAgentError(f"{what}: cannot read the image: {e}") from None


def use_scene(a: Path, b: Path) -> bool:
    """GeoTIFFs (and images too big to hold whole) run as scenes; other images as pairs."""
    if is_raster(a) or is_raster(b):
        return True
    w, h = image_size(a, "a")
    return w * h > MAX_PAIR_PIXELS


def class_table(m: np.ndarray, spec: Any, min_area: int) -> tuple[list[dict[str, Any]], int]:
    """Per change class {name, changed_fraction, pixels, objects} of class map `m`, and its valid pixels."""
    hist = np.bincount(m.reshape(-1), minlength=256)
    valid = int(hist[: out.NODATA].sum())
    counts = post.object_counts({post.map_key(spec): m}, spec, min_area)
    rows = [ClassChange(name=n, changed_fraction=float(hist[i + 1]) / max(valid, 1), pixels=int(hist[i + 1]),
                        objects=int(counts[n])).model_dump()
            for i, n in enumerate(post.class_names(spec))]
    return rows, valid


def _result(pred: Any, rows: list[dict[str, Any]], valid: int, **fields: Any) -> dict[str, Any]:
    return {"classes": rows, "valid_pixels": valid, "head": pred.head, "min_area": pred.min_area,
            "changed_fraction": float(sum(r["pixels"] for r in rows)) / max(valid, 1), **fields}


def run_pair(pred: Any, a: Path, b: Path, folder: Path) -> dict[str, Any]:
    """Pair mode into `folder`."""
    t0 = time.perf_counter()
    pa, pb = read_pair(str(a), str(b), pred.bands, pred.in_channels, align=False)
    p = pred.predict_pictures([(pa, pb)], t_read=time.perf_counter() - t0)[0]
    rec = write_pair(pred, p, pa, pb, folder, "pair", vis=False)
    key = post.map_key(pred.spec)
    rows, valid = class_table(p.maps[key], pred.spec, pred.min_area)
    shown = [out.to_display(x) for x in pred.scale_pair(pa, pb)]
    views = preview.write_previews(folder, shown[0], shown[1], p.maps[key], post.palettes(pred.spec)[key])
    extra = {k: rec[k] for k in ("from", "to") if k in rec}
    return _result(pred, rows, valid, mode="pair", caption=p.caption, change_fraction=p.change_fraction,
                   width=int(p.mask.shape[1]), height=int(p.mask.shape[0]), mask_path=rec["mask"],
                   overlay_path=str(views["overlay"]), record_path=str(folder / "pair.json"),
                   geojson_path=None, extra_masks=extra, timings=rec["timings"])


def run_scene(pred: Any, a: Path, b: Path, folder: Path, progress: bool = False) -> dict[str, Any]:
    """Scene mode into `folder`, plus the whole-scene caption and the previews from decimated reads."""
    srec = predict_scene(pred, str(a), str(b), folder, name="scene", progress=progress)
    key = post.map_key(pred.spec)
    with rasterio.open(srec[key]) as src:  # the class map as written (bounded by the pixel limit)
        m = src.read(1)
    rows, valid = class_table(m, pred.spec, pred.min_area)
    a_rgb, b_rgb, x = _overview(pred, a, b)
    caption = pred.overview_caption(x)
    f = preview.PREVIEW_SIDE / max(m.shape)
    small = m if f >= 1 else _nearest(srec[key], a_rgb.shape[:2])
    views = preview.write_previews(folder, a_rgb, b_rgb, small, post.palettes(pred.spec)[key])
    extra = {k: srec[k] for k in ("from", "to") if k in srec}
    return _result(pred, rows, valid, mode="scene", caption=caption, change_fraction=srec["change_fraction"],
                   width=srec["width"], height=srec["height"], mask_path=srec["mask"],
                   overlay_path=str(views["overlay"]),
                   record_path=str(scene_paths(folder, "scene", pred.head)["record"]),
                   geojson_path=srec["geojson"], extra_masks=extra, timings=srec["timings"])


def _nearest(path: str, shape: tuple[int, int]) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1, out_shape=shape, resampling=Resampling.nearest)


def _overview(pred: Any, a: Path, b: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Display RGB of A and B (long side <= PREVIEW_SIDE, area-averaged, the scene's one stretch) and the
    normalised pair [2, C, h, w] of the same read (for the whole-scene caption)."""
    with open_pair(str(a), str(b), False) as (sa, sb):
        bands = [select_bands(data_count(s), pred.bands, pred.in_channels, str(p)) for s, p in ((sa, a), (sb, b))]
        lo, hi = raster_stats(sa, bands[0], sb, bands[1], pred.scaler)
        f = min(1.0, preview.PREVIEW_SIDE / max(sa.width, sa.height))
        shape = (max(1, round(sa.height * f)), max(1, round(sa.width * f)))
        xs = []
        for src, idx in ((sa, bands[0]), (sb, bands[1])):
            data = src.read(indexes=idx, out_shape=(len(idx), *shape), resampling=Resampling.average)
            xs.append(Scaler.apply(data, lo, hi))
    rgb = [out.to_display(x) for x in xs]
    x = np.stack([pred.normalise(v) for v in xs])
    return rgb[0], rgb[1], x
