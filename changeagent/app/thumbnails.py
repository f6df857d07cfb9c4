"""Search results for people: an A | B thumbnail per hit and, for scene windows, an overview of the scene
with every hit's footprint outlined, plus the hits' GeoJSON. Images are read only when they lie under
the roots (through `ChangeService._input`); a hit whose images do not gets no thumbnail, only a note."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rasterio.enums import Resampling
from rasterio.windows import Window

from changeagent.app import preview
from changeagent.errors import ChangeAgentError
from changeagent.inference import outputs as out
from changeagent.inference.raster import (
    Scaler,
    data_count,
    open_pair,
    raster_stats,
    read_pair,
    read_window,
    select_bands,
)
from changeagent.inference.search import results_geojson

OVERVIEW_SIDE = 512


def annotate(svc: Any, searcher: Any, res: dict[str, Any], folder: Path) -> None:
    """Add `thumbnail_path` (or `thumbnail_note`) to each hit, and `footprints_path` / `geojson_path`."""
    pred = svc.default
    stores = {str(s.path): s for s in searcher.stores}
    scenes: dict[str, Any] = {}
    for hit in res["results"]:
        store = stores.get(hit["index"])
        if store is None:
            continue
        try:
            if store.header.get("kind") == "scene":
                scene = scenes.get(hit["index"])
                if scene is None:
                    scene = scenes[hit["index"]] = _Scene(svc, pred, store.header["source"])
                a_rgb, b_rgb = scene.window(hit)
            elif "a" in hit and "b" in hit:
                pa, pb = read_pair(str(svc._input(hit["a"], "index item a")), str(svc._input(hit["b"], "index item b")),
                                   pred.bands, pred.in_channels)
                a_rgb, b_rgb = (out.to_display(x) for x in pred.scale_pair(pa, pb))
            else:
                hit["thumbnail_note"] = "the index does not record image paths for this item"
                continue
        except ChangeAgentError as e:
            hit["thumbnail_note"] = f"no thumbnail: {e}"
            continue
        path = folder / f"thumb_{hit['rank']:03d}.png"
        out.write_image(path, preview.side_by_side(a_rgb, b_rgb))
        hit["thumbnail_path"] = str(path)
    for i, (name, scene) in enumerate(scenes.items()):
        boxes = [(h["row"], h["col"], h["height"], h["width"], f"#{h['rank']}")
                 for h in res["results"] if h["index"] == name and "row" in h]
        path = folder / f"footprints_{i}.png"
        out.write_image(path, preview.footprints(scene.overview, scene.scale, boxes))
        res.setdefault("footprints_paths", []).append(str(path))
    if any(h.get("footprint") for h in res["results"]):
        path = folder / "results.geojson"
        out.write_json(path, results_geojson(res, searcher))
        res["geojson_path"] = str(path)


class _Scene:
    """The two rasters of a scene index (under the roots), their one stretch and an overview of B."""

    def __init__(self, svc: Any, pred: Any, source: dict[str, Any]) -> None:
        self.pred = pred
        self.a = str(svc._input(source.get("a", ""), "scene a"))
        self.b = str(svc._input(source.get("b", ""), "scene b"))
        self.align = bool(source.get("align", False))
        with open_pair(self.a, self.b, self.align) as (sa, sb):
            self.bands = [select_bands(data_count(s), pred.bands, pred.in_channels, p)
                          for s, p in ((sa, self.a), (sb, self.b))]
            self.lo_hi = raster_stats(sa, self.bands[0], sb, self.bands[1], pred.scaler)
            self.scale = min(1.0, OVERVIEW_SIDE / max(sb.width, sb.height))
            shape = (max(1, round(sb.height * self.scale)), max(1, round(sb.width * self.scale)))
            data = sb.read(indexes=self.bands[1], out_shape=(len(self.bands[1]), *shape),
                           resampling=Resampling.average)
        self.overview = out.to_display(Scaler.apply(data, *self.lo_hi))

    def window(self, hit: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        win = Window(hit["col"], hit["row"], hit["width"], hit["height"])
        with open_pair(self.a, self.b, self.align) as (sa, sb):
            shown = []
            for src, idx in ((sa, self.bands[0]), (sb, self.bands[1])):
                data, _ = read_window(src, win, idx)
                shown.append(out.to_display(Scaler.apply(data, *self.lo_hi)))
        return shown[0], shown[1]


def load_rgb(path: str | Path) -> np.ndarray:
    """A preview PNG the service wrote, as uint8 [H, W, 3]."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
