"""Background land textures and the pseudo-changes between dates (illumination, misregistration).

All images here are float32 [H, W, 3] in 0..255 until the writer clips them to uint8; every helper is
vectorised (OpenCV resizes/blurs, numpy arithmetic) so a 256x256 scene costs a few milliseconds.
"""

from __future__ import annotations

import cv2
import numpy as np

# land types of the background; the names double as the caption words for "on the <land>"
LAND_COLOURS: dict[str, tuple[float, float, float]] = {
    "bareland": (178.0, 160.0, 132.0),
    "grass": (118.0, 142.0, 82.0),
    "woods": (52.0, 82.0, 46.0),
    "field": (150.0, 152.0, 96.0),
}
LANDS = tuple(LAND_COLOURS)


def smooth_noise(rng: np.random.Generator, size: int, cell: float, octaves: int = 2) -> np.ndarray:
    """Fractal value noise, float32 [size, size] with zero mean and unit std.

    `cell` is the feature size in pixels of the coarsest octave; each further octave halves it.
    """
    out = np.zeros((size, size), np.float32)
    amp = 1.0
    for _ in range(octaves):
        n = max(2, int(np.ceil(size / max(cell, 1.0))) + 2)
        grid = rng.standard_normal((n, n)).astype(np.float32)
        big = cv2.resize(grid, (size + 2 * int(cell), size + 2 * int(cell)), interpolation=cv2.INTER_CUBIC)
        # crop the middle: the borders of a cubic upsample are smeared
        off = int(cell) // 2
        out += amp * big[off : off + size, off : off + size]
        cell /= 2.0
        amp *= 0.5
    out -= out.mean()
    return out / (out.std() + 1e-6)


def texture(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """A full-tile texture of one land type, float32 [size, size, 3]."""
    tint = rng.uniform(0.9, 1.1) * rng.uniform(0.96, 1.04, 3)
    base = np.asarray(LAND_COLOURS[kind], np.float32) * tint.astype(np.float32)
    fine = rng.standard_normal((size, size)).astype(np.float32)
    if kind == "woods":
        # tree crowns: bright blobs with dark gaps between them
        crowns = smooth_noise(rng, size, max(2.0, size / 24), octaves=1)
        shade = np.clip(0.75 + 0.35 * crowns + 0.05 * fine, 0.35, 1.4)
    elif kind == "field":
        # crop rows at a random angle, with a slow brightness swell
        theta = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        period = max(3.0, size / rng.uniform(10, 18))
        rows = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
        shade = 1.0 + 0.12 * rows + 0.08 * smooth_noise(rng, size, size / 3, 1) + 0.03 * fine
    else:
        shade = 1.0 + 0.08 * smooth_noise(rng, size, max(2.0, size / 6)) + 0.04 * fine
    return base[None, None, :] * shade[..., None]


def land_map(rng: np.random.Generator, size: int, kinds: tuple[str, ...]) -> np.ndarray:
    """Which land type covers each pixel: int8 [size, size] indices into `kinds` (smooth blobs)."""
    if len(kinds) == 1:
        return np.zeros((size, size), np.int8)
    fields = np.stack([smooth_noise(rng, size, size / 2.5, 1) for _ in kinds])
    fields[0] += 0.6  # the first kind dominates the scene
    return np.argmax(fields, axis=0).astype(np.int8)


def background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Textured land: (image float32 [S, S, 3], land index int8 [S, S], the kinds used)."""
    n = int(rng.integers(1, 3))
    kinds = tuple(rng.choice(LANDS, size=n, replace=False).tolist())
    lmap = land_map(rng, size, kinds)
    img: np.ndarray = np.zeros((size, size, 3), np.float32)
    for i, k in enumerate(kinds):
        sel = lmap == i
        if sel.any():
            img[sel] = texture(rng, size, k)[sel]
    # soft seams between land patches
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    return img, lmap, kinds


def land_under(lmap: np.ndarray, kinds: tuple[str, ...], region: np.ndarray) -> str:
    """The land type covering most of `region` (bool [H, W])."""
    counts = np.bincount(lmap[region].astype(np.int64), minlength=len(kinds))
    return kinds[int(np.argmax(counts))]


def pseudo_change(rng: np.random.Generator, img: np.ndarray, strength: float = 1.0, shift: bool = True) -> np.ndarray:
    """The same ground seen on another date: per-channel gain/offset, gamma and a sub-pixel shift.

    These are the unlabelled differences a change detector must ignore; float32 [H, W, 3] in, out.
    """
    size = img.shape[0]
    # mostly a common brightness change, with a small colour cast
    gain = rng.uniform(1 - 0.12 * strength, 1 + 0.12 * strength) * rng.uniform(0.96, 1.04, 3)
    offset = rng.uniform(-10 * strength, 10 * strength) + rng.uniform(-4 * strength, 4 * strength, 3)
    gain, offset = gain.astype(np.float32), offset.astype(np.float32)
    gamma = float(rng.uniform(1 - 0.1 * strength, 1 + 0.1 * strength))
    out = 255.0 * (np.clip(img, 0, 255) / 255.0) ** gamma
    out = out * gain + offset
    if not shift:
        return out
    # misregistration of up to ~1 px at 64 px and ~2 px at 256 px
    max_shift = strength * max(0.5, size / 128)
    dx, dy = rng.uniform(-max_shift, max_shift, 2)
    m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
    return cv2.warpAffine(out, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def sensor_noise(rng: np.random.Generator, img: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    """Independent per-date sensor noise, then clip to uint8 [H, W, 3]."""
    noisy = img + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
