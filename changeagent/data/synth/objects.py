"""Objects drawn onto a tile: buildings with roofs and shadows, road strips, land-cover patches.

Every drawing works on whole arrays (slices, OpenCV polylines, boolean masks); the only Python
loops run over objects, never over pixels. Images are float32 [H, W, 3] in 0..255.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

ROOF_COLOURS = np.array(
    [[150, 150, 156], [214, 212, 206], [160, 72, 56], [72, 102, 160], [92, 92, 98], [190, 122, 72]],
    dtype=np.float32,
)
SOIL = (172.0, 152.0, 124.0)


@dataclass(frozen=True)
class Box:
    """A building footprint: rows y0..y1-1, columns x0..x1-1."""

    y0: int
    x0: int
    y1: int
    x1: int

    def mask(self, size: int) -> np.ndarray:
        m = np.zeros((size, size), bool)
        m[self.y0 : self.y1, self.x0 : self.x1] = True
        return m


def _free(occupied: np.ndarray, box: Box, gap: int) -> bool:
    s = occupied.shape[0]
    y0, x0 = max(0, box.y0 - gap), max(0, box.x0 - gap)
    y1, x1 = min(s, box.y1 + gap), min(s, box.x1 + gap)
    return not occupied[y0:y1, x0:x1].any()


def house_side(rng: np.random.Generator, size: int, scale: float = 1.0) -> tuple[int, int]:
    """(height, width) of one house, about 7-13 % of the tile times `scale`, never below 3 px."""
    side = max(3.0, size * scale * rng.uniform(0.07, 0.13))
    aspect = rng.uniform(0.7, 1.4)
    return max(3, int(round(side * aspect))), max(3, int(round(side / aspect)))


def place_houses(
    rng: np.random.Generator, occupied: np.ndarray, n: int, region: tuple[int, int, int, int], tries: int = 40,
    scale: float = 1.0,
) -> list[Box]:
    """Up to `n` non-touching footprints inside `region` (y0, x0, y1, x1); marks them in `occupied`."""
    size = occupied.shape[0]
    y0, x0, y1, x1 = region
    out: list[Box] = []
    for _ in range(n):
        for _ in range(tries):
            h, w = house_side(rng, size, scale)
            if y1 - y0 <= h or x1 - x0 <= w:
                continue
            by, bx = int(rng.integers(y0, y1 - h)), int(rng.integers(x0, x1 - w))
            box = Box(by, bx, by + h, bx + w)
            if _free(occupied, box, gap=max(1, size // 64)):
                occupied[box.y0 : box.y1, box.x0 : box.x1] = True
                out.append(box)
                break
    return out


def houses_along(
    rng: np.random.Generator, occupied: np.ndarray, road: np.ndarray, n: int, tries: int = 60
) -> list[Box]:
    """Up to `n` footprints next to the road mask `road` (bool [H, W]), not on it."""
    size = occupied.shape[0]
    near = cv2.dilate(road.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(2, size // 20)) > 0
    ys, xs = np.nonzero(near & ~road)
    out: list[Box] = []
    if len(ys) == 0:
        return out
    for _ in range(n):
        for _ in range(tries):
            h, w = house_side(rng, size)
            i = int(rng.integers(len(ys)))
            by, bx = int(ys[i]) - h // 2, int(xs[i]) - w // 2
            if by < 0 or bx < 0 or by + h > size or bx + w > size:
                continue
            box = Box(by, bx, by + h, bx + w)
            if not road[box.y0 : box.y1, box.x0 : box.x1].any() and _free(occupied, box, max(1, size // 64)):
                occupied[box.y0 : box.y1, box.x0 : box.x1] = True
                out.append(box)
                break
    return out


def draw_building(rng: np.random.Generator, img: np.ndarray, box: Box) -> None:
    """Paint a roof (colour, ridge, darker rim) and its shadow towards the bottom right, in place."""
    size = img.shape[0]
    s = max(1, int(round(size * 0.014 * rng.uniform(0.7, 1.4))))
    sh = np.zeros((size, size), bool)
    sh[min(size, box.y0 + s) : min(size, box.y1 + s), min(size, box.x0 + s) : min(size, box.x1 + s)] = True
    sh[box.y0 : box.y1, box.x0 : box.x1] = False
    img[sh] *= 0.55
    roof = ROOF_COLOURS[int(rng.integers(len(ROOF_COLOURS)))] * rng.uniform(0.9, 1.1)
    h, w = box.y1 - box.y0, box.x1 - box.x0
    patch = np.broadcast_to(roof, (h, w, 3)).copy()
    # two roof faces: one side a little darker, split along the longer axis (the ridge)
    if h >= w:
        patch[:, : w // 2] *= 0.88
    else:
        patch[: h // 2] *= 0.88
    if h > 4 and w > 4:
        rim = np.ones((h, w), bool)
        rim[1:-1, 1:-1] = False
        patch[rim] *= 0.8
    img[box.y0 : box.y1, box.x0 : box.x1] = patch


def clear_to_soil(rng: np.random.Generator, img: np.ndarray, box: Box) -> None:
    """Demolition: the footprint and its shadow become rough bare soil, in place."""
    size = img.shape[0]
    pad = max(1, int(round(size * 0.03)))
    y0, x0 = max(0, box.y0 - 1), max(0, box.x0 - 1)
    y1, x1 = min(size, box.y1 + pad), min(size, box.x1 + pad)
    noise = rng.normal(0, 8, (y1 - y0, x1 - x0, 1)).astype(np.float32)
    img[y0:y1, x0:x1] = np.array(SOIL, dtype=np.float32) * rng.uniform(0.9, 1.05) + noise


def road_points(rng: np.random.Generator, size: int, kind: str, lane: int) -> np.ndarray:
    """Centre line of a road as int32 [N, 2] (x, y) points, reaching past the tile edges.

    kind: "vertical" / "horizontal" (straight, in third `lane` 0..2 of the tile) or "bent" (an L
    turning in the quadrant `lane` 0..3).
    """
    third = size / 3
    c = int((lane + 0.5) * third + rng.uniform(-0.25, 0.25) * third)
    e = size + size // 8
    if kind == "vertical":
        pts = [(c, -size // 8), (c + int(rng.integers(-size // 16, size // 16 + 1)), e)]
    elif kind == "horizontal":
        pts = [(-size // 8, c), (e, c + int(rng.integers(-size // 16, size // 16 + 1)))]
    else:
        qy, qx = divmod(lane, 2)
        cx = int(size * (0.3 + 0.4 * qx + rng.uniform(-0.08, 0.08)))
        cy = int(size * (0.3 + 0.4 * qy + rng.uniform(-0.08, 0.08)))
        # the L opens towards the nearest two edges, so the bend sits inside the quadrant
        ex = -size // 8 if qx == 0 else e
        ey = -size // 8 if qy == 0 else e
        pts = [(cx, ey), (cx, cy), (ex, cy)]
    return np.array(pts, dtype=np.int32)


def road_mask(size: int, points: np.ndarray, width: int) -> np.ndarray:
    """bool [size, size]: the strip of `width` px around the polyline `points`."""
    canvas = np.zeros((size, size), np.uint8)
    cv2.polylines(canvas, [points.reshape(-1, 1, 2)], False, 1, thickness=max(2, width), lineType=cv2.LINE_8)
    return canvas > 0


def draw_road(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> None:
    """Asphalt or concrete on `mask`, with a faint kerb blur, in place."""
    tone = float(rng.choice([112.0, 128.0, 184.0]))
    col = np.array([tone, tone, tone + 4], dtype=np.float32) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    noise = rng.normal(0, 4, (int(mask.sum()), 1)).astype(np.float32)
    img[mask] = col + noise


def blob(rng: np.random.Generator, size: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """An irregular patch (bool [size, size]) around (cy, cx), about `radius` px across each way."""
    from changeagent.data.synth.terrain import smooth_noise

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ry, rx = radius * rng.uniform(0.7, 1.3), radius * rng.uniform(0.7, 1.3)
    d = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    wobble = smooth_noise(rng, size, max(2.0, radius / 1.5), 1)
    return d + 0.25 * wobble < 1.0


def draw_playground(rng: np.random.Generator, img: np.ndarray, box: Box) -> None:
    """A sports field: red-brown running track around a green pitch, in place."""
    h, w = box.y1 - box.y0, box.x1 - box.x0
    patch = np.empty((h, w, 3), np.float32)
    patch[:] = np.array([176, 84, 64], dtype=np.float32) * rng.uniform(0.92, 1.08)
    t = max(1, min(h, w) // 5)
    if h > 2 * t and w > 2 * t:
        patch[t:-t, t:-t] = np.array([70, 150, 80], dtype=np.float32) * rng.uniform(0.92, 1.08)
    img[box.y0 : box.y1, box.x0 : box.x1] = patch
