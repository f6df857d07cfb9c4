"""The caption grammar: five varied sentences per pair, all true of what `scenes` drew.

Style follows the real LEVIR-MCI corpus (counts, object words, verbs, positions such as "in the top
left corner", "in the middle", "along the road"); no-change pairs get exactly the five real
no-change sentences. The word list is kept small (about 130 words) so a small model can learn it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from changeagent.data.constants import NO_CHANGE_SENTENCES
from changeagent.data.synth.scenes import Event

POSITIONS: dict[tuple[int, int], tuple[str, ...]] = {
    (0, 0): ("in the top left corner", "at the top left", "in the upper left corner"),
    (0, 1): ("at the top", "on the top side"),
    (0, 2): ("in the top right corner", "at the top right", "in the upper right corner"),
    (1, 0): ("on the left", "on the left side"),
    (1, 1): ("in the middle", "in the center"),
    (1, 2): ("on the right", "on the right side"),
    (2, 0): ("in the bottom left corner", "at the bottom left", "in the lower left corner"),
    (2, 1): ("at the bottom", "on the bottom side"),
    (2, 2): ("in the bottom right corner", "at the bottom right", "in the lower right corner"),
}
LANDS = {
    "bareland": ("on the bareland",),
    "grass": ("on the grass", "on the meadow"),
    "woods": ("in the woods", "in the forest"),
    "field": ("in the field",),
}
NOUNS = ("house", "building", "villa")
COUNTS = {1: ("a",), 2: ("two",), 3: ("three",), 4: ("four", "several"), 5: ("several", "some")}
APPEAR = (("appears", "appear"), ("is built", "are built"), ("has been built", "have been built"),
          ("shows up", "show up"), ("is constructed", "are constructed"))
GONE = (("is removed", "are removed"), ("disappears", "disappear"), ("is demolished", "are demolished"))
ROAD_ADJ = {"vertical": "vertical", "horizontal": "horizontal", "bent": "curved"}

T = TypeVar("T")

# SECOND land-cover words: (definite noun phrase, is plural), and the indefinite form for "becomes X"
COVER_THE = {
    "ground": (("the bare ground", False), ("the bare land", False)),
    "low_vegetation": (("the grass", False), ("the low vegetation", False)),
    "tree": (("the trees", True), ("the woods", True)),
    "water": (("the water", False), ("the pond", False)),
    "building": (("the buildings", True),),
}
COVER_A = {
    "ground": ("bare ground", "bare land"),
    "low_vegetation": ("grass", "low vegetation"),
    "tree": ("trees",),
    "water": ("water", "a pond"),
    "playground": ("a playground", "a sports field"),
}


def _pick(rng: np.random.Generator, options: Sequence[T]) -> T:
    return options[int(rng.integers(len(options)))]


def _verb(rng: np.random.Generator, table: Sequence[tuple[str, str]], plural: bool) -> str:
    return _pick(rng, table)[1 if plural else 0]


def _houses(rng: np.random.Generator, n: int) -> tuple[str, bool, str]:
    """n buildings: (noun phrase, is plural, definite phrase), e.g. ("two villas", True, "the two villas")."""
    noun = _pick(rng, NOUNS)
    if n == 1:
        return f"a {noun}", False, f"the {noun}"
    word = _pick(rng, COUNTS.get(n, ("several", "some", "many")))
    the = f"the {word} {noun}s" if word in ("two", "three", "four") else f"the {noun}s"
    return f"{word} {noun}s", True, the


def _where(rng: np.random.Generator, ev: Event) -> str:
    return _pick(rng, POSITIONS[ev.cell])


def _levir_clause(rng: np.random.Generator, ev: Event) -> str:
    pos = _where(rng, ev)
    land = _pick(rng, LANDS[ev.land]) if ev.land in LANDS else ""
    if ev.kind == "houses":
        np_, pl, _ = _houses(rng, ev.count)
        verb = _verb(rng, APPEAR, pl)
        if ev.along_road:
            forms = (f"{np_} {verb} along the road", f"{np_} {verb} beside the road {pos}",
                     f"{np_} {verb} along the road {pos}")
        else:
            forms = (f"{np_} {verb} {pos}", f"{np_} {verb} {land} {pos}", f"{np_} {verb} {pos}")
        return _pick(rng, forms)
    if ev.kind == "demolish":
        np_, pl, the = _houses(rng, ev.count)
        verb = _verb(rng, GONE, pl)
        return _pick(rng, (f"{np_} {pos} {verb}", f"{the} {pos} {verb}", f"{np_} {verb} {pos}"))
    assert ev.road is not None, "road events carry the road shape"
    road = _pick(rng, (f"a {ROAD_ADJ[ev.road]} road", "a road", "a new road"))
    built = _pick(rng, ("is built", "appears", "is constructed"))
    if ev.kind == "road":
        return _pick(rng, (f"{road} {built} {pos}", f"{road} {built} {land} {pos}", f"{road} {built} {pos}"))
    np_, pl, _ = _houses(rng, ev.count)
    verb = _verb(rng, APPEAR, pl)
    return _pick(rng, (
        f"{road} {built} {pos} and {np_} {verb} along it",
        f"{np_} {verb} along {road} {pos}".replace("along a ", "along the ", 1),
        f"{road} with {np_} {_pick(rng, ('appears', 'is built'))} {pos}",
        f"{road} and {np_} are built {pos}",
    ))


def _cover_clause(rng: np.random.Generator, ev: Event) -> str:
    pos = _where(rng, ev)
    src, dst = ev.src, ev.dst
    assert src is not None and dst is not None, "cover events carry both classes"
    if dst == "building":
        np_, pl, _ = _houses(rng, ev.count)
        the_src, src_pl = _pick(rng, COVER_THE[src])
        verb = _verb(rng, APPEAR, pl)
        prep = "in" if src == "tree" else "on"
        return _pick(rng, (f"{np_} {verb} {prep} {the_src} {pos}", f"{np_} {verb} {pos}",
                           f"{the_src} {pos} {'are' if src_pl else 'is'} replaced by {np_}"))
    if src == "building":
        np_, pl, the = _houses(rng, ev.count)
        verb = _verb(rng, GONE, pl)
        return _pick(rng, (f"{the} {pos} {verb}", f"{np_} {verb} {pos}"))
    the_src, pl = _pick(rng, COVER_THE[src])
    new = _pick(rng, COVER_A[dst])
    be = "are" if pl else "is"
    forms = [f"{the_src} {pos} {be} replaced by {new}", f"{the_src} {pos} {'turn' if pl else 'turns'} into {new}"]
    if dst in ("water", "playground"):
        forms.append(f"{new} appears {pos}")
    if src == "tree" and dst == "ground":
        forms.append(f"the trees {pos} are cut down")
    return _pick(rng, forms)


def caption(rng: np.random.Generator, events: list[Event]) -> str:
    """One sentence (lower case, single spaces) describing every event, joined with "and"."""
    clause = _cover_clause if events[0].kind == "cover" else _levir_clause
    return " and ".join(clause(rng, ev) for ev in events)


def captions(rng: np.random.Generator, events: list[Event], n: int = 5, tries: int = 30) -> list[str]:
    """`n` captions for a pair: the real no-change sentences when nothing changed, else varied ones."""
    if not events:
        return list(NO_CHANGE_SENTENCES)
    out: list[str] = []
    for _ in range(n):
        cap = caption(rng, events)
        for _ in range(tries):
            if cap not in out:
                break
            cap = caption(rng, events)
        out.append(" ".join(cap.split()))
    return out


def raw_form(sentence: str) -> str:
    """The `raw` text of a caption as a release would store it: capitalised, with a full stop."""
    return sentence[:1].upper() + sentence[1:] + "."
