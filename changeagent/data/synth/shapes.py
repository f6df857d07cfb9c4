"""Geometry of the hard benchmark: oriented buildings, roads at any angle, and the layouts they form.

Buildings are rotated rectangles (a house with a ridge roof, or a factory with a flat roof) with a
height, so each date can cast its own shadow (`nuisance.shadow_masks`). Roads are polylines (straight,
curved, bent, dead ends with a turning circle). Layouts place many buildings at once: scattered
houses, dense clusters on a grid, factories, rows on one or both sides of a road. Footprints never
touch (a gap of at least one pixel), so connected components still count buildings. Images are
float32 [H, W, 3] in 0..255; coordinates are (x, y) floats, x to the right, y down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

HOUSE_ROOFS = np.array(
    [[150, 150, 156], [214, 212, 206], [160, 72, 56], [72, 102, 160], [92, 92, 98], [190, 122, 72],
     [118, 110, 104], [176, 170, 160]], dtype=np.float32)
FACTORY_ROOFS = np.array([[200, 202, 204], [170, 176, 184], [120, 140, 170], [228, 228, 224]], dtype=np.float32)
LAWN = (104.0, 136.0, 74.0)
SOIL = (172.0, 152.0, 124.0)


@dataclass(eq=False)  # identity: the same building on both dates is the same object
class Building:
    """A rotated rectangle: centre (cx, cy), length `w` along the ridge, depth `d`, `angle` of the ridge."""

    cx: float
    cy: float
    w: float
    d: float
    angle: float
    colour: np.ndarray
    height: float                  # px of shadow per unit `shadow_length` (a taller building, a longer shadow)
    kind: str = "house"            # house | factory
    _mask: np.ndarray | None = field(default=None, repr=False, compare=False)

    def corners(self) -> np.ndarray:
        """float32 [4, 2] (x, y) corners, in order around the rectangle."""
        c, s = np.cos(self.angle), np.sin(self.angle)
        u, v = np.array([c, s]) * self.w / 2, np.array([-s, c]) * self.d / 2
        ctr = np.array([self.cx, self.cy])
        return np.stack([ctr - u - v, ctr + u - v, ctr + u + v, ctr - u + v]).astype(np.float32)

    def mask(self, size: int) -> np.ndarray:
        """bool [size, size] footprint (cached; the label of a changed building is exactly this)."""
        if self._mask is None or self._mask.shape[0] != size:
            canvas = np.zeros((size, size), np.uint8)
            cv2.fillConvexPoly(canvas, np.round(self.corners() * 16).astype(np.int32), 1, lineType=cv2.LINE_8,
                               shift=4)
            self._mask = canvas > 0
        return self._mask

    def grown(self, pad: float) -> Building:
        """The same rectangle `pad` px larger on every side (for gaps, yards and demolition scars)."""
        return Building(self.cx, self.cy, self.w + 2 * pad, self.d + 2 * pad, self.angle, self.colour, self.height,
                        self.kind)

    def recoloured(self, colour: np.ndarray) -> Building:
        return Building(self.cx, self.cy, self.w, self.d, self.angle, colour, self.height, self.kind)


def draw_roof(img: np.ndarray, b: Building) -> None:
    """Paint a roof in place: two faces split along the ridge and a darker rim (house), or a flat roof
    with skylight stripes (factory)."""
    size = img.shape[0]
    m = b.mask(size)
    ys, xs = np.nonzero(m)
    if len(ys) == 0:
        return
    c, s = np.cos(b.angle), np.sin(b.angle)
    along = (xs - b.cx) * c + (ys - b.cy) * s       # along the ridge
    across = -(xs - b.cx) * s + (ys - b.cy) * c     # across it
    shade = np.ones(len(ys), np.float32)
    if b.kind == "factory":
        period = max(3.0, b.w / 8)
        shade[(np.mod(along, period) < 1.0)] = 0.9
    else:
        shade[across < 0] = 0.86
    if m.sum() > 20:
        inner = cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        shade[~inner[ys, xs]] *= 0.8
    img[ys, xs] = b.colour[None, :] * shade[:, None]


def house_size(rng: np.random.Generator, size: int, scale: float = 1.0) -> tuple[float, float]:
    """(length, depth) of a house: about 4-8 % of the tile side times `scale` (0.2-0.6 % of the tile's
    area: small, as in LEVIR), never below 3 px."""
    side = size * scale * rng.uniform(0.04, 0.08)
    aspect = rng.uniform(1.0, 1.6)
    return max(3.0, side * np.sqrt(aspect)), max(3.0, side / np.sqrt(aspect))


def new_house(rng: np.random.Generator, size: int, cx: float, cy: float, angle: float, scale: float = 1.0) -> Building:
    w, d = house_size(rng, size, scale)
    colour = HOUSE_ROOFS[int(rng.integers(len(HOUSE_ROOFS)))] * rng.uniform(0.9, 1.1)
    return Building(cx, cy, w, d, angle, colour.astype(np.float32), size * rng.uniform(0.015, 0.032))


def free(occupied: np.ndarray, b: Building, gap: float) -> bool:
    """True when `b`, grown by `gap`, lies inside the tile and overlaps nothing in `occupied`."""
    size = occupied.shape[0]
    corners = b.corners()
    if corners.min() < 0 or corners.max() > size - 1:
        return False
    g = b.grown(gap).mask(size)
    return not (occupied & g).any() and bool(b.mask(size).any())


def _commit(occupied: np.ndarray, out: list[Building], b: Building) -> None:
    occupied |= b.mask(occupied.shape[0])
    out.append(b)


def gap_px(size: int) -> float:
    return max(1.0, size / 96)


def scatter(rng: np.random.Generator, occupied: np.ndarray, n: int, region: tuple[float, float, float, float],
            angle: float | None = None, scale: float = 1.0, tries: int = 30) -> list[Building]:
    """Up to `n` houses at random spots of `region` (y0, x0, y1, x1); `angle` None: each its own angle."""
    size = occupied.shape[0]
    y0, x0, y1, x1 = region
    out: list[Building] = []
    for _ in range(n):
        for _ in range(tries):
            a = rng.uniform(0, np.pi) if angle is None else angle + rng.normal(0, 0.05)
            b = new_house(rng, size, rng.uniform(x0, x1), rng.uniform(y0, y1), a, scale)
            if free(occupied, b, gap_px(size)):
                _commit(occupied, out, b)
                break
    return out


def cluster(rng: np.random.Generator, occupied: np.ndarray, region: tuple[float, float, float, float],
            max_n: int = 24) -> list[Building]:
    """A dense block of small houses on a rotated grid filling `region` (y0, x0, y1, x1)."""
    size = occupied.shape[0]
    y0, x0, y1, x1 = region
    angle = rng.uniform(0, np.pi)
    w, d = house_size(rng, size, 0.8)
    gap = max(gap_px(size) + 1, size * rng.uniform(0.012, 0.025))
    step_u, step_v = w + gap, d + gap
    c, s = np.cos(angle), np.sin(angle)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    reach = int(np.ceil(max(x1 - x0, y1 - y0) / min(step_u, step_v)))
    colour = HOUSE_ROOFS[int(rng.integers(len(HOUSE_ROOFS)))]
    out: list[Building] = []
    for i in range(-reach, reach + 1):
        for j in range(-reach, reach + 1):
            px, py = cx + i * step_u * c - j * step_v * s, cy + i * step_u * s + j * step_v * c
            if not (x0 <= px <= x1 and y0 <= py <= y1) or rng.random() < 0.12:
                continue
            # a development shares its roof colour, with small variations
            col = (colour * rng.uniform(0.9, 1.1)).astype(np.float32)
            b = Building(px, py, w * rng.uniform(0.95, 1.05), d * rng.uniform(0.95, 1.05), angle, col,
                         size * rng.uniform(0.015, 0.03))
            if free(occupied, b, gap_px(size)):
                _commit(occupied, out, b)
                if len(out) >= max_n:
                    return out
    return out


def factory(rng: np.random.Generator, occupied: np.ndarray, region: tuple[float, float, float, float],
            tries: int = 20) -> list[Building]:
    """One large flat-roofed building (a factory or warehouse, 14-30 % of the tile side) in `region`."""
    size = occupied.shape[0]
    y0, x0, y1, x1 = region
    for _ in range(tries):
        w = size * rng.uniform(0.14, 0.3)
        d = w / rng.uniform(1.2, 2.4)
        angle = rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.25) if rng.random() < 0.6 else rng.uniform(0, np.pi)
        colour = FACTORY_ROOFS[int(rng.integers(len(FACTORY_ROOFS)))] * rng.uniform(0.92, 1.06)
        b = Building(rng.uniform(x0, x1), rng.uniform(y0, y1), w, d, float(angle), colour.astype(np.float32),
                     size * rng.uniform(0.025, 0.05), kind="factory")
        if free(occupied, b, 2 * gap_px(size)):
            out: list[Building] = []
            _commit(occupied, out, b)
            return out
    return []


# -- roads ------------------------------------------------------------------------------------------

@dataclass
class Road:
    """A road: centre polyline `points` float [N, 2] (x, y), `width` px; `end` is a dead end's last point."""

    points: np.ndarray
    width: float
    shape: str                      # straight | curved | bent | dead_end
    end: tuple[float, float] | None = None

    def mask(self, size: int) -> np.ndarray:
        canvas = np.zeros((size, size), np.uint8)
        pts = np.round(self.points * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [pts], False, 1, thickness=max(2, int(round(self.width))), lineType=cv2.LINE_8,
                      shift=4)
        if self.end is not None:  # the turning circle of a dead end
            r = int(round(self.width * 0.9 * 16))
            cv2.circle(canvas, (int(round(self.end[0] * 16)), int(round(self.end[1] * 16))), r, 1, -1,
                       lineType=cv2.LINE_8, shift=4)
        return canvas > 0

    def orientation(self) -> str:
        """vertical | horizontal | diagonal, from the chord of the polyline."""
        dx, dy = self.points[-1] - self.points[0]
        ang = abs(np.degrees(np.arctan2(dy, dx))) % 180
        if ang < 25 or ang > 155:
            return "horizontal"
        if 65 < ang < 115:
            return "vertical"
        return "diagonal"


def _edge_point(rng: np.random.Generator, size: int, side: int) -> np.ndarray:
    """A point just outside side 0 top, 1 right, 2 bottom, 3 left of the tile."""
    t, out = rng.uniform(0.1, 0.9) * size, size * 0.1
    return np.array([(t, -out), (size + out, t), (t, size + out), (-out, t)][side], np.float64)


def road_path(rng: np.random.Generator, size: int, shape: str, through: tuple[float, float] | None = None) -> Road:
    """A new road of `shape`: straight (any angle, optionally through a point), curved (a bezier arc
    between two sides), bent (an L) or dead_end (from an edge to a turning circle inside the tile)."""
    width = size * rng.uniform(0.03, 0.055)
    if shape == "straight":
        p = np.array(through if through is not None else rng.uniform(0.2, 0.8, 2) * size, np.float64)
        ang = rng.uniform(0, np.pi)
        v = np.array([np.cos(ang), np.sin(ang)]) * size * 1.5
        return Road(np.stack([p - v, p + v]), width, shape)
    if shape in ("curved", "bent"):
        s0 = int(rng.integers(4))
        s1 = (s0 + (2 if shape == "curved" and rng.random() < 0.5 else 1 + 2 * int(rng.integers(2)))) % 4
        a, b = _edge_point(rng, size, s0), _edge_point(rng, size, s1)
        ctrl = rng.uniform(0.25, 0.75, 2) * size
        if shape == "bent":  # an L: the corner inside the tile
            return Road(np.stack([a, ctrl, b]), width, shape)
        t = np.linspace(0, 1, 24)[:, None]
        pts = (1 - t) ** 2 * a + 2 * (1 - t) * t * ctrl + t ** 2 * b
        return Road(pts, width, shape)
    # dead end: from one edge to a point 35-70 % into the tile
    side = int(rng.integers(4))
    a = _edge_point(rng, size, side)
    inward = np.array([(0, 1), (-1, 0), (0, -1), (1, 0)][side], np.float64)
    e = a + inward * size * rng.uniform(0.45, 0.8) + rng.normal(0, size * 0.05, 2)
    e = np.clip(e, size * 0.15, size * 0.85)
    return Road(np.stack([a, e]), width, "dead_end", end=(float(e[0]), float(e[1])))


def draw_road(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, tone: float | None = None) -> float:
    """Asphalt or concrete on `mask`, in place; returns the tone so a date can repaint the same road."""
    tone = float(rng.choice([104.0, 122.0, 150.0, 186.0])) if tone is None else tone
    col = np.array([tone, tone, tone + 4], dtype=np.float32)
    img[mask] = col + rng.normal(0, 3, (int(mask.sum()), 1)).astype(np.float32)
    return tone


def row_along(rng: np.random.Generator, occupied: np.ndarray, road: Road, sides: int,
              max_n: int = 12) -> list[Building]:
    """Houses in a row along `road`, facing it, on one side (`sides=1`) or both (`sides=2`)."""
    size = occupied.shape[0]
    pts = road.points
    seg = np.diff(pts, axis=0)
    lens = np.hypot(seg[:, 0], seg[:, 1])
    total = float(lens.sum())
    w, d = house_size(rng, size)
    spacing = w + max(2 * gap_px(size), size * rng.uniform(0.015, 0.03))
    setback = road.width / 2 + d / 2 + max(gap_px(size) + 1, size * rng.uniform(0.01, 0.03))
    side_signs = [1.0, -1.0] if sides == 2 else [1.0 if rng.random() < 0.5 else -1.0]
    colour = HOUSE_ROOFS[int(rng.integers(len(HOUSE_ROOFS)))]
    start = rng.uniform(0, spacing)
    out: list[Building] = []
    for sign in side_signs:
        for dist in np.arange(start, total, spacing):
            k = int(np.searchsorted(np.cumsum(lens), dist))
            k = min(k, len(seg) - 1)
            before = float(np.cumsum(lens)[k] - lens[k])
            t = seg[k] / max(lens[k], 1e-6)
            p = pts[k] + t * (dist - before)
            n = np.array([-t[1], t[0]]) * sign
            c = p + n * setback
            col = (colour * rng.uniform(0.9, 1.1)).astype(np.float32)
            b = Building(float(c[0]), float(c[1]), w * rng.uniform(0.95, 1.05), d, float(np.arctan2(t[1], t[0])), col,
                         size * rng.uniform(0.015, 0.03))
            if free(occupied, b, gap_px(size)):
                _commit(occupied, out, b)
                if len(out) >= max_n:
                    return out
    return out


def cars_on(rng: np.random.Generator, road: np.ndarray, n: int) -> np.ndarray:
    """bool [S, S]: `n` small car-sized blobs on road pixels (a different draw on each date)."""
    size = road.shape[0]
    out = np.zeros_like(road)
    ys, xs = np.nonzero(cv2.erode(road.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    if len(ys) == 0:
        return out
    ln, wd = max(2, int(round(size * 0.03))), max(1, int(round(size * 0.014)))
    for i in rng.integers(len(ys), size=n):
        y, x = int(ys[i]), int(xs[i])
        h, w = (ln, wd) if rng.random() < 0.5 else (wd, ln)
        out[y : y + h, x : x + w] = True
    return out & road
