"""How one date of the hard benchmark is seen: sun, season, radiometry, haze, blur, misregistration.

Everything here is an *unlabelled* difference between the two dates of a pair (a pseudo-change a
change detector must ignore). A `DateLook` holds one date's draw; `render` turns a scene's ground,
vegetation mask and buildings into that date's uint8 image. Images are float32 [H, W, 3] in 0..255
until the final clip; every step is vectorised (numpy / OpenCV), the only loop runs over buildings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from changeagent.data.synth.shapes import Building, draw_roof

# vegetation colour per season, as per-channel factors on the summer texture (R, G, B); "dry" and
# "autumn" turn grass towards the colour of bare land, which is exactly the confusion real archives hold
SEASONS: dict[str, tuple[float, float, float]] = {
    "summer": (1.0, 1.0, 1.0),
    "spring": (0.9, 1.12, 0.86),
    "dry": (1.16, 1.02, 0.74),
    "autumn": (1.3, 0.96, 0.62),
    "winter": (1.02, 0.9, 0.86),
}
HAZE_COLOUR = np.array([206.0, 210.0, 218.0], np.float32)
MAX_SHIFT_PX = 2.0  # misregistration of date A against the label grid, in pixels at any tile size


@dataclass(frozen=True)
class DateLook:
    """One date's acquisition: illumination, sensor and atmosphere (all unlabelled)."""

    gain: float                  # overall brightness factor
    cast: tuple[float, ...]      # per-channel gain (colour cast), R G B
    bias: tuple[float, ...]      # per-channel offset in grey levels
    gamma: float                 # tone curve exponent
    haze: float                  # haze strength at the hazy edge of the tile (0: none)
    haze_angle: float            # direction (radians) towards which the haze thickens
    season: str                  # key of SEASONS
    season_mix: float            # 0..1, how far the vegetation has gone towards the season's colour
    sun_azimuth: float           # direction (radians, image x right / y down) the shadows point to
    shadow_length: float         # shadow length per unit of building height (1 / tan(elevation))
    shadow_dark: float           # factor on the ground inside a shadow
    blur: float                  # Gaussian sigma in px (sensor / resampling sharpness)
    noise: float                 # sensor noise sigma in grey levels


def draw_look(rng: np.random.Generator, sun_base: float) -> DateLook:
    """A random date; `sun_base` is the scene's mean shadow direction, each date turns it by up to ~50°."""
    elevation = np.deg2rad(rng.uniform(28.0, 68.0))
    return DateLook(
        gain=float(rng.uniform(0.75, 1.25)),
        cast=tuple(float(x) for x in rng.uniform(0.9, 1.1, 3)),
        bias=tuple(float(x) for x in rng.uniform(-18.0, 18.0) + rng.uniform(-6.0, 6.0, 3)),
        gamma=float(rng.uniform(0.78, 1.28)),
        haze=float(rng.uniform(0.08, 0.38)) if rng.random() < 0.55 else 0.0,
        haze_angle=float(rng.uniform(0.0, 2 * np.pi)),
        season=str(rng.choice(list(SEASONS))),
        season_mix=float(rng.uniform(0.4, 1.0)),
        sun_azimuth=float(sun_base + rng.uniform(-0.9, 0.9)),
        shadow_length=float(1.0 / np.tan(elevation)),
        shadow_dark=float(rng.uniform(0.42, 0.62)),
        blur=float(rng.uniform(0.0, 0.9)),
        noise=float(rng.uniform(1.5, 4.5)),
    )


def draw_shift(rng: np.random.Generator) -> tuple[float, float]:
    """(dx, dy) misregistration of date A: integer pixels 40 % of the time, else sub-pixel; |d| <= 2 px."""
    if rng.random() < 0.4:
        d = rng.integers(-int(MAX_SHIFT_PX), int(MAX_SHIFT_PX) + 1, 2)
        if not d.any():
            d[int(rng.integers(2))] = 1 if rng.random() < 0.5 else -1
        return float(d[0]), float(d[1])
    dx, dy = rng.uniform(-MAX_SHIFT_PX, MAX_SHIFT_PX, 2)
    return float(dx), float(dy)


def apply_season(img: np.ndarray, veg: np.ndarray, look: DateLook) -> None:
    """Recolour the vegetation pixels (bool [H, W]) of `img` towards the date's season, in place."""
    factor = 1.0 + look.season_mix * (np.asarray(SEASONS[look.season], np.float32) - 1.0)
    img[veg] *= factor


def shadow_masks(buildings: Sequence[Building], look: DateLook, size: int) -> np.ndarray:
    """bool [S, S]: ground shaded by `buildings` under the date's sun (their roofs excluded).

    A box footprint swept along the sun vector covers the convex hull of the footprint and its
    translate, so each building costs one `fillConvexPoly`.
    """
    canvas = np.zeros((size, size), np.uint8)
    roofs = np.zeros((size, size), np.uint8)
    ux, uy = np.cos(look.sun_azimuth), np.sin(look.sun_azimuth)
    for b in buildings:
        corners = b.corners()
        offset = np.array([ux, uy], np.float32) * b.height * look.shadow_length
        hull = cv2.convexHull(np.concatenate([corners, corners + offset]).astype(np.float32))
        cv2.fillConvexPoly(canvas, np.round(hull * 16).astype(np.int32), 1, lineType=cv2.LINE_8, shift=4)
        roofs |= b.mask(size).astype(np.uint8)
    return (canvas > 0) & (roofs == 0)


def radiometry(img: np.ndarray, look: DateLook) -> np.ndarray:
    """Tone curve, gain, colour cast, offset and a haze gradient across the tile: float32 [H, W, 3]."""
    size = img.shape[0]
    out = 255.0 * (np.clip(img, 0, 255) / 255.0) ** look.gamma
    out = out * (look.gain * np.asarray(look.cast, np.float32)) + np.asarray(look.bias, np.float32)
    if look.haze > 0:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
        ramp = (xx - 0.5) * np.cos(look.haze_angle) + (yy - 0.5) * np.sin(look.haze_angle)
        ramp = np.clip(ramp / 1.42 + 0.5, 0.0, 1.0)  # 0 at one corner of the direction, 1 at the other
        h = (look.haze * ramp)[..., None]
        out = out * (1.0 - h) + HAZE_COLOUR * h
    return out.astype(np.float32)


def shift_image(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """`img` moved by (dx, dy) px (content at x appears at x + dx); borders reflected."""
    size_y, size_x = img.shape[:2]
    m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
    return cv2.warpAffine(img, m, (size_x, size_y), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def render(rng: np.random.Generator, ground: np.ndarray, veg: np.ndarray, buildings: Sequence[Building],
           look: DateLook, shift: tuple[float, float] | None = None,
           cars: np.ndarray | None = None) -> np.ndarray:
    """One date's image, uint8 [S, S, 3]: season on `veg`, cast shadows, roofs, `cars`, then the
    sensor (radiometry, haze, blur), the misregistration `shift` and noise.

    ground float32 [S, S, 3] (land, roads, yards of this date); cars bool [S, S] (paint, or None).
    """
    size = ground.shape[0]
    img = ground.copy()
    apply_season(img, veg, look)
    shade = shadow_masks(buildings, look, size)
    img[shade] *= look.shadow_dark
    if cars is not None and cars.any():
        tone = rng.choice([40.0, 70.0, 200.0, 230.0], size=int(cars.sum()))
        img[cars] = tone[:, None].astype(np.float32) * np.array([1.0, 1.0, 1.04], np.float32)
    for b in buildings:
        draw_roof(img, b)
    img = radiometry(img, look)
    if look.blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), look.blur)
    if shift is not None:
        img = shift_image(img, *shift)
    img = img + rng.normal(0.0, look.noise, img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
