"""Compose one bi-temporal pair: background, unchanged context, the changes, and the facts for captions.

`levir_pair` draws building/road changes with a 3-class mask (0 background, 1 road, 2 building);
`second_pair` draws land-cover transitions with two 7-class maps (SPEC §1.2 ids, 0 = unchanged).
Each returns a `Pair` whose `events` are exactly what was drawn, so captions can be written from them.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from changeagent.data.synth import objects as ob
from changeagent.data.synth import terrain as tr


@dataclass
class Event:
    """One drawn change, in words the caption grammar needs."""

    kind: str                       # houses | demolish | road | road_houses | cover
    cell: tuple[int, int]           # 3x3 grid cell (row, col) of the change; (1, 1) is the middle
    count: int = 0                  # buildings drawn (0 for roads and area changes)
    land: str | None = None         # land type under the change on date A (terrain.LANDS)
    along_road: bool = False        # new houses placed beside an existing road
    road: str | None = None         # vertical | horizontal | bent
    src: str | None = None          # SECOND class on date A
    dst: str | None = None          # SECOND class on date B


@dataclass
class Pair:
    image_a: np.ndarray             # uint8 [S, S, 3]
    image_b: np.ndarray             # uint8 [S, S, 3]
    label: np.ndarray | None = None  # uint8 [S, S] LEVIR classes
    sem_a: np.ndarray | None = None  # uint8 [S, S] SECOND classes on date A (0 where unchanged)
    sem_b: np.ndarray | None = None
    events: list[Any] = field(default_factory=list)  # Event (default benchmark) or hard.HardEvent
    meta: dict[str, Any] = field(default_factory=dict)  # hard benchmark: the nuisances drawn (tests, docs)


# SECOND class ids (constants.SECOND_CLASSES order) and the LEVIR land each background type shows
SECOND_ID = {"unchanged": 0, "water": 1, "ground": 2, "low_vegetation": 3, "tree": 4, "building": 5, "playground": 6}
LAND_CLASS = {"bareland": "ground", "grass": "low_vegetation", "woods": "tree", "field": "low_vegetation"}
CLASS_LAND = {"ground": "bareland", "low_vegetation": "grass", "tree": "woods"}
TRANSITIONS = (
    ("low_vegetation", "ground"), ("tree", "ground"), ("ground", "building"), ("low_vegetation", "building"),
    ("ground", "water"), ("low_vegetation", "water"), ("ground", "playground"), ("building", "ground"),
    ("ground", "low_vegetation"), ("tree", "building"), ("water", "ground"),
)


def cell_bounds(size: int, cell: tuple[int, int], margin: float = 0.06) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) of a 3x3 grid cell, shrunk by `margin` of the tile so centroids stay inside."""
    t, m = size / 3, size * margin
    r, c = cell
    return int(r * t + m), int(c * t + m), int((r + 1) * t - m), int((c + 1) * t - m)


def cell_of(mask: np.ndarray) -> tuple[int, int]:
    """3x3 grid cell holding the centroid of a bool [S, S] mask."""
    ys, xs = np.nonzero(mask)
    s = mask.shape[0]
    return min(2, int(ys.mean() * 3 / s)), min(2, int(xs.mean() * 3 / s))


def _union(boxes: list[ob.Box], size: int) -> np.ndarray:
    m = np.zeros((size, size), bool)
    for b in boxes:
        m[b.y0 : b.y1, b.x0 : b.x1] = True
    return m


def _random_cell(rng: np.random.Generator, taken: AbstractSet[tuple[int, int]] = frozenset()) -> tuple[int, int]:
    free = [(r, c) for r in range(3) for c in range(3) if (r, c) not in taken]
    return free[int(rng.integers(len(free)))]


def _new_road(rng: np.random.Generator, size: int, avoid: np.ndarray, old_road: np.ndarray | None = None,
              tries: int = 8):
    """A road missing `avoid` and at most crossing `old_road` (never running beside it).

    Returns (mask, kind, cell) or None.
    """
    width = max(2, int(round(size * rng.uniform(0.035, 0.06))))
    near_old = None
    if old_road is not None:
        near_old = cv2.dilate(old_road.astype(np.uint8), np.ones((2 * width + 1,) * 2, np.uint8)) > 0
    for _ in range(tries):
        kind = str(rng.choice(["vertical", "horizontal", "bent"], p=[0.4, 0.4, 0.2]))
        lane = int(rng.integers(4 if kind == "bent" else 3))
        mask = ob.road_mask(size, ob.road_points(rng, size, kind, lane), width)
        if avoid[mask].any():
            continue
        # a perpendicular crossing overlaps the widened old road by about 3 w^2; a parallel one by far more
        if near_old is not None and (mask & near_old).sum() > 4 * width * width + 4 * width:
            continue
        if kind == "vertical":
            cell = (1, lane)
        elif kind == "horizontal":
            cell = (lane, 1)
        else:
            cell = (2 * (lane // 2), 2 * (lane % 2))
        return mask, kind, cell
    return None


def _finish(rng: np.random.Generator, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-changes: date A gets illumination + misregistration, date B only illumination.

    B stays on the label grid (labels are drawn in B's frame), so only A is shifted.
    """
    a = tr.pseudo_change(rng, a, strength=1.0)
    b = tr.pseudo_change(rng, b, strength=0.6, shift=False)
    return tr.sensor_noise(rng, a), tr.sensor_noise(rng, b)


def _context(rng: np.random.Generator, size: int):
    """Background with unchanged context shared by both dates: (img, lmap, kinds, occupied, road)."""
    img, lmap, kinds = tr.background(rng, size)
    occupied = np.zeros((size, size), bool)
    road = None
    if rng.random() < 0.35:
        found = _new_road(rng, size, occupied)
        if found is not None:
            road = found[0]
            ob.draw_road(rng, img, road)
            occupied |= road
    if rng.random() < 0.4:
        for box in ob.place_houses(rng, occupied, int(rng.integers(1, 4)), (0, 0, size, size)):
            ob.draw_building(rng, img, box)
    return img, lmap, kinds, occupied, road


def levir_pair(rng: np.random.Generator, size: int, change: bool) -> Pair:
    """A LEVIR-MCI style pair; label uint8 [S, S] with 0 background, 1 road, 2 building."""
    base, lmap, kinds, occupied, old_road = _context(rng, size)
    a, b = base.copy(), base.copy()
    label = np.zeros((size, size), np.uint8)
    events: list[Event] = []
    # a change that does not fit (tiny tiles, crowded scenes) is replaced by another kind
    for _ in range(8 if change else 0):
        kind = str(rng.choice(["houses", "road", "road_houses", "demolish"], p=[0.4, 0.2, 0.25, 0.15]))
        ev = _levir_change(rng, kind, a, b, label, lmap, kinds, occupied, old_road)
        if ev is not None:
            events.append(ev)
            break
    if rng.random() < 0.3:
        # seasonal yellowing of vegetation on date B: a pseudo-change, not labelled
        veg = np.isin(lmap, [i for i, k in enumerate(kinds) if k in ("grass", "woods", "field")])
        b[veg & ~occupied] *= np.array([1.08, 1.0, 0.82], dtype=np.float32)
    img_a, img_b = _finish(rng, a, b)
    return Pair(img_a, img_b, label=label, events=events)


def _levir_change(rng, kind, a, b, label, lmap, kinds, occupied, old_road) -> Event | None:
    """Draw one change of `kind` into a / b / label (in place); None when it does not fit."""
    size = label.shape[0]
    if kind == "houses":
        n = int(rng.choice([1, 1, 2, 2, 3, 3, 4, 5, 6]))
        along = old_road is not None and rng.random() < 0.5
        if along:
            boxes = ob.houses_along(rng, occupied, old_road, n)
        else:
            # a cluster of many houses is made of smaller ones, so it still fits its cell
            boxes = ob.place_houses(rng, occupied, n, cell_bounds(size, _random_cell(rng)),
                                    scale=0.65 if n >= 4 else 1.0)
        if not boxes:
            return None
        m = _union(boxes, size)
        for box in boxes:
            ob.draw_building(rng, b, box)
        label[m] = 2
        return Event("houses", cell_of(m), len(boxes), tr.land_under(lmap, kinds, m), along)
    if kind == "demolish":
        boxes = ob.place_houses(rng, occupied, int(rng.choice([1, 1, 2, 3])), cell_bounds(size, _random_cell(rng)))
        if not boxes:
            return None
        m = _union(boxes, size)
        for box in boxes:
            ob.draw_building(rng, a, box)
            ob.clear_to_soil(rng, b, box)
        label[m] = 2
        return Event("demolish", cell_of(m), len(boxes), tr.land_under(lmap, kinds, m))
    # a new road may cross an old one, never a house
    found = _new_road(rng, size, occupied if old_road is None else occupied & ~old_road, old_road)
    if found is None or (old_road is not None and not (found[0] & ~old_road).any()):
        return None
    road, rkind, cell = found
    if old_road is not None:
        road = road & ~old_road  # crossing an old road changes nothing there
    land = tr.land_under(lmap, kinds, road)
    occupied |= road
    ob.draw_road(rng, b, road)
    label[road] = 1
    boxes = ob.houses_along(rng, occupied, road, int(rng.integers(2, 5))) if kind == "road_houses" else []
    for box in boxes:
        ob.draw_building(rng, b, box)
        label[box.y0 : box.y1, box.x0 : box.x1] = 2
    return Event("road_houses" if boxes else "road", cell, len(boxes), land, road=rkind)


def _class_texture(rng: np.random.Generator, size: int, cls: str) -> np.ndarray:
    if cls == "water":
        tone = np.array([44, 74, 104], dtype=np.float32) * rng.uniform(0.85, 1.15)
        return tone + 4 * tr.smooth_noise(rng, size, size / 4)[..., None]
    return tr.texture(rng, size, CLASS_LAND[cls])


def second_pair(rng: np.random.Generator, size: int, change: bool) -> Pair:
    """A SECOND-CC style pair; sem_a/sem_b uint8 [S, S] class ids on changed pixels, 0 elsewhere."""
    base, lmap, kinds, occupied, _ = _context(rng, size)
    a, b = base.copy(), base.copy()
    sem_a, sem_b = np.zeros((size, size), np.uint8), np.zeros((size, size), np.uint8)
    events: list[Event] = []
    claimed = occupied.copy()
    taken: set[tuple[int, int]] = set()
    wanted = int(rng.choice([1, 1, 2])) if change else 0
    for _ in range(4 * wanted):
        if len(events) == wanted:
            break
        src, dst = TRANSITIONS[int(rng.integers(len(TRANSITIONS)))]
        cell = _random_cell(rng, taken)
        taken.add(cell)
        y0, x0, y1, x1 = cell_bounds(size, cell)
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        # the stage: a patch of the source cover around the change, the same on both dates
        stage_cls = src if src not in ("building", "water") else "ground"
        tex = _class_texture(rng, size, stage_cls)
        if dst in ("building", "playground") or src == "building":
            stage = ob.blob(rng, size, cy, cx, size / 5.5) & ~claimed
            a[stage], b[stage] = tex[stage], tex[stage]
        count = 0
        if "building" in (src, dst):
            boxes = ob.place_houses(rng, claimed, int(rng.choice([1, 2, 2, 3, 4])), (y0, x0, y1, x1))
            region, count = _union(boxes, size), len(boxes)
            for box in boxes:
                if dst == "building":
                    a[box.y0 : box.y1, box.x0 : box.x1] = tex[box.y0 : box.y1, box.x0 : box.x1]
                    ob.draw_building(rng, b, box)
                else:
                    ob.draw_building(rng, a, box)
                    ob.clear_to_soil(rng, b, box)
        elif dst == "playground":
            h, w = int((y1 - y0) * rng.uniform(0.6, 0.95)), int((x1 - x0) * rng.uniform(0.6, 0.95))
            box = ob.Box(int(cy - h / 2), int(cx - w / 2), int(cy - h / 2) + h, int(cx - w / 2) + w)
            region = box.mask(size)
            if (region & claimed).any():
                region[:] = False
            else:
                a[region] = tex[region]
                ob.draw_playground(rng, b, box)
        else:
            region = ob.blob(rng, size, cy, cx, size / 6.5) & ~claimed
            ta, tb = _class_texture(rng, size, src), _class_texture(rng, size, dst)
            a[region], b[region] = ta[region], tb[region]
        if not region.any():
            continue
        claimed |= region
        sem_a[region], sem_b[region] = SECOND_ID[src], SECOND_ID[dst]
        events.append(Event("cover", cell_of(region), count, src=src, dst=dst))
    img_a, img_b = _finish(rng, a, b)
    return Pair(img_a, img_b, sem_a=sem_a, sem_b=sem_b, events=events)
