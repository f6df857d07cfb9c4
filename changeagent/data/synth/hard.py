"""The hard benchmark's LEVIR-MCI pairs (`data synth --difficulty hard`), and the scene both layouts share.

What the default benchmark lacks and real archives have: per-date radiometry, haze, seasons and up to
2 px of misregistration (`nuisance`); shadows that move with the sun; oriented buildings in many
layouts (scattered houses, dense clusters, factories, rows on one or both sides of a new road);
roads at any angle (curves, bends, crossings, dead ends); demolitions; unlabelled side effects of
construction (yards, cleared trees), re-roofed buildings and cars; small buildings (most under 1 %
of the tile); and in the training split about 5 % of pairs whose label and captions disagree, as in
LEVIR-MCI (SPEC §1.1). Labels stay exact for what they cover: road pixels (1) and building
footprints (2) that changed; shadows, yards, clearings, cars and roof colours are never labelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from changeagent.data.synth import nuisance as nu
from changeagent.data.synth import shapes as sh
from changeagent.data.synth import terrain as tr
from changeagent.data.synth.scenes import Pair, cell_bounds, cell_of

VEG_LANDS = ("grass", "woods", "field")
DATES = ("a", "b")
DISAGREE_P = 0.1  # per change pair of the training split: about half the pairs change, so ~5 % of all


@dataclass
class HardEvent:
    """One drawn change, in the words the hard grammar (`hard_captions`) needs."""

    kind: str                       # houses | factory | demolish | road | crossing | road_rows | cover
    cell: tuple[int, int]           # 3x3 grid cell of the change's centroid (a dead end: its end)
    count: int = 0                  # buildings drawn
    land: str | None = None         # land type under the change on date A (terrain.LANDS)
    layout: str = "cell"            # houses: cell | scattered | cluster | along_old
    road: str | None = None         # straight | curved | bent | dead_end
    orient: str | None = None       # vertical | horizontal | diagonal (straight roads)
    sides: int = 0                  # road_rows: houses on one or both sides of the new road
    crosses_old: bool = False       # a new road crossing an existing one
    cleared: str | None = None      # vegetation removed for the construction (unlabelled, may be captioned)
    big: bool = False               # a factory (demolish) / large building
    src: str | None = None          # SECOND class on date A
    dst: str | None = None          # SECOND class on date B


@dataclass
class Scene:
    """Both dates of one place while they are being drawn; everything shared starts shared."""

    size: int
    lmap: np.ndarray
    kinds: tuple[str, ...]
    ground: dict[str, np.ndarray]                       # per date float32 [S, S, 3]: land, roads, yards
    veg: dict[str, np.ndarray]                          # per date bool [S, S]: pixels that follow the season
    buildings: dict[str, list[sh.Building]] = field(default_factory=lambda: {"a": [], "b": []})
    roads: dict[str, np.ndarray] = field(default_factory=dict)  # per date bool [S, S]
    old_roads: list[sh.Road] = field(default_factory=list)
    occupied: np.ndarray | None = None                  # footprints and roads of either date
    footprints: np.ndarray | None = None                # building footprints of either date

    @classmethod
    def new(cls, rng: np.random.Generator, size: int) -> Scene:
        base, lmap, kinds = tr.background(rng, size)
        veg = np.isin(lmap, [i for i, k in enumerate(kinds) if k in VEG_LANDS])
        zeros = np.zeros((size, size), bool)
        sc = cls(size, lmap, kinds, {d: base.copy() for d in DATES}, {d: veg.copy() for d in DATES})
        sc.roads = {d: zeros.copy() for d in DATES}
        sc.occupied, sc.footprints = zeros.copy(), zeros.copy()
        return sc

    def paint(self, dates: tuple[str, ...], mask: np.ndarray, texture: np.ndarray, vegetation: bool) -> None:
        """`texture` float32 [S, S, 3] on `mask` for `dates`; `vegetation` says whether it follows the season."""
        for d in dates:
            self.ground[d][mask] = texture[mask]
            self.veg[d][mask] = vegetation

    def add_road(self, rng: np.random.Generator, mask: np.ndarray, dates: tuple[str, ...]) -> None:
        tone = None
        for d in dates:
            tone = sh.draw_road(rng, self.ground[d], mask, tone)
            self.veg[d][mask] = False
            self.roads[d] |= mask
        assert self.occupied is not None
        self.occupied |= mask

    def add_buildings(self, bs: list[sh.Building], dates: tuple[str, ...]) -> np.ndarray:
        """Register buildings (their footprints are already in `occupied`); returns their union mask."""
        m = np.zeros((self.size, self.size), bool)
        for b in bs:
            m |= b.mask(self.size)
            for d in dates:
                self.buildings[d].append(b)
        assert self.footprints is not None and self.occupied is not None
        self.footprints |= m
        self.occupied |= m
        return m

    def land_under(self, mask: np.ndarray) -> str:
        return tr.land_under(self.lmap, self.kinds, mask)

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
        """Both images (uint8 [S, S, 3]) and what the nuisances were (for tests and docs)."""
        sun = float(rng.uniform(0, 2 * np.pi))
        looks = {d: nu.draw_look(rng, sun) for d in DATES}
        shift = nu.draw_shift(rng)
        images = {}
        for d in DATES:
            road = self.roads[d]
            cars = sh.cars_on(rng, road, int(rng.integers(0, 2 + road.sum() // (12 * self.size)))) if road.any() else None
            # labels live on date B's grid: only A is misregistered
            images[d] = nu.render(rng, self.ground[d], self.veg[d], self.buildings[d], looks[d],
                                  shift=shift if d == "a" else None, cars=cars)
        return images["a"], images["b"], {"looks": looks, "shift": shift,
                                          "buildings": {d: list(self.buildings[d]) for d in DATES}}


def region_of(size: int, cell: tuple[int, int]) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in cell_bounds(size, cell))  # type: ignore[return-value]


def random_cell(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(3)), int(rng.integers(3))


def new_road(rng: np.random.Generator, sc: Scene, shape: str, through: tuple[float, float] | None = None,
             tries: int = 10) -> tuple[sh.Road, np.ndarray, bool] | None:
    """A road of `shape` that misses every building and at most crosses an old road (never runs along
    it): (road, its new pixels, whether it crosses an old road), or None."""
    assert sc.footprints is not None
    old = sc.roads["a"] | sc.roads["b"]
    for _ in range(tries):
        road = sh.road_path(rng, sc.size, shape, through)
        m = road.mask(sc.size)
        if (m & sc.footprints).any():
            continue
        overlap = int((m & old).sum())
        w = road.width
        if overlap > 3.5 * w * w + 6 * w:  # more than a crossing's square: it runs along the old road
            continue
        fresh = m & ~old
        if fresh.sum() < 2 * sc.size:
            continue
        return road, fresh, overlap > 0
    return None


def context(rng: np.random.Generator, sc: Scene) -> None:
    """What both dates show: old roads and buildings (some re-roofed on date B: not a change)."""
    if rng.random() < 0.45:
        shape = str(rng.choice(["straight", "curved", "bent", "dead_end"], p=[0.4, 0.3, 0.15, 0.15]))
        found = new_road(rng, sc, shape)
        if found is not None:
            sc.old_roads.append(found[0])
            sc.add_road(rng, found[1], DATES)
    if rng.random() < 0.55:
        assert sc.occupied is not None
        pick = rng.random()
        if sc.old_roads and pick < 0.35:
            bs = sh.row_along(rng, sc.occupied, sc.old_roads[0], int(rng.integers(1, 3)), max_n=10)
        elif pick < 0.6:
            bs = sh.scatter(rng, sc.occupied, int(rng.integers(1, 6)), (0, 0, sc.size, sc.size))
        elif pick < 0.85:
            bs = sh.cluster(rng, sc.occupied, region_of(sc.size, random_cell(rng)), max_n=12)
        else:
            bs = sh.factory(rng, sc.occupied, (0, 0, sc.size, sc.size))
        sc.add_buildings(bs, DATES)
        houses = [i for i, b in enumerate(bs) if b.kind == "house"]
        if houses and rng.random() < 0.2:  # a re-roofed house: another colour, same footprint, no change
            b = bs[houses[int(rng.integers(len(houses)))]]
            i = sc.buildings["b"].index(b)
            colour = sh.HOUSE_ROOFS[int(rng.integers(len(sh.HOUSE_ROOFS)))] * rng.uniform(0.9, 1.1)
            sc.buildings["b"][i] = b.recoloured(colour.astype(np.float32))


def construction_side_effects(rng: np.random.Generator, sc: Scene, bs: list[sh.Building], area: np.ndarray,
                              land: str) -> str | None:
    """Unlabelled changes that come with new buildings on date B: cleared vegetation around them and
    yards (lawn or soil) round each house. Returns the cleared land type when trees/grass were removed."""
    cleared = None
    size = sc.size
    assert sc.occupied is not None
    if land in ("woods", "grass", "field") and rng.random() < 0.6:
        ys, xs = np.nonzero(area)
        cy, cx = float(ys.mean()), float(xs.mean())
        span = max(float(np.ptp(ys)), float(np.ptp(xs)), size / 8)
        from changeagent.data.synth.objects import blob

        patch = blob(rng, size, cy, cx, span * 0.75) & ~sc.roads["b"]
        sc.paint(("b",), patch, tr.texture(rng, size, "bareland"), vegetation=False)
        cleared = land
    if rng.random() < 0.5:
        lawn = rng.random() < 0.6
        colour = np.array(sh.LAWN if lawn else sh.SOIL, np.float32) * rng.uniform(0.9, 1.1)
        yards = np.zeros((size, size), bool)
        for b in bs:
            if b.kind == "house":
                yards |= b.grown(max(1.0, size * rng.uniform(0.008, 0.02))).mask(size)
        yards &= ~sc.roads["b"]
        tex = colour[None, None, :] * (1 + 0.05 * tr.smooth_noise(rng, size, max(2.0, size / 16))[..., None])
        sc.paint(("b",), yards, tex.astype(np.float32), vegetation=lawn)
    return cleared


def _houses_event(rng: np.random.Generator, sc: Scene, label: np.ndarray) -> HardEvent | None:
    assert sc.occupied is not None
    size = sc.size
    pick = rng.random()
    if sc.old_roads and pick < 0.3:
        layout = "along_old"
        bs = sh.row_along(rng, sc.occupied, sc.old_roads[int(rng.integers(len(sc.old_roads)))],
                          int(rng.integers(1, 3)), max_n=int(rng.integers(2, 9)))
    elif pick < 0.55:
        layout, bs = "cell", sh.scatter(rng, sc.occupied, int(rng.choice([1, 1, 2, 2, 3, 4, 5])),
                                        region_of(size, random_cell(rng)), angle=float(rng.uniform(0, np.pi)))
    elif pick < 0.75:
        layout, bs = "scattered", sh.scatter(rng, sc.occupied, int(rng.integers(3, 8)), (0, 0, size, size))
    else:
        cell = random_cell(rng)
        y0, x0, y1, x1 = region_of(size, cell)
        grow = size / 12  # a neighbourhood spills a little over its cell
        layout = "cluster"
        bs = sh.cluster(rng, sc.occupied, (max(0, y0 - grow), max(0, x0 - grow), min(size, y1 + grow),
                                           min(size, x1 + grow)))
    if not bs:
        return None
    area = sc.add_buildings(bs, ("b",))
    land = sc.land_under(area)
    cleared = construction_side_effects(rng, sc, bs, area, land)
    label[area] = 2
    return HardEvent("houses", cell_of(area), len(bs), land, layout=layout, cleared=cleared)


def _factory_event(rng: np.random.Generator, sc: Scene, label: np.ndarray) -> HardEvent | None:
    assert sc.occupied is not None
    bs = sh.factory(rng, sc.occupied, region_of(sc.size, random_cell(rng)))
    if not bs:
        return None
    area = sc.add_buildings(bs, ("b",))
    land = sc.land_under(area)
    cleared = construction_side_effects(rng, sc, bs, area, land)
    label[area] = 2
    return HardEvent("factory", cell_of(area), 1, land, big=True, cleared=cleared)


def _demolish_event(rng: np.random.Generator, sc: Scene, label: np.ndarray) -> HardEvent | None:
    assert sc.occupied is not None
    size = sc.size
    big = rng.random() < 0.2
    region = region_of(size, random_cell(rng))
    bs = sh.factory(rng, sc.occupied, region) if big else sh.scatter(
        rng, sc.occupied, int(rng.choice([1, 1, 2, 3, 4])), region, angle=float(rng.uniform(0, np.pi)))
    if not bs:
        return None
    area = sc.add_buildings(bs, ("a",))
    # the footprint and a margin become rough soil (rubble, bare foundations)
    scar = np.zeros((size, size), bool)
    for b in bs:
        scar |= b.grown(max(1.0, size * 0.015)).mask(size)
    scar &= ~sc.roads["b"]
    tone = np.array(sh.SOIL, np.float32) * rng.uniform(0.85, 1.05)
    tex = tone[None, None, :] + rng.normal(0, 9, (size, size, 1)).astype(np.float32)
    sc.paint(("b",), scar, tex, vegetation=False)
    label[area] = 2
    return HardEvent("demolish", cell_of(area), len(bs), sc.land_under(area), big=big)


def _road_event(rng: np.random.Generator, sc: Scene, label: np.ndarray, kind: str) -> HardEvent | None:
    assert sc.occupied is not None
    size = sc.size
    if kind == "crossing":
        p = tuple(rng.uniform(0.25, 0.75, 2) * size)
        first = new_road(rng, sc, "straight", through=p)
        if first is None:
            return None
        sc.add_road(rng, first[1], ("b",))
        second = None
        for _ in range(6):
            cand = new_road(rng, sc, "straight", through=p)
            if cand is None:
                break
            d1 = first[0].points[-1] - first[0].points[0]
            d2 = cand[0].points[-1] - cand[0].points[0]
            cos = abs(float(d1 @ d2) / (np.linalg.norm(d1) * np.linalg.norm(d2)))
            if cos < 0.5:  # at least 60 degrees apart
                second = cand
                break
        if second is None:
            return None
        sc.add_road(rng, second[1], ("b",))
        fresh = first[1] | second[1]
        label[fresh] = 1
        cell = (min(2, int(p[1] * 3 / size)), min(2, int(p[0] * 3 / size)))  # where the roads cross
        return HardEvent("crossing", cell, 0, sc.land_under(fresh), road="straight")
    shape = str(rng.choice(["straight", "curved", "bent", "dead_end"], p=[0.35, 0.3, 0.15, 0.2]))
    found = new_road(rng, sc, shape)
    if found is None:
        return None
    road, fresh, crosses = found
    land = sc.land_under(fresh)
    sc.add_road(rng, fresh, ("b",))
    label[fresh] = 1
    if road.end is not None:
        ex, ey = road.end
        cell = (min(2, int(ey * 3 / size)), min(2, int(ex * 3 / size)))
    else:
        cell = cell_of(fresh)
    ev = HardEvent("road", cell, 0, land, road=shape, orient=road.orientation() if shape == "straight" else None,
                   crosses_old=crosses)
    if kind == "road_rows":
        sides = int(rng.integers(1, 3))
        bs = sh.row_along(rng, sc.occupied, road, sides, max_n=int(rng.integers(3, 13)))
        if len(bs) >= 2:
            area = sc.add_buildings(bs, ("b",))
            ev.cleared = construction_side_effects(rng, sc, bs, area | fresh, land)
            label[area] = 2
            ev.kind, ev.count, ev.sides = "road_rows", len(bs), sides
            # a row on both sides needs houses on both sides
            if sides == 2:
                n = np.array([-(road.points[-1] - road.points[0])[1], (road.points[-1] - road.points[0])[0]])
                sign = {int(np.sign((np.array([b.cx, b.cy]) - road.points[0]) @ n)) for b in bs}
                ev.sides = 2 if len(sign) == 2 else 1
    return ev


LEVIR_KINDS = ("houses", "factory", "demolish", "road", "crossing", "road_rows")
LEVIR_P = (0.36, 0.08, 0.12, 0.14, 0.06, 0.24)


def levir_pair(rng: np.random.Generator, size: int, change: bool, noisy: bool = False) -> Pair:
    """A hard LEVIR-MCI pair; label uint8 [S, S]: 0 background, 1 road, 2 building.

    `noisy` (the training split): about 10 % of change pairs get a label/caption disagreement
    (`meta["disagreement"]`: `uncaptioned` = the five no-change sentences over a labelled change,
    `unlabelled` = captions of a change the label does not show, `miscounted` = a wrong count).
    """
    sc = Scene.new(rng, size)
    context(rng, sc)
    label = np.zeros((size, size), np.uint8)
    events: list[HardEvent] = []
    if change:
        wanted = 2 if rng.random() < 0.25 else 1
        for _ in range(8):
            kind = str(rng.choice(LEVIR_KINDS, p=LEVIR_P))
            if kind in ("houses",):
                ev = _houses_event(rng, sc, label)
            elif kind == "factory":
                ev = _factory_event(rng, sc, label)
            elif kind == "demolish":
                ev = _demolish_event(rng, sc, label)
            else:
                ev = _road_event(rng, sc, label, kind)
            if ev is not None:
                events.append(ev)
            if len(events) == wanted:
                break
    img_a, img_b, looks = sc.render(rng)
    meta: dict = {**looks, "disagreement": None, "label_events": list(events)}
    if noisy and events and rng.random() < DISAGREE_P:
        events, label = disagree(rng, events, label, meta)
    return Pair(img_a, img_b, label=label, events=events, meta=meta)  # type: ignore[arg-type]


def disagree(rng: np.random.Generator, events: list[HardEvent], label: np.ndarray,
             meta: dict) -> tuple[list[HardEvent], np.ndarray]:
    """Make the label and the captions of a change pair disagree, as ~5 % of LEVIR-MCI's do."""
    counted = [e for e in events if e.count >= 2]
    kinds = ["uncaptioned", "unlabelled"] + (["miscounted"] if counted else [])
    kind = kinds[int(rng.integers(len(kinds)))]
    meta["disagreement"] = kind
    if kind == "uncaptioned":
        return [], label
    if kind == "unlabelled":
        return events, np.zeros_like(label)
    ev = counted[int(rng.integers(len(counted)))]
    wrong = HardEvent(**{**ev.__dict__, "count": max(1, ev.count + int(rng.choice([-2, -1, 1, 2])))})
    if wrong.count == ev.count:
        wrong.count = ev.count + 1
    return [wrong if e is ev else e for e in events], label
