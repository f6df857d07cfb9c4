"""The hard benchmark's caption grammar: many phrasings of the same facts, in the style of LEVIR-MCI.

The default grammar (`captions`) has one or two phrasings per fact; real annotators vary sentence
structure ("there are two new houses ...", "... replace the trees"), counts ("some", "a row of",
"many"), objects ("villas", "a warehouse"), verbs ("are erected", "have appeared") and positions
("in the lower-left corner of the scene"). Everything said is true of the drawn `HardEvent`s, except
for the pairs `hard.disagree` made wrong on purpose. No-change pairs get exactly the five real
no-change sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from changeagent.data.constants import NO_CHANGE_SENTENCES
from changeagent.data.synth.hard import HardEvent

T = TypeVar("T")

_CORNER = {(0, 0): ("top", "left", "upper"), (0, 2): ("top", "right", "upper"),
           (2, 0): ("bottom", "left", "lower"), (2, 2): ("bottom", "right", "lower")}
_EDGE = {(0, 1): ("top", "upper"), (2, 1): ("bottom", "lower"), (1, 0): ("left", "left"), (1, 2): ("right", "right")}


def positions(cell: tuple[int, int]) -> tuple[str, ...]:
    """Every phrase the grammar uses for a 3x3 cell."""
    if cell in _CORNER:
        v, h, vv = _CORNER[cell]
        return (f"in the {v} {h} corner", f"at the {v} {h}", f"in the {vv} {h} corner", f"on the {vv} {h}",
                f"in the {v} {h} corner of the scene", f"in the {vv}-{h} corner")
    if cell in _EDGE:
        w, alt = _EDGE[cell]
        if w in ("top", "bottom"):
            return (f"at the {w}", f"on the {w} side", f"at the {w} of the scene", f"in the {alt} part of the scene")
        return (f"on the {w}", f"on the {w} side", f"on the {w} side of the scene", f"in the {w} part of the scene")
    return ("in the middle", "in the center", "in the middle of the scene", "in the center of the scene")


SCATTERED = ("around the scene", "in different places", "across the scene", "all over the scene")
LANDS = {
    "bareland": ("on the bareland", "on the bare land", "on the wasteland", "on the open ground"),
    "grass": ("on the grass", "on the meadow", "on the grassland"),
    "woods": ("in the woods", "in the forest", "among the trees"),
    "field": ("in the field", "on the farmland"),
}
CLEARED = {"woods": ("the trees", "the woods", "the forest"), "grass": ("the grass", "the vegetation"),
           "field": ("the crops", "the vegetation")}
NOUNS = ("house", "building", "villa")
COUNTS = {1: ("a", "one"), 2: ("two",), 3: ("three",), 4: ("four", "several"), 5: ("five", "several", "some")}
MANY = ("several", "some", "many")
LOTS = ("many", "a lot of", "dozens of", "lots of")
APPEAR = (("appears", "appear"), ("is built", "are built"), ("has been built", "have been built"),
          ("shows up", "show up"), ("is constructed", "are constructed"), ("has appeared", "have appeared"),
          ("is erected", "are erected"))
GONE = (("is removed", "are removed"), ("disappears", "disappear"), ("is demolished", "are demolished"),
        ("has been removed", "have been removed"), ("has disappeared", "have disappeared"),
        ("is torn down", "are torn down"))
BUILT = ("is built", "appears", "is constructed", "has been built", "shows up")
ROAD_WORDS = {"straight": ("a straight road", "a new road", "a road"),
              "curved": ("a curved road", "a winding road", "a turning road"),
              "bent": ("a bent road", "a turning road", "a road with a sharp turn"),
              "dead_end": ("a dead end road", "a short road", "a road")}
FACTORY = ("a large factory", "a big building", "a large warehouse", "a factory", "a large building")


def _pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    return options[int(rng.integers(len(options)))]


def _verb(rng: np.random.Generator, table: Sequence[tuple[str, str]], plural: bool) -> str:
    return _pick(rng, table)[1 if plural else 0]


def _count(rng: np.random.Generator, n: int) -> tuple[str, bool]:
    """A count phrase and whether it is plural, e.g. ("three", True) or ("many", True)."""
    if n in COUNTS:
        return _pick(rng, COUNTS[n]), n > 1
    return _pick(rng, MANY if n < 10 else LOTS), True


def houses_np(rng: np.random.Generator, n: int, new: bool = True) -> tuple[str, bool]:
    """A noun phrase for `n` buildings: ("two new villas", True), ("a house", False)."""
    word, plural = _count(rng, n)
    noun = _pick(rng, NOUNS) + ("s" if plural else "")
    adj = _pick(rng, ("", "", "new ", "small ")) if new else _pick(rng, ("", "", "small "))
    return f"{word} {adj}{noun}", plural


def _there(rng: np.random.Generator, n: int, where: str) -> str:
    np_, pl = houses_np(rng, n)
    return f"there {'are' if pl else 'is'} {np_} {where}"


def _land(rng: np.random.Generator, ev: HardEvent) -> str:
    return _pick(rng, LANDS[ev.land]) if ev.land in LANDS else ""


def _with_clearing(rng: np.random.Generator, ev: HardEvent, clause: str) -> str:
    """Sometimes also say the vegetation the construction removed (unlabelled, but true)."""
    if ev.cleared not in CLEARED or rng.random() < 0.5:
        return clause
    what = _pick(rng, CLEARED[ev.cleared])
    return _pick(rng, (f"{what} {'are' if what.endswith('s') else 'is'} removed and {clause}",
                       f"{clause} and {what} {'have' if what.endswith('s') else 'has'} been cleared"))


def _houses(rng: np.random.Generator, ev: HardEvent) -> str:
    pos, land = _pick(rng, positions(ev.cell)), _land(rng, ev)
    if ev.layout == "cluster":
        lots = _pick(rng, LOTS)
        return _pick(rng, (f"{lots} houses are built close together {pos}", f"a dense residential area appears {pos}",
                           f"a group of small houses {_verb(rng, APPEAR, False)} {pos}",
                           f"{lots} {_pick(rng, NOUNS)}s {_verb(rng, APPEAR, True)} {land} {pos}",
                           f"a neighborhood with {lots} houses appears {pos}"))
    np_, pl = houses_np(rng, ev.count)
    verb = _verb(rng, APPEAR, pl)
    if ev.layout == "scattered":
        where = _pick(rng, SCATTERED)
        return _pick(rng, (f"{np_} {verb} {where}", f"{np_} {verb} {land} {where}", _there(rng, ev.count, where),
                           f"scattered {_pick(rng, NOUNS)}s {_verb(rng, APPEAR, True)} {land}"))
    if ev.layout == "along_old":
        side = _pick(rng, ("along the road", "beside the road", "by the road", "next to the road",
                           "along the existing road"))
        return _pick(rng, (f"{np_} {verb} {side}", f"{np_} {verb} {side} {pos}", f"{np_} {verb} {pos} {side}"))
    return _pick(rng, (f"{np_} {verb} {pos}", f"{np_} {verb} {land} {pos}", f"{np_} {verb} {pos} {land}",
                       _there(rng, ev.count, pos), f"{np_} {verb} {pos}"))


def _factory(rng: np.random.Generator, ev: HardEvent) -> str:
    pos, land = _pick(rng, positions(ev.cell)), _land(rng, ev)
    what, verb = _pick(rng, FACTORY), _verb(rng, APPEAR, False)
    return _pick(rng, (f"{what} {verb} {pos}", f"{what} {verb} {land} {pos}", f"there is {what.replace('a ', 'a new ', 1)} {pos}"))


def _demolish(rng: np.random.Generator, ev: HardEvent) -> str:
    pos = _pick(rng, positions(ev.cell))
    if ev.big:
        what = _pick(rng, ("the factory", "the large building", "the warehouse", "a large building"))
        return _pick(rng, (f"{what} {pos} {_verb(rng, GONE, False)}", f"{what} {_verb(rng, GONE, False)} {pos}"))
    np_, pl = houses_np(rng, ev.count, new=False)
    verb = _verb(rng, GONE, pl)
    the = "the " + np_.split(" ", 1)[1] if pl and np_.split()[0] in ("two", "three", "four") else np_
    return _pick(rng, (f"{np_} {pos} {verb}", f"{the} {pos} {verb}", f"{np_} {verb} {pos}",
                       f"{np_} {verb} and only bare soil is left {pos}"))


def _road_np(rng: np.random.Generator, ev: HardEvent) -> str:
    assert ev.road is not None, "road events carry the road shape"
    options: tuple[str, ...] = ROAD_WORDS[ev.road]
    if ev.road == "straight" and ev.orient in ("vertical", "horizontal", "diagonal"):
        options = (*options, f"a {ev.orient} road")
    return _pick(rng, options)


def _road(rng: np.random.Generator, ev: HardEvent) -> str:
    pos, land, built = _pick(rng, positions(ev.cell)), _land(rng, ev), _pick(rng, BUILT)
    road = _road_np(rng, ev)
    if ev.road == "dead_end":
        return _pick(rng, (f"{road} {built} and ends {pos}", f"a dead end road {built} {pos}",
                           f"{road} with a turning circle {built} {pos}", f"a new road ends {pos}"))
    forms = [f"{road} {built} {pos}", f"{road} {built} {land} {pos}", f"{road} {built} {land}"]
    if ev.crosses_old:
        forms += [f"{road} {built} across the old road", f"a new road crosses the existing road {pos}",
                  f"{road} {built} and crosses the old road"]
    return _pick(rng, forms)


def _crossing(rng: np.random.Generator, ev: HardEvent) -> str:
    pos, land = _pick(rng, positions(ev.cell)), _land(rng, ev)
    return _pick(rng, (f"a crossroad appears {pos}", f"two crossing roads are built {pos}",
                       f"two roads are built and cross {pos}", f"a crossroad is built {land}",
                       f"two intersecting roads appear {land}"))


def _road_rows(rng: np.random.Generator, ev: HardEvent) -> str:
    pos, built = _pick(rng, positions(ev.cell)), _pick(rng, BUILT)
    road = _road_np(rng, ev)
    np_, pl = houses_np(rng, ev.count)
    verb = _verb(rng, APPEAR, pl)
    if ev.sides == 2:
        rows = _pick(rng, ("two rows of houses", "two rows of villas", "two lines of buildings"))
        return _pick(rng, (f"{road} {built} {pos} and {np_} {verb} on both sides of it",
                           f"{rows} are built on both sides of the new road",
                           f"{np_} {verb} on both sides of {road.replace('a ', 'the ', 1)}",
                           f"{road} with houses on both sides {built} {pos}"))
    row = _pick(rng, ("a row of houses", "a row of villas", "a line of buildings"))
    return _pick(rng, (f"{road} {built} {pos} and {np_} {verb} along it",
                       f"{row} {_verb(rng, APPEAR, False)} along the new road {pos}",
                       f"{road} with {np_} {_pick(rng, ('appears', 'is built'))} {pos}",
                       f"{np_} {verb} on one side of {road.replace('a ', 'the ', 1)}",
                       f"{road} and {np_} are built {pos}"))


_SECOND_THE = {
    "ground": ("the bare ground", "the bare land", "the open ground"),
    "low_vegetation": ("the grass", "the low vegetation", "the meadow"),
    "tree": ("the trees", "the woods", "the forest"),
    "water": ("the water", "the pond", "the lake"),
    "building": ("the buildings",),
    "playground": ("the playground",),
}
_SECOND_A = {
    "ground": ("bare ground", "bare land", "open ground"),
    "low_vegetation": ("grass", "low vegetation", "a meadow"),
    "tree": ("trees", "woods"),
    "water": ("water", "a pond", "a lake"),
    "playground": ("a playground", "a sports field"),
}


def _plural_phrase(p: str) -> bool:
    return p.split()[-1] in ("trees", "woods", "buildings")


def _cover(rng: np.random.Generator, ev: HardEvent) -> str:
    pos = _pick(rng, positions(ev.cell))
    src, dst = ev.src, ev.dst
    assert src is not None and dst is not None, "cover events carry both classes"
    if dst == "building":
        the_src = _pick(rng, _SECOND_THE[src])
        be = "are" if _plural_phrase(the_src) else "is"
        if ev.big:
            what = _pick(rng, FACTORY)
            return _pick(rng, (f"{what} {_verb(rng, APPEAR, False)} on {the_src} {pos}",
                               f"{the_src} {pos} {be} replaced by {what}"))
        if ev.layout == "cluster":
            lots = _pick(rng, LOTS)
            return _pick(rng, (f"{lots} buildings replace {the_src} {pos}", f"a dense residential area appears {pos}",
                               f"{the_src} {pos} {be} replaced by {lots} houses"))
        np_, pl = houses_np(rng, ev.count)
        verb = _verb(rng, APPEAR, pl)
        prep = "in" if src == "tree" else "on"
        return _pick(rng, (f"{np_} {verb} {prep} {the_src} {pos}", f"{np_} {verb} {pos}",
                           f"{the_src} {pos} {be} replaced by {np_}", _there(rng, ev.count, pos)))
    if src == "building":
        if ev.big:
            return _pick(rng, (f"the large building {pos} {_verb(rng, GONE, False)}",
                               f"the factory {pos} is replaced by bare ground"))
        np_, pl = houses_np(rng, ev.count, new=False)
        verb = _verb(rng, GONE, pl)
        return _pick(rng, (f"{np_} {pos} {verb}", f"{np_} {verb} {pos}", f"{np_} {pos} {verb} and bare land is left"))
    the_src = _pick(rng, _SECOND_THE[src])
    pl = _plural_phrase(the_src)
    if ev.layout == "road":
        return _pick(rng, (f"a road {_pick(rng, BUILT)} through {the_src} {pos}",
                           f"{the_src} {pos} {'are' if pl else 'is'} replaced by a road",
                           f"a new road {_pick(rng, BUILT)} {pos}"))
    new = _pick(rng, _SECOND_A[dst])
    forms = [f"{the_src} {pos} {'are' if pl else 'is'} replaced by {new}",
             f"{the_src} {pos} {'turn' if pl else 'turns'} into {new}",
             f"{the_src} {pos} {'become' if pl else 'becomes'} {new}"]
    if dst in ("water", "playground"):
        forms.append(f"{new} appears {pos}")
    if src == "tree" and dst == "ground":
        forms += [f"the trees {pos} are cut down", f"the trees {pos} have been removed"]
    return _pick(rng, forms)


CLAUSES = {"houses": _houses, "factory": _factory, "demolish": _demolish, "road": _road,
           "crossing": _crossing, "road_rows": _road_rows, "cover": _cover}


def caption(rng: np.random.Generator, events: list[HardEvent]) -> str:
    """One sentence (lower case, single spaces) describing every event, joined with "and"."""
    parts = []
    for ev in events:
        clause = CLAUSES[ev.kind](rng, ev)
        if ev.kind in ("houses", "factory", "road_rows"):
            clause = _with_clearing(rng, ev, clause)
        parts.append(clause)
    return " and ".join(parts)


def captions(rng: np.random.Generator, events: list[HardEvent], n: int = 5, tries: int = 30) -> list[str]:
    """`n` captions for a pair: the real no-change sentences when nothing is said to change, else varied ones."""
    if not events:
        return list(NO_CHANGE_SENTENCES)
    out: list[str] = []
    for _ in range(n):
        cap = caption(rng, events)
        for _ in range(tries):
            if " ".join(cap.split()) not in out:
                break
            cap = caption(rng, events)
        out.append(" ".join(cap.split()))
    return out
