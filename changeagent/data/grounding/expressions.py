"""Referring change expressions derived from a pair's class maps: `derive(maps, dataset, rng, n)`.

Derivation = draw a `Query` the maps can answer, say it (`phrase`), cut its target (`cut`) from the
ground-truth maps. The program route of a model is the same `cut` applied to `parse(expression)` on
its predicted maps, so both routes share one meaning of every word.

Per pair, `n` expressions, distinct queries, seeded (`rng` or an int seed; `sample_seed(seed, name,
epoch)` gives a per-pair, per-epoch seed so a data loader derives new expressions each epoch and the
same ones on every rerun, on any worker):

- `empty` (a share `empty_share` of n, at least one when possible): a query whose target is empty — a
  class that did not change (on SECOND: on the date asked), a transition that did not happen, a class
  in a place it is absent from. A pair without change gets only these.
- the rest cycle through the types the pair can answer, in a seeded order: `class` (a changed class;
  SECOND: on date 1, date 2 or either, also the group "vegetation"), `transition` (SECOND: a from-to
  pair of different classes that occurs), `position` (a class or any change, clipped to a grid cell or
  side where it occurs), `instance` (the largest / smallest 8-connected component >= 6 px of a class,
  a transition or any change).

Cost: a few numpy passes over the maps per expression (bincount, isin, scipy label for instances):
about a millisecond per expression on a 256 px pair, so it runs on the fly in data-loader workers.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from changeagent.data.grounding.phrasing import CLASS_FORMS, phrase
from changeagent.data.grounding.query import (
    INSTANCES,
    MAP_DATES,
    REGIONS,
    Query,
    as_maps,
    class_ids,
    cut,
    region_mask,
    space_of,
)
from changeagent.data.lexicon import CLASS_GROUPS, LEXICONS, cell_areas, components, region_cells
from changeagent.errors import ChangeAgentError

Generator = Callable[[], "Query | None"]


@dataclass(frozen=True)
class Expression:
    """One derived expression: its text, type (`EXPRESSION_TYPES`), Query and target mask bool [H, W]."""

    text: str
    type: str
    query: Query
    mask: np.ndarray

    def record(self) -> dict[str, Any]:
        """JSON-ready fields (the mask as its pixel count)."""
        return {"expression": self.text, "type": self.type, "query": self.query.to_dict(),
                "area": int(self.mask.sum())}


def sample_seed(seed: int, name: str, epoch: int = 0) -> int:
    """A stable 63-bit seed for pair `name` in `epoch` (crc32, not Python's salted hash)."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode("utf-8")) * 7_919 + int(epoch)) % (2 ** 63)


class _Pair:
    """The facts of one pair's maps that the generators draw from (computed once)."""

    def __init__(self, maps: np.ndarray, space: str) -> None:
        self.maps, self.space = maps, space
        self.h, self.w = maps.shape[-2:]
        self.k = len(LEXICONS[space].terms)
        self.classes = [t.name for t in LEXICONS[space].terms]
        self.groups = list(CLASS_GROUPS.get(space, {}))
        self.two = MAP_DATES[space] == 2
        count = lambda m: np.bincount(np.where((m >= 0) & (m <= self.k), m, 0).ravel(), minlength=self.k + 1)  # noqa: E731
        if self.two:
            a, b = maps[0], maps[1]
            self.count: dict[int | None, np.ndarray] = {1: count(a), 2: count(b)}
            valid = (a >= 1) & (a <= self.k) & (b >= 1) & (b <= self.k)
            pairs = np.bincount((a[valid] * (self.k + 1) + b[valid]).ravel(), minlength=(self.k + 1) ** 2)
            self.transitions = pairs.reshape(self.k + 1, self.k + 1)
        else:
            self.count = {None: count(maps)}

    def present(self, name: str, date: int | None) -> bool:
        ids = list(class_ids(self.space, name))
        if not self.two:
            return bool(self.count[None][ids].sum())
        if date is None:
            return bool(self.count[1][ids].sum() + self.count[2][ids].sum())
        return bool(self.count[date][ids].sum())

    def class_queries(self, present: bool) -> list[Query]:
        dates = (None, 1, 2) if self.two else (None,)
        return [Query(self.space, cls=c, date=d) for c in self.classes + self.groups for d in dates
                if self.present(c, d) == present]

    def transition_queries(self, present: bool) -> list[Query]:
        if not self.two:
            return []
        return [Query(self.space, transition=(self.classes[i - 1], self.classes[j - 1]))
                for i in range(1, self.k + 1) for j in range(1, self.k + 1)
                if i != j and bool(self.transitions[i, j]) == present]


def _choice(rng: np.random.Generator, items: list[Any]) -> Any:
    return items[int(rng.integers(len(items)))] if items else None


def derive(maps: Any, dataset: str, rng: np.random.Generator | int | None = None, n: int = 8,
           empty_share: float = 0.2) -> list[Expression]:
    """Up to `n` referring expressions with their target masks from one pair's ground-truth maps.

    maps: int [H, W] (LEVIR-MCI: 0 background, 1 road, 2 building) or [2, H, W] (SECOND, SECOND-CC:
    date-1 and date-2 land cover, 0 unchanged), numpy or torch; dataset: levir_mci | second_cc |
    second. Fewer than `n` come back only when the pair offers fewer distinct queries.
    """
    if not isinstance(n, int) or n < 1:
        raise ChangeAgentError(f"grounding: n must be a positive integer, got {n!r}")
    if not 0 <= empty_share <= 1:
        raise ChangeAgentError(f"grounding: empty_share must be in [0, 1], got {empty_share}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    space = space_of(dataset)
    pair = _Pair(as_maps(maps, space), space)
    positives = _positive_generators(pair, rng)
    n_empty = n if not positives else min(n, max(1, round(n * empty_share))) if empty_share > 0 else 0
    chosen: dict[Query, np.ndarray] = {}

    def take(q: Query | None, want_empty: bool) -> bool:
        if q is None or q in chosen:
            return False
        mask = cut(q, pair.maps)
        if bool(mask.any()) == want_empty:
            return False
        chosen[q] = mask
        return True

    empties = _empty_generator(pair, rng)
    for _ in range(n_empty):
        for _attempt in range(8):
            if take(empties(), True):
                break
    order = [positives[i] for i in rng.permutation(len(positives))]
    misses = 0
    i = 0
    while len(chosen) < n and order and misses < 8 * len(order):
        if take(order[i % len(order)](), False):
            misses = 0
        else:
            misses += 1
        i += 1
    out = []
    for q, mask in chosen.items():
        out.append(Expression(phrase(q, rng), "empty" if not mask.any() else q.kind, q, mask))
    return out


def _positive_generators(pair: _Pair, rng: np.random.Generator) -> list[Generator]:
    """One generator per non-empty expression type the pair can answer."""
    classes = pair.class_queries(present=True)
    if not classes:
        return []
    transitions = pair.transition_queries(present=True)
    gens: list[Generator] = [lambda: _choice(rng, classes)]
    if transitions:
        gens.append(lambda: _choice(rng, transitions))
    anything = Query(pair.space)

    def position() -> Query | None:
        base = _choice(rng, [anything, *classes, *transitions])
        areas = cell_areas(cut(base, pair.maps))
        regions = [r for r in REGIONS if areas[list(region_cells(r))].sum() > 0]
        return _replace(base, position=_choice(rng, regions)) if regions else None

    def instance() -> Query | None:
        base = _choice(rng, [anything, *classes, *transitions])
        if rng.random() < 0.25:  # sometimes in a place: "the largest new building on the left side"
            base = _replace(base, position=_choice(rng, list(REGIONS)))
        if not components(cut(base, pair.maps))[1]:
            return None
        return _replace(base, instance=_choice(rng, list(INSTANCES)))

    return [*gens, position, instance]


def _empty_generator(pair: _Pair, rng: np.random.Generator) -> Generator:
    """Queries with an empty target: an absent class or transition (sometimes in a place, or its
    largest object), any change on a pair without change, or a present class where it is not."""
    absent = pair.class_queries(present=False) + pair.transition_queries(present=False)
    present = pair.class_queries(present=True)
    if not present:
        absent.append(Query(pair.space))  # "changes" on a pair without change

    def draw() -> Query | None:
        if absent and (not present or rng.random() < 0.7):
            q = _choice(rng, absent)
            u = rng.random()
            if u < 0.3:
                q = _replace(q, position=_choice(rng, list(REGIONS)))
            elif u < 0.45:
                q = _replace(q, instance=_choice(rng, list(INSTANCES)))
            return q
        if not present:
            return None
        base = _choice(rng, present)
        mask = cut(base, pair.maps)
        regions = [r for r in REGIONS if not (mask & region_mask(r, pair.h, pair.w)).any()]
        return _replace(base, position=_choice(rng, regions)) if regions else None

    return draw


def _replace(q: Query, **changes: Any) -> Query:
    d: dict[str, Any] = {"space": q.space, "cls": q.cls, "transition": q.transition, "position": q.position,
         "instance": q.instance, "date": q.date}
    d.update(changes)
    return Query(**d)


def maps_of(sample: dict[str, Any]) -> tuple[Any, str]:
    """(class maps, dataset id) of a dataset sample (docs/design.md): `mask` [H, W] or `sem` [2, H, W]."""
    dataset = sample.get("dataset")
    if dataset not in ("levir_mci", "second_cc", "second"):
        raise ChangeAgentError(f"grounding: no referring expressions for dataset {dataset!r} "
                               "(needs class maps: levir_mci, second_cc, second)")
    key = "mask" if MAP_DATES[space_of(dataset)] == 1 else "sem"
    if key not in sample:
        raise ChangeAgentError(f"grounding: sample {sample.get('name')!r} of {dataset} has no {key!r} maps")
    return sample[key], dataset


def derive_sample(sample: dict[str, Any], seed: int = 0, epoch: int = 0, n: int = 8,
                  empty_share: float = 0.2) -> list[Expression]:
    """`derive` on a dataset sample, seeded by (seed, its name, epoch): the data loader's entry point."""
    maps, dataset = maps_of(sample)
    return derive(maps, dataset, sample_seed(seed, str(sample.get("name", "")), epoch), n=n,
                  empty_share=empty_share)


def rcd_prompts(dataset: str) -> dict[int, list[tuple[int, Query, str]]]:
    """Referring-Change-Detection queries of a SECOND-style dataset: for date 1 and date 2, every land-cover
    class as (class id, Query, prompt), the prompt "<class> in the first/second image" (SPEC §9: query
    every class, assemble a semantic map per date)."""
    space = space_of(dataset)
    if MAP_DATES[space] != 2:
        raise ChangeAgentError(f"grounding: the Referring-Change-Detection protocol needs per-date land-cover maps; "
                               f"{dataset} has one change map")
    which = {1: "first", 2: "second"}
    out: dict[int, list[tuple[int, Query, str]]] = {}
    for date in (1, 2):
        rows = []
        for t in LEXICONS[space].terms:
            plural = CLASS_FORMS[space][t.name][0][0]
            rows.append((t.id, Query(space, cls=t.name, date=date), f"{plural} in the {which[date]} image"))
        out[date] = rows
    return out
