"""Output writers: palette PNG, GeoTIFF (whole or windowed), visualisation PNG, JSON, GeoJSON, CSV.

Every file is written through `changeagent.fileio.atomic_path` (a unique temporary name in its final
folder, fsync, rename), so an error or a kill never leaves a half-written file under a final name;
`changeagent.fileio.clean_stale_temps` removes the temporary files of dead runs.
"""

from __future__ import annotations

import csv
import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from PIL import Image, ImageDraw, ImageFont

from changeagent.fileio import atomic_path

NODATA = 255  # class id of nodata pixels in every written mask (= IGNORE_INDEX)
NODATA_COLOUR = (64, 64, 64)
VIS_PANEL = 384  # visualisation panels are scaled down to this many pixels at most


def _flat_palette(colours: Sequence[tuple[int, int, int]]) -> list[int]:
    pal = [0] * 768
    for i, c in enumerate(colours):
        pal[3 * i : 3 * i + 3] = c
    pal[3 * NODATA : 3 * NODATA + 3] = NODATA_COLOUR
    return pal


def write_png(path: str | Path, mask: np.ndarray, palette: Sequence[tuple[int, int, int]]) -> None:
    """uint8 [H, W] class ids as a palette PNG (index 255 = nodata)."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    im = Image.frombytes("P", (m.shape[1], m.shape[0]), m.tobytes())
    im.putpalette(_flat_palette(palette))
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG", optimize=False)


def geotiff_profile(width: int, height: int, crs: Any, transform: Any) -> dict[str, Any]:
    """Tiled, DEFLATE-compressed single-band uint8 mask with nodata 255."""
    tiled = width >= 256 and height >= 256
    prof: dict[str, Any] = dict(
        driver="GTiff", width=width, height=height, count=1, dtype="uint8", nodata=NODATA,
        crs=crs, transform=transform, compress="deflate", BIGTIFF="IF_SAFER",
    )
    if tiled:
        prof.update(tiled=True, blockxsize=256, blockysize=256)
    return prof


def colormap(palette: Sequence[tuple[int, int, int]]) -> dict[int, tuple[int, int, int, int]]:
    cmap = {i: (*c, 255) for i, c in enumerate(palette)}
    cmap[NODATA] = (*NODATA_COLOUR, 0)
    return cmap


def write_geotiff(path: str | Path, mask: np.ndarray, crs: Any, transform: Any,
                  palette: Sequence[tuple[int, int, int]]) -> None:
    """uint8 [H, W] class ids as a GeoTIFF with the input's CRS and transform."""
    with atomic_path(path) as tmp:
        with rasterio.open(tmp, "w", **geotiff_profile(mask.shape[1], mask.shape[0], crs, transform)) as dst:
            dst.write(mask.astype(np.uint8), 1)
            dst.write_colormap(1, colormap(palette))


def to_display(x: np.ndarray) -> np.ndarray:
    """float [C, H, W] in [0, 1] -> uint8 [H, W, 3] (first three bands; one band as grey)."""
    rgb = x[:3] if x.shape[0] >= 3 else np.repeat(x[:1], 3, axis=0)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def overlay(rgb: np.ndarray, mask: np.ndarray, palette: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """uint8 [H, W, 3]: `rgb` with classes > 0 tinted in their palette colour (alpha 0.55)."""
    lut = np.zeros((256, 3), np.float32)
    lut[: len(palette)] = palette
    lut[NODATA] = NODATA_COLOUR
    hit = (mask > 0)[..., None]
    mixed = rgb.astype(np.float32) * 0.45 + lut[mask] * 0.55
    return np.where(hit, mixed, rgb).astype(np.uint8)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def visualisation(panels: Sequence[np.ndarray], caption: str) -> Image.Image:
    """uint8 [H, W, 3] panels side by side, each scaled to <= VIS_PANEL px, caption underneath."""
    h, w = panels[0].shape[:2]
    f = min(1.0, VIS_PANEL / max(h, w))
    ph, pw = max(1, round(h * f)), max(1, round(w * f))
    gap, font = 4, _font(14)
    width = len(panels) * pw + (len(panels) + 1) * gap
    lines = textwrap.wrap(caption or "(empty caption)", width=max(20, width // 8))
    canvas = Image.new("RGB", (width, ph + 2 * gap + 18 * len(lines) + 6), (255, 255, 255))
    for i, p in enumerate(panels):
        im = Image.fromarray(p).resize((pw, ph), Image.Resampling.NEAREST if f == 1 else Image.Resampling.BOX)
        canvas.paste(im, (gap + i * (pw + gap), gap))
    draw = ImageDraw.Draw(canvas)
    for j, line in enumerate(lines):
        draw.text((gap, ph + 2 * gap + 18 * j), line, fill=(0, 0, 0), font=font)
    return canvas


def write_image(path: str | Path, im: Image.Image) -> None:
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """One row per dict; columns are the union of keys in first-seen order."""
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)


def window_polygon(transform: Any, row: int, col: int, h: int, w: int) -> list[list[float]]:
    """Closed ring of a pixel window's corners in the raster CRS (works for rotated grids too)."""
    a, b, c, d, e, f = tuple(transform)[:6]
    corners = [(col, row), (col + w, row), (col + w, row + h), (col, row + h), (col, row)]
    return [[a * x + b * y + c, d * x + e * y + f] for x, y in corners]


class GeoJSONWriter:
    """Streams Features to `path` (a temporary file from `fileio.atomic_path`; its owner renames it)."""

    def __init__(self, path: str | Path, crs: Any) -> None:
        self.f = open(path, "w")
        head: dict[str, Any] = {"type": "FeatureCollection"}
        if crs is not None:  # RFC 7946 drops `crs`, but GDAL/QGIS read it for projected CRSs
            head["crs"] = {"type": "name", "properties": {"name": crs.to_string()}}
        self.f.write(json.dumps(head)[:-1] + ', "features": [\n')
        self.n = 0

    def add(self, ring: list[list[float]], properties: dict[str, Any]) -> None:
        feat = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": properties}
        self.f.write((",\n" if self.n else "") + json.dumps(feat))
        self.n += 1

    def finish(self) -> None:
        """Close the collection (the file is complete)."""
        self.f.write("\n]}\n")
        self.f.close()

    def close(self) -> None:
        """Close without finishing (on error: the owner discards the file)."""
        self.f.close()
