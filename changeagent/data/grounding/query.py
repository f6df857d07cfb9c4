"""The structured meaning of a referring change expression (`Query`) and its cut from class maps (`cut`).

A query selects pixels of a pair's class maps in four steps:

1. **what** — `cls` (a class or group name of the label space; None: every changed pixel) or a
   `transition` (from, to) (SECOND only). On SECOND-style maps `date` says which map the class is read
   on: 1 = the date-1 map ("buildings that disappeared", "trees in the first image"), 2 = the date-2
   map ("new buildings", "areas that became ground"), None = either map ("changed buildings"). On
   LEVIR-MCI (one change map: 0 background, 1 road, 2 building, no direction) there is no date.
2. **where** — `position`: a 3x3 grid cell or side (`lexicon.GRID_CELLS`, `lexicon.SIDES`); the
   pixels are clipped to the region's cells (the grid of `lexicon.cell_index`), as the QA position
   questions count them.
3. **which** — `instance`: "largest" / "smallest" keeps one 8-connected component of area >= 6 px
   (`lexicon.components`) of what is left, the first in scan order on a tie; none -> empty.

`kind` names the expression type (`EXPRESSION_TYPES`; "empty" is given by derivation to an expression
whose target is empty). Maps: LEVIR-style `[H, W]` (one class map) or SECOND-style `[2, H, W]`
(date-1 and date-2 land cover, 0 = unchanged); `IGNORE_INDEX` pixels are never selected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from changeagent.data.lexicon import (
    CLASS_GROUPS,
    GRID_CELLS,
    LEXICONS,
    SIDES,
    cell_index,
    components,
    region_cells,
)
from changeagent.errors import ChangeAgentError

EXPRESSION_TYPES = ("class", "transition", "position", "instance", "empty")
INSTANCES = ("largest", "smallest")
REGIONS = (*GRID_CELLS, *SIDES)
# label space -> class maps per pair (1: one change map, 2: a land-cover map per date)
MAP_DATES = {"levir": 1, "second": 2}
DATASET_SPACE = {"levir_mci": "levir", "second_cc": "second", "second": "second"}


def space_of(dataset: str) -> str:
    """Label space ("levir" / "second") of a dataset id with class maps (or of a space id)."""
    key = DATASET_SPACE.get(dataset, dataset)
    if key not in MAP_DATES:
        raise ChangeAgentError(f"grounding: no class maps for {dataset!r}; datasets: {sorted(DATASET_SPACE)}")
    return key


def class_ids(space: str, name: str) -> tuple[int, ...]:
    """Class ids of a class name (`lexicon` term name, e.g. "building") or group name ("vegetation")."""
    lex = LEXICONS[space]
    for t in lex.terms:
        if t.name == name:
            return (t.id,)
    groups = CLASS_GROUPS.get(space, {})
    if name in groups:
        return groups[name]
    known = [t.name for t in lex.terms] + list(groups)
    raise ChangeAgentError(f"grounding: {name!r} is not a class of {space} maps; known: {', '.join(known)}")


@dataclass(frozen=True)
class Query:
    """What a referring expression selects (see the module docstring).

    space: label space, "levir" (LEVIR-MCI) or "second" (SECOND, SECOND-CC).
    cls: class or group name (`lexicon` term names: road, building, water, ground, low_vegetation, tree,
        playground; groups: vegetation), None = any change. Not with `transition`.
    transition: (from, to) class/group names, SECOND only.
    position: region name, one of `REGIONS` ("top left", ..., "center", ..., "left side", ...).
    instance: "largest" | "smallest" (one connected component).
    date: 1 | 2 | None, the map `cls` is read on (SECOND only; None = either).
    """

    space: str
    cls: str | None = None
    transition: tuple[str, str] | None = None
    position: str | None = None
    instance: str | None = None
    date: int | None = None

    def __post_init__(self) -> None:
        if self.space not in MAP_DATES:
            raise ChangeAgentError(f"query: space must be one of {sorted(MAP_DATES)}, got {self.space!r}")
        if self.cls is not None:
            class_ids(self.space, self.cls)
        if self.transition is not None:
            if MAP_DATES[self.space] != 2:
                raise ChangeAgentError(f"query: {self.space} maps have no from-to transitions (one change map)")
            if self.cls is not None:
                raise ChangeAgentError("query: give either a class or a transition, not both")
            if len(self.transition) != 2:
                raise ChangeAgentError(f"query: transition must be (from, to), got {self.transition!r}")
            for name in self.transition:
                class_ids(self.space, name)
            object.__setattr__(self, "transition", tuple(self.transition))
        if self.position is not None and self.position not in REGIONS:
            raise ChangeAgentError(f"query: position {self.position!r} is not a region; known: {', '.join(REGIONS)}")
        if self.instance is not None and self.instance not in INSTANCES:
            raise ChangeAgentError(f"query: instance must be one of {INSTANCES}, got {self.instance!r}")
        if self.date is not None:
            if self.date not in (1, 2):
                raise ChangeAgentError(f"query: date must be 1, 2 or None, got {self.date!r}")
            if MAP_DATES[self.space] != 2 or self.cls is None:
                raise ChangeAgentError("query: a date applies to a class on SECOND-style maps only")

    @property
    def kind(self) -> str:
        """Expression type of a non-empty target: instance > position > transition > class."""
        if self.instance:
            return "instance"
        if self.position:
            return "position"
        if self.transition:
            return "transition"
        return "class"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["transition"] = list(self.transition) if self.transition else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Query:
        if not isinstance(d, dict):
            raise ChangeAgentError(f"query: expected a mapping, got {type(d).__name__}")
        known = {"space", "cls", "transition", "position", "instance", "date"}
        bad = sorted(set(d) - known)
        if bad:
            raise ChangeAgentError(f"query: unknown key(s) {bad}; known: {sorted(known)}")
        t = d.get("transition")
        return cls(**{**d, "transition": tuple(t) if t else None})


def as_maps(maps: Any, space: str) -> np.ndarray:
    """Class maps as an int64 numpy array of the space's shape: [H, W] (levir) or [2, H, W] (second)."""
    if hasattr(maps, "detach"):  # a torch tensor (predicted or target maps)
        maps = maps.detach().cpu().numpy()
    arr = np.asarray(maps)
    want = MAP_DATES[space]
    ok = arr.ndim == 2 if want == 1 else (arr.ndim == 3 and arr.shape[0] == 2)
    if not ok or arr.dtype.kind not in "iu":
        raise ChangeAgentError(f"grounding: {space} maps must be integer {'[H, W]' if want == 1 else '[2, H, W]'}, "
                               f"got {arr.dtype} {list(arr.shape)}")
    return arr.astype(np.int64, copy=False)


def region_mask(position: str, h: int, w: int) -> np.ndarray:
    """bool [h, w]: the pixels of a grid region."""
    return np.isin(cell_index(h, w), region_cells(position))


def select(query: Query, maps: np.ndarray) -> np.ndarray:
    """Step 1 (what) of `cut` on checked maps: bool [H, W]."""
    k = len(LEXICONS[query.space].terms)
    if MAP_DATES[query.space] == 1:
        if query.cls is None:
            return (maps >= 1) & (maps <= k)
        return np.isin(maps, class_ids(query.space, query.cls))
    a, b = maps[0], maps[1]
    if query.transition is not None:
        src, dst = (class_ids(query.space, n) for n in query.transition)
        return np.isin(a, src) & np.isin(b, dst)
    if query.cls is None:
        return ((a >= 1) & (a <= k)) | ((b >= 1) & (b <= k))
    ids = class_ids(query.space, query.cls)
    if query.date == 1:
        return np.isin(a, ids)
    if query.date == 2:
        return np.isin(b, ids)
    return np.isin(a, ids) | np.isin(b, ids)


def pick_instance(mask: np.ndarray, which: str) -> np.ndarray:
    """The largest / smallest 8-connected component (area >= 6 px) of a bool mask; empty when none."""
    labels, comps = components(mask)
    if not comps:
        return np.zeros(mask.shape, bool)
    areas = [c.area for c in comps]
    best = comps[int(np.argmax(areas) if which == "largest" else np.argmin(areas))]  # first on a tie
    return labels == best.label


def cut(query: Query, maps: Any) -> np.ndarray:
    """The target mask of `query` on a pair's class maps: bool [H, W].

    maps: int [H, W] (levir) or [2, H, W] (second), numpy or torch (ground truth, or a model's
    predicted semantic maps: the program route).
    """
    arr = as_maps(maps, query.space)
    mask = select(query, arr)
    if query.position is not None:
        mask &= region_mask(query.position, *mask.shape)
    if query.instance is not None:
        mask = pick_instance(mask, query.instance)
    return mask
