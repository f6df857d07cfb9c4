"""The hard benchmark's SECOND-CC pairs: land-cover transitions seen through the same nuisances as
`hard.levir_pair` (per-date radiometry, haze, season, misregistration, moving shadows), with oriented
buildings in clusters, scattered or as factories, new roads (vegetation -> ground), small patches,
and label/caption disagreements in the training split. sem A / sem B hold the classes before and
after on exactly the changed pixels (SPEC §1.2): shadows, seasons and re-roofing are not changes.
"""

from __future__ import annotations

import numpy as np

from changeagent.data.synth import shapes as sh
from changeagent.data.synth import terrain as tr
from changeagent.data.synth.hard import DATES, DISAGREE_P, HardEvent, Scene, context, new_road, region_of
from changeagent.data.synth.objects import Box, blob, draw_playground
from changeagent.data.synth.scenes import CLASS_LAND, LAND_CLASS, SECOND_ID, TRANSITIONS, Pair, cell_of

VEG_CLASSES = ("low_vegetation", "tree")


def class_texture(rng: np.random.Generator, size: int, cls: str) -> np.ndarray:
    """A full-tile texture of a SECOND class that has one (float32 [S, S, 3])."""
    if cls == "water":
        tone = np.array([44, 74, 104], dtype=np.float32) * rng.uniform(0.8, 1.2)
        return (tone + 4 * tr.smooth_noise(rng, size, size / 4)[..., None]).astype(np.float32)
    return tr.texture(rng, size, CLASS_LAND[cls])


def _buildings(rng: np.random.Generator, sc: Scene, cell: tuple[int, int], claimed: np.ndarray
               ) -> tuple[list[sh.Building], str, bool]:
    """Buildings for a change in `cell`: (buildings, layout, is a factory); they are not registered yet."""
    region = region_of(sc.size, cell)
    pick = rng.random()
    if pick < 0.15:
        return sh.factory(rng, claimed, region), "cell", True
    if pick < 0.4:
        return sh.cluster(rng, claimed, region, max_n=16), "cluster", False
    n = int(rng.choice([1, 2, 2, 3, 4, 5]))
    return sh.scatter(rng, claimed, n, region, angle=float(rng.uniform(0, np.pi))), "cell", False


def _road_change(rng: np.random.Generator, sc: Scene, claimed: np.ndarray, sem_a: np.ndarray,
                 sem_b: np.ndarray) -> HardEvent | None:
    """A new road through vegetation: labelled where it replaced grass or trees (class ground after)."""
    found = new_road(rng, sc, str(rng.choice(["straight", "curved", "dead_end"])))
    if found is None:
        return None
    fresh = found[1] & ~claimed
    before = np.array([SECOND_ID[LAND_CLASS[k]] for k in sc.kinds], np.uint8)[sc.lmap]
    region = fresh & np.isin(before, [SECOND_ID[c] for c in VEG_CLASSES])
    if region.sum() < sc.size:
        return None
    sc.add_road(rng, found[1] & ~claimed, ("b",))
    sem_a[region], sem_b[region] = before[region], SECOND_ID["ground"]
    src = "tree" if (before[region] == SECOND_ID["tree"]).mean() > 0.5 else "low_vegetation"
    claimed |= found[1]
    return HardEvent("cover", cell_of(region), 0, src=src, dst="ground", layout="road")


def _transition(rng: np.random.Generator, sc: Scene, cell: tuple[int, int], claimed: np.ndarray,
                sem_a: np.ndarray, sem_b: np.ndarray) -> HardEvent | None:
    size = sc.size
    src, dst = TRANSITIONS[int(rng.integers(len(TRANSITIONS)))]
    y0, x0, y1, x1 = region_of(size, cell)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    stage_cls = src if src not in ("building", "water") else "ground"
    tex = class_texture(rng, size, stage_cls)
    stage = np.zeros((size, size), bool)
    if dst in ("building", "playground") or src == "building":
        # the stage: a patch of the source cover around the change, the same on both dates
        stage = blob(rng, size, cy, cx, size / 5.5) & ~claimed
        sc.paint(DATES, stage, tex, vegetation=stage_cls in VEG_CLASSES)
    count, layout, big = 0, "cell", False
    if "building" in (src, dst):
        bs, layout, big = _buildings(rng, sc, cell, claimed)
        if not bs:
            claimed |= stage  # painted on both dates: no change, but no longer the old land either
            return None
        region = np.zeros((size, size), bool)
        for b in bs:
            region |= b.mask(size)
        count = len(bs)
        if dst == "building":
            sc.paint(("a",), region, tex, vegetation=stage_cls in VEG_CLASSES)
            sc.add_buildings(bs, ("b",))
        else:
            sc.add_buildings(bs, ("a",))
            scar = np.zeros((size, size), bool)
            for b in bs:
                scar |= b.grown(max(1.0, size * 0.015)).mask(size)
            scar &= ~claimed | region
            soil = np.array(sh.SOIL, np.float32) * rng.uniform(0.85, 1.05)
            sc.paint(("b",), scar, (soil[None, None, :] + rng.normal(0, 9, (size, size, 1))).astype(np.float32), False)
    elif dst == "playground":
        h, w = int((y1 - y0) * rng.uniform(0.5, 0.95)), int((x1 - x0) * rng.uniform(0.5, 0.95))
        box = Box(int(cy - h / 2), int(cx - w / 2), int(cy - h / 2) + h, int(cx - w / 2) + w)
        region = box.mask(size)
        if (region & claimed).any():
            claimed |= stage
            return None
        sc.paint(("a",), region, tex, vegetation=stage_cls in VEG_CLASSES)
        draw_playground(rng, sc.ground["b"], box)
        sc.veg["b"][region] = False
    else:
        # small patches too: radius from a fifteenth to a sixth of the tile
        region = blob(rng, size, cy, cx, size / 6.5 * rng.uniform(0.4, 1.1)) & ~claimed
        sc.paint(("a",), region, class_texture(rng, size, src), vegetation=src in VEG_CLASSES)
        sc.paint(("b",), region, class_texture(rng, size, dst), vegetation=dst in VEG_CLASSES)
    if not region.any():
        return None
    # the stage is claimed too: a later change (a new road) must not cross it as if it were the old land
    claimed |= region | stage
    sem_a[region], sem_b[region] = SECOND_ID[src], SECOND_ID[dst]
    return HardEvent("cover", cell_of(region), count, src=src, dst=dst, layout=layout, big=big)


def second_pair(rng: np.random.Generator, size: int, change: bool, noisy: bool = False) -> Pair:
    """A hard SECOND-CC pair; sem_a / sem_b uint8 [S, S] class ids on changed pixels, 0 elsewhere.

    `noisy` (the training split): about 10 % of change pairs get a label/caption disagreement
    (`meta["disagreement"]`: `uncaptioned` or `unlabelled`, as in `hard.disagree`).
    """
    sc = Scene.new(rng, size)
    context(rng, sc)
    assert sc.occupied is not None
    sem_a, sem_b = np.zeros((size, size), np.uint8), np.zeros((size, size), np.uint8)
    claimed = sc.occupied.copy()
    events: list[HardEvent] = []
    taken: set[tuple[int, int]] = set()
    wanted = int(rng.choice([1, 1, 2])) if change else 0
    for _ in range(5 * wanted):
        if len(events) == wanted:
            break
        if rng.random() < 0.12:
            ev = _road_change(rng, sc, claimed, sem_a, sem_b)
        else:
            free = [(r, c) for r in range(3) for c in range(3) if (r, c) not in taken]
            cell = free[int(rng.integers(len(free)))]
            taken.add(cell)
            ev = _transition(rng, sc, cell, claimed, sem_a, sem_b)
        if ev is not None:
            events.append(ev)
    img_a, img_b, looks = sc.render(rng)
    meta: dict = {**looks, "disagreement": None, "label_events": list(events)}
    if noisy and events and rng.random() < DISAGREE_P:
        kind = "uncaptioned" if rng.random() < 0.5 else "unlabelled"
        meta["disagreement"] = kind
        if kind == "uncaptioned":
            events = []
        else:
            sem_a, sem_b = np.zeros_like(sem_a), np.zeros_like(sem_b)
    return Pair(img_a, img_b, sem_a=sem_a, sem_b=sem_b, events=events, meta=meta)  # type: ignore[arg-type]
