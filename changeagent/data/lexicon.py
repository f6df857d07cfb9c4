"""The change language shared by questions (QA, SPEC §8) and referring expressions (grounding, §9).

One place for the words a user (or a dataset's generator) uses to talk about a change:

- **Classes** per label space (`LEXICONS`): each class id of a dataset's maps has a `name` (the dataset's
  class name, `data/constants.py`), an `answer` (the answer string of the QA datasets: CDVQA's
  `NVG_surface`, `buildings`, `low_vegetation`, `trees`, `water`, `playgrounds`; QAG-360K adds
  `green_house`, `road`, `bridge`, `others`), a `phrase` (how CDVQA's questions name it: "non-vegetated
  ground surface", ...) and `synonyms`. Label spaces: `"second"` (SECOND ids, SPEC §1.2: used by second,
  second_cc, cdvqa; 1 water, 2 ground, 3 low vegetation, 4 tree, 5 building, 6 playground), `"levir"`
  (LEVIR-MCI: 1 road, 2 building), `"qag360k"` (the SECOND classes plus QAG-360K's four answer-only
  classes, ids 7..10, which no map of ours holds). `find_classes(text, lexicon)` finds the classes a text
  names (longest phrase first, whole words, case-insensitive, non-overlapping), `class_of_answer`.
- **Dates**: `DATE_WORDS[1]` ("pre-change", "pre-event", "first image", "before", ...) and
  `DATE_WORDS[2]` ("post-change", "post-event", "second image", "after", ...); `find_dates(text)` ->
  the set of dates named. `APPEAR_WORDS` ("built", "constructed", "appeared", "new", ...) describe a
  class present after the change (date 2), `DISAPPEAR_WORDS` ("demolished", "removed", ...) one present
  before it (date 1): `find_event(text)` -> 2, 1 or None.
- **Positions**: a 3x3 grid, row-major cell ids 0..8 named `GRID_CELLS` = top left, top, top right,
  left, center, right, bottom left, bottom, bottom right (the LEVIR captions' words; synonyms "upper",
  "lower", "middle", "centre", "... corner", "... of the scene"), plus the four sides `SIDES` (top side
  = top row, left side = left column, ...; "top edge", "left part", ... too). `find_region(text)` ->
  (name, cell ids) of the region a text names, `cell_of(y, x, h, w)`, `cell_areas(mask)` -> pixels per
  cell. Cell row = floor(3 y / H) (column likewise), so a 256-px tile splits 86/85/85.
- **Objects**: `components(mask, min_area=6)` -> connected components with 8-connectivity whose area is
  at least `min_area` (= "area > 5 px", Change-Agent's `compute_object_num` rule, SPEC §8), by
  `scipy.ndimage.label`.
- **Ratios**: `ratio_bin(num, den)` -> CDVQA's bins: `"0"` when num is exactly 0, else `"lo_to_hi"`
  with the percentage in (lo, lo + 10] (10 % -> `0_to_10`, 10.01 % -> `10_to_20`, 100 % ->
  `90_to_100`), computed in integers so that a bin edge is exact. `RATIO_BINS` lists the 11 answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import ndimage

# ---------------------------------------------------------------- classes


@dataclass(frozen=True)
class ClassTerm:
    """One class of a label space and the words for it.

    id: class id in the dataset's maps; name: the dataset's class name; answer: the QA answer string;
    phrase: how generated questions name it; synonyms: other words a user may write (lower-case).
    """

    id: int
    name: str
    answer: str
    phrase: str
    synonyms: tuple[str, ...] = ()

    @property
    def words(self) -> tuple[str, ...]:
        """Every surface form matched in a text: phrase, synonyms, the answer and the name."""
        forms = (self.phrase, *self.synonyms, self.answer.replace("_", " "), self.name.replace("_", " "),
                 self.answer, self.name)
        return tuple(dict.fromkeys(f.lower() for f in forms))


@dataclass(frozen=True)
class ClassLexicon:
    """The classes of one label space (class 0 = unchanged/background is not a term)."""

    id: str
    terms: tuple[ClassTerm, ...]
    mapped: tuple[int, ...] = field(default=())  # ids present in the maps (others: answer-only classes)
    order: tuple[int, ...] = field(default=())  # ids in question order (ties, generated groups); () = ids

    @property
    def ordered(self) -> tuple[int, ...]:
        """Class ids in question order: CDVQA's for "second" (ground, tree, low vegetation, water,
        building, playground: the order of its question groups; its largest/smallest answer on a tile
        without change is the first, NVG_surface), else by id."""
        return self.order or self.ids

    def term(self, class_id: int) -> ClassTerm:
        for t in self.terms:
            if t.id == class_id:
                return t
        raise KeyError(f"{self.id}: no class id {class_id}")

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(t.id for t in self.terms)

    @property
    def answers(self) -> tuple[str, ...]:
        return tuple(t.answer for t in self.terms)

    @cached_property
    def _pattern(self) -> tuple[re.Pattern[str], dict[str, int]]:
        form_to_id: dict[str, int] = {}
        for t in self.terms:
            for f in t.words:
                form_to_id.setdefault(f, t.id)
        alts = sorted(form_to_id, key=len, reverse=True)  # longest first: "low vegetation" before "vegetation"
        return re.compile(r"(?<![\w-])(" + "|".join(re.escape(a) for a in alts) + r")(?![\w-])", re.I), form_to_id


def _term(id: int, name: str, answer: str, phrase: str, *synonyms: str) -> ClassTerm:
    return ClassTerm(id, name, answer, phrase, synonyms)


SECOND_TERMS = (
    _term(1, "water", "water", "water", "water body", "water bodies", "river", "rivers", "lake", "lakes",
          "pond", "ponds"),
    _term(2, "ground", "NVG_surface", "non-vegetated ground surface", "non-vegetated ground surfaces",
          "nvg surface", "non-vegetated surface", "non-vegetated ground", "ground surface", "bare ground",
          "bare land", "bareland", "bare soil", "ground"),
    _term(3, "low_vegetation", "low_vegetation", "low vegetation", "grass", "grassland", "lawn", "lawns"),
    _term(4, "tree", "trees", "trees", "tree", "forest", "forests", "woodland"),
    _term(5, "building", "buildings", "buildings", "building", "house", "houses"),
    _term(6, "playground", "playgrounds", "playgrounds", "playground", "sports field", "sports fields",
          "playing field", "playing fields"),
)
QAG_EXTRA_TERMS = (  # QAG-360K answer classes without a SECOND id (its other source datasets)
    _term(7, "green_house", "green_house", "green houses", "green house", "greenhouse", "greenhouses"),
    _term(8, "road", "road", "roads", "road", "street", "streets"),
    _term(9, "bridge", "bridge", "bridges", "bridge"),
    _term(10, "others", "others", "others", "other"),
)
LEVIR_TERMS = (
    _term(1, "road", "road", "roads", "road", "street", "streets", "path", "paths", "lane", "lanes"),
    _term(2, "building", "buildings", "buildings", "building", "house", "houses", "villa", "villas",
          "bungalow", "bungalows"),
)

LEXICONS: dict[str, ClassLexicon] = {
    "second": ClassLexicon("second", SECOND_TERMS, mapped=(1, 2, 3, 4, 5, 6), order=(2, 4, 3, 1, 5, 6)),
    "levir": ClassLexicon("levir", LEVIR_TERMS, mapped=(1, 2)),
    "qag360k": ClassLexicon("qag360k", SECOND_TERMS + QAG_EXTRA_TERMS, mapped=(1, 2, 3, 4, 5, 6),
                            order=(2, 4, 3, 1, 5, 6, 7, 8, 9, 10)),
}
# dataset id -> label space of its maps / questions
DATASET_LEXICON = {"second": "second", "second_cc": "second", "cdvqa": "second", "qag360k": "qag360k",
                   "levir_mci": "levir"}

# CDVQA's six class answers -> SECOND ids (SPEC §8)
CDVQA_ANSWER_CLASSES: dict[str, int] = {t.answer: t.id for t in SECOND_TERMS}


def lexicon_for(dataset: str) -> ClassLexicon:
    """The class lexicon of a dataset id (or a label-space id: second, levir, qag360k)."""
    key = DATASET_LEXICON.get(dataset, dataset)
    if key not in LEXICONS:
        raise KeyError(f"no class lexicon for {dataset!r}; known: {sorted(DATASET_LEXICON)}")
    return LEXICONS[key]


@dataclass(frozen=True)
class Mention:
    """A class named in a text: its id, the matched words and their character span."""

    id: int
    text: str
    start: int
    end: int


def find_classes(text: str, lexicon: ClassLexicon) -> list[Mention]:
    """Every class the text names, in text order (longest phrase wins, whole words, any case)."""
    pattern, form_to_id = lexicon._pattern
    return [Mention(form_to_id[m.group(1).lower()], m.group(1), m.start(1), m.end(1))
            for m in pattern.finditer(text)]


def class_of_answer(answer: str, lexicon: ClassLexicon) -> int | None:
    """Class id of an answer string (`buildings` -> 5 in "second"), None when it is not a class."""
    for t in lexicon.terms:
        if t.answer == answer:
            return t.id
    return None


# ---------------------------------------------------------------- dates

DATE_WORDS: dict[int, tuple[str, ...]] = {
    1: ("pre-change", "pre-event", "pre change", "pre event", "first image", "first date", "first time",
        "earlier image", "older image", "image a", "date a", "date 1", "time 1", "before"),
    2: ("post-change", "post-event", "post change", "post event", "second image", "second date",
        "second time", "later image", "newer image", "image b", "date b", "date 2", "time 2", "after"),
}
APPEAR_WORDS = ("built", "constructed", "appeared", "appear", "added", "new", "newly", "emerged", "erected")
DISAPPEAR_WORDS = ("demolished", "removed", "disappeared", "disappear", "destroyed", "torn down", "vanished",
                   "cleared")


def _words_re(words: tuple[str, ...]) -> re.Pattern[str]:
    alts = sorted(words, key=len, reverse=True)
    return re.compile(r"(?<![\w-])(" + "|".join(re.escape(w) for w in alts) + r")(?![\w-])", re.I)


_DATE_RE = {d: _words_re(w) for d, w in DATE_WORDS.items()}
_APPEAR_RE, _DISAPPEAR_RE = _words_re(APPEAR_WORDS), _words_re(DISAPPEAR_WORDS)


def find_dates(text: str) -> set[int]:
    """The dates a text names: {1}, {2}, {1, 2} (both) or set() (none)."""
    return {d for d, r in _DATE_RE.items() if r.search(text)}


def find_event(text: str) -> int | None:
    """2 when the text says a thing appeared (built, new, ...), 1 when it disappeared (demolished,
    removed, ...), None for neither or both."""
    a, d = bool(_APPEAR_RE.search(text)), bool(_DISAPPEAR_RE.search(text))
    return 2 if a and not d else 1 if d and not a else None


# ---------------------------------------------------------------- positions

GRID_CELLS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
SIDES: dict[str, tuple[int, ...]] = {"top side": (0, 1, 2), "left side": (0, 3, 6), "right side": (2, 5, 8),
                                     "bottom side": (6, 7, 8)}
_VERT = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
_HORIZ = {"left": "left", "right": "right"}
_SIDE_NOUNS = ("side", "edge", "part", "area", "half", "border")
_CENTER = ("center", "centre", "middle", "central")


def _region_forms() -> dict[str, str]:
    """surface form -> region name (a cell of GRID_CELLS or a side of SIDES)."""
    forms: dict[str, str] = {}
    for v, vn in _VERT.items():
        for h, hn in _HORIZ.items():
            for sep in (" ", "-", ""):
                base = f"{v}{sep}{h}"
                for tail in ("", " corner", " part", " area", " side", " of the scene", " of the image"):
                    forms[base + tail] = f"{vn} {hn}"
        for noun in _SIDE_NOUNS:
            forms[f"{v} {noun}"] = f"{vn} side"
        forms[v] = vn
        for tail in (" of the scene", " of the image", " of the picture", " of the area"):
            forms[v + tail] = vn
    for h, hn in _HORIZ.items():
        for noun in _SIDE_NOUNS:
            forms[f"{h} {noun}"] = f"{hn} side"
        forms[h] = hn
        for tail in (" of the scene", " of the image", " of the picture", " of the area"):
            forms[h + tail] = hn
    for c in _CENTER:
        for tail in ("", " of the scene", " of the image", " of the picture", " of the area", " part", " area"):
            forms[c + tail] = "center"
    return forms


_REGION_FORMS = _region_forms()
_REGION_RE = _words_re(tuple(_REGION_FORMS))


def region_cells(name: str) -> tuple[int, ...]:
    """Cell ids of a region name: one cell of GRID_CELLS or the three of a side."""
    if name in SIDES:
        return SIDES[name]
    return (GRID_CELLS.index(name),)


def find_region(text: str) -> tuple[str, tuple[int, ...]] | None:
    """The first position a text names -> (region name, its cell ids), None when it names none.

    "top left corner" / "upper left" -> ("top left", (0,)); "left side" -> ("left side", (0, 3, 6));
    "in the middle" -> ("center", (4,)); a bare "top" is the top-middle cell.
    """
    m = _REGION_RE.search(text)
    if not m:
        return None
    name = _REGION_FORMS[m.group(1).lower()]
    return name, region_cells(name)


def cell_of(y: int, x: int, h: int, w: int) -> int:
    """Grid cell id (row-major) of pixel (y, x) in an h x w tile: row floor(3y/h), column floor(3x/w)."""
    return (3 * y // h) * 3 + 3 * x // w


def cell_index(h: int, w: int) -> np.ndarray:
    """int64 [h, w] grid cell id of every pixel."""
    rows = (3 * np.arange(h)) // h
    cols = (3 * np.arange(w)) // w
    return rows[:, None] * 3 + cols[None, :]


def cell_areas(mask: np.ndarray) -> np.ndarray:
    """int64 [9] pixels of a boolean/0-1 mask [H, W] per grid cell (row-major, GRID_CELLS order)."""
    m = np.asarray(mask).astype(bool)
    return np.bincount(cell_index(*m.shape)[m], minlength=9).astype(np.int64)


# ---------------------------------------------------------------- objects

EIGHT = np.ones((3, 3), bool)  # 8-connectivity: diagonal neighbours belong to one object
MIN_OBJECT_AREA = 6  # area > 5 px (Change-Agent's compute_object_num)


@dataclass(frozen=True)
class Component:
    """One changed object: label in `components`' label map, area in px, bounding box (y0, x0, y1, x1;
    y1/x1 exclusive), centroid (y, x) and the grid cell of the centroid."""

    label: int
    area: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    cell: int


def components(mask: np.ndarray, min_area: int = MIN_OBJECT_AREA) -> tuple[np.ndarray, list[Component]]:
    """Connected components (8-connected) of a boolean/0-1 mask [H, W] with area >= min_area.

    Returns (labels int32 [H, W]: 0 outside every kept component, 1..n the kept ones in scan order;
    the components). min_area=6 is "area > 5 px" (SPEC §8); min_area=1 keeps every component.
    """
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2:
        raise ValueError(f"components: mask must be [H, W], got shape {m.shape}")
    lab, n = ndimage.label(m, structure=EIGHT)
    if n == 0:
        return np.zeros(m.shape, np.int32), []
    area = np.bincount(lab.reshape(-1), minlength=n + 1)
    keep = np.flatnonzero(area[1:] >= min_area) + 1
    relabel = np.zeros(n + 1, np.int32)
    relabel[keep] = np.arange(1, len(keep) + 1, dtype=np.int32)
    out = relabel[lab]
    h, w = m.shape
    slices = ndimage.find_objects(lab)
    yy, xx = np.nonzero(m)
    labs = lab[yy, xx]  # centroids by bincount: ndimage.center_of_mass is ~10x slower here
    cys = np.bincount(labs, weights=yy, minlength=n + 1) / np.maximum(area, 1)
    cxs = np.bincount(labs, weights=xx, minlength=n + 1) / np.maximum(area, 1)
    comps = []
    for new, old in enumerate(keep, start=1):
        sy, sx = slices[old - 1]
        cy, cx = float(cys[old]), float(cxs[old])
        comps.append(Component(new, int(area[old]), (sy.start, sx.start, sy.stop, sx.stop), (cy, cx),
                               cell_of(int(cy), int(cx), h, w)))
    return out, comps


# ---------------------------------------------------------------- ratios

RATIO_BINS = ("0", *(f"{lo}_to_{lo + 10}" for lo in range(0, 100, 10)))


def ratio_bin(num: int, den: int) -> str:
    """CDVQA's ratio answer of num/den: "0" when num == 0, else the bin with 100*num/den in (lo, lo+10].

    Integers, so that the bin edges are exact (1 of 10 px -> "0_to_10", 2 of 10 -> "10_to_20").
    """
    num, den = int(num), int(den)
    if den <= 0 or not 0 <= num <= den:
        raise ValueError(f"ratio_bin: need 0 <= num <= den and den > 0, got {num}/{den}")
    if num == 0:
        return "0"
    k = -(-10 * num // den)  # ceil(10 num / den) in 1..10: the percentage lies in (10(k-1), 10k]
    return RATIO_BINS[k]


def ratio_bin_range(answer: str) -> tuple[float, float]:
    """(lo, hi] fraction range of a ratio answer ("0" -> (0, 0))."""
    if answer not in RATIO_BINS:
        raise ValueError(f"not a ratio answer: {answer!r}; known: {RATIO_BINS}")
    if answer == "0":
        return 0.0, 0.0
    lo, hi = answer.split("_to_")
    return int(lo) / 100, int(hi) / 100


# ---------------------------------------------------------------- grounding additions (referring expressions)
# Words referring expressions need beyond the question language: class groups, object size, the
# from-to connectors of a transition, and every match with its span (a parser blanks what it read).

# a group names several classes of a label space ("vegetation" = low vegetation + trees)
CLASS_GROUPS: dict[str, dict[str, tuple[int, ...]]] = {
    "second": {"vegetation": (3, 4)},
    "levir": {},
    "qag360k": {"vegetation": (3, 4)},
}
GROUP_WORDS: dict[str, tuple[str, ...]] = {  # group name -> its surface forms
    "vegetation": ("vegetation", "vegetated areas", "vegetated area", "greenery", "green areas", "green area"),
}
# "the largest / smallest <class>": one connected component (components(), area >= 6 px)
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "largest": ("largest", "biggest", "the largest", "the biggest"),
    "smallest": ("smallest", "tiniest", "the smallest", "the tiniest"),
}
# "X <forward> Y" = X on date 1 became Y on date 2; "Y <backward> X" = the same transition
TRANSITION_FORWARD = ("became", "become", "becomes", "becoming", "turned into", "turn into", "turns into",
                      "turning into", "turned to", "changed into", "changed to", "change into", "change to",
                      "changes into", "changes to", "changing into", "changing to", "converted into",
                      "converted to", "transformed into", "transformed to", "replaced by", "gave way to",
                      "into", "to")
TRANSITION_BACKWARD = ("replaced", "that replaced", "replacing", "in place of", "instead of", "on former",
                       "where there was", "where there were", "that used to be", "which used to be", "from",
                       "changed from", "turned from", "transformed from", "converted from")
REGION_FORMS = _REGION_FORMS  # surface form -> region name (GRID_CELLS or SIDES)


@dataclass(frozen=True)
class Span:
    """A matched phrase: its canonical value, the matched words and their character span."""

    value: str
    text: str
    start: int
    end: int


def find_spans(text: str, forms: dict[str, str]) -> list[Span]:
    """Every non-overlapping whole-word match of `forms` (surface form -> value) in `text`, longest
    form first at each position, in text order, case-insensitive."""
    if not forms:
        return []
    pattern = _words_re(tuple(forms))
    lower = {k.lower(): v for k, v in forms.items()}
    return [Span(lower[m.group(1).lower()], m.group(1), m.start(1), m.end(1)) for m in pattern.finditer(text)]


def find_regions(text: str) -> list[Span]:
    """Every position a text names (value = region name; `region_cells(value)` gives its cells)."""
    return find_spans(text, REGION_FORMS)


def date_forms() -> dict[str, str]:
    """surface form -> "1" / "2" for DATE_WORDS, "appear" / "disappear" for the event words."""
    forms = {w: str(d) for d, words in DATE_WORDS.items() for w in words}
    forms.update({w: "appear" for w in APPEAR_WORDS})
    forms.update({w: "disappear" for w in DISAPPEAR_WORDS})
    return forms
