"""Pictures for people: display-sized A/B, the class-coloured overlay at any opacity, search thumbnails and
a scene overview with result footprints. Everything here works on arrays already read by the service."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from changeagent.inference.outputs import NODATA, NODATA_COLOUR, write_image, write_png

PREVIEW_SIDE = 1024  # long side of the preview images (the mask file itself keeps full resolution)
THUMB_SIDE = 160     # long side of one date in a search thumbnail


def fit(rgb: np.ndarray, side: int, nearest: bool = False) -> np.ndarray:
    """uint8 [H, W, C] (or [H, W]) scaled down so its long side is at most `side`."""
    h, w = rgb.shape[:2]
    f = side / max(h, w)
    if f >= 1:
        return rgb
    size = (max(1, round(w * f)), max(1, round(h * f)))
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BOX
    return np.asarray(Image.fromarray(rgb).resize(size, resample))


def colours(mask: np.ndarray, palette: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """uint8 [H, W] class ids -> uint8 [H, W, 3] palette colours (nodata dark grey)."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = palette
    lut[NODATA] = NODATA_COLOUR
    return lut[mask]


def blend(rgb: np.ndarray, mask: np.ndarray, palette: Sequence[tuple[int, int, int]], opacity: float) -> np.ndarray:
    """uint8 [H, W, 3]: `rgb` with every pixel of a class > 0 mixed with its colour at `opacity` (0..1)."""
    a = float(np.clip(opacity, 0.0, 1.0))
    hit = (mask > 0)[..., None]
    mixed = rgb.astype(np.float32) * (1 - a) + colours(mask, palette).astype(np.float32) * a
    return np.where(hit, mixed + 0.5, rgb).astype(np.uint8)


def write_previews(folder: Path, a_rgb: np.ndarray, b_rgb: np.ndarray, mask: np.ndarray,
                   palette: Sequence[tuple[int, int, int]], opacity: float = 0.55) -> dict[str, Path]:
    """a.png, b.png, classes.png (palette PNG of the preview-sized class map) and overlay.png."""
    a_rgb, b_rgb = fit(a_rgb, PREVIEW_SIDE), fit(b_rgb, PREVIEW_SIDE)
    small = fit(mask, PREVIEW_SIDE, nearest=True)
    if small.shape != b_rgb.shape[:2]:  # rounding of odd sizes: one pixel at most
        small = np.asarray(Image.fromarray(small).resize(b_rgb.shape[1::-1], Image.Resampling.NEAREST))
    paths = {k: folder / f"{k}.png" for k in ("a", "b", "classes", "overlay")}
    write_image(paths["a"], Image.fromarray(a_rgb))
    write_image(paths["b"], Image.fromarray(b_rgb))
    write_png(paths["classes"], small, palette)
    write_image(paths["overlay"], Image.fromarray(blend(b_rgb, small, palette, opacity)))
    return paths


def side_by_side(a_rgb: np.ndarray, b_rgb: np.ndarray, side: int = THUMB_SIDE) -> Image.Image:
    """A | B thumbnail, each date scaled to at most `side` px, a 4 px white gap."""
    a, b = fit(a_rgb, side), fit(b_rgb, side)
    h, w = a.shape[:2]
    canvas = Image.new("RGB", (2 * w + 4, h), (255, 255, 255))
    canvas.paste(Image.fromarray(a), (0, 0))
    canvas.paste(Image.fromarray(b).resize((w, h)), (w + 4, 0))
    return canvas


def footprints(overview: np.ndarray, scale: float, boxes: Sequence[tuple[int, int, int, int, str]]) -> Image.Image:
    """The scene overview with each result window outlined and labelled by its rank.

    `boxes`: (row, col, height, width, label) in full-resolution pixels; `scale` = overview / full.
    """
    im = Image.fromarray(overview).convert("RGB")
    draw = ImageDraw.Draw(im)
    for row, col, h, w, label in boxes:
        x0, y0 = col * scale, row * scale
        x1, y1 = (col + w) * scale, (row + h) * scale
        draw.rectangle([x0, y0, max(x0 + 2, x1), max(y0 + 2, y1)], outline=(255, 0, 255), width=2)
        draw.text((x0 + 3, y0 + 2), label, fill=(255, 0, 255))
    return im
