"""`phrase(query, rng) -> str`: say a Query in words, in one of several seeded phrasings.

Every phrasing is read back to the same Query by `parse` (tests check each template): the words come
from `changeagent.data.lexicon` (class words, date/event words, grid positions) and the parser's
grammar words. The position words follow the LEVIR-MCI captions ("in the top left corner", "on the
left side", "in the middle").
"""

from __future__ import annotations

import numpy as np

from changeagent.data.grounding.query import Query

# how a class is said: (plural-like forms, singular forms); every form is a lexicon word of its class
CLASS_FORMS: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "levir": {
        "road": (("roads", "streets"), ("road",)),
        "building": (("buildings", "houses"), ("building", "house")),
    },
    "second": {
        "water": (("water", "water bodies"), ("water body",)),
        "ground": (("bare ground", "non-vegetated ground surface", "bare land"), ("bare ground area",)),
        "low_vegetation": (("low vegetation", "grass"), ("low vegetation area", "lawn")),
        "tree": (("trees", "forest"), ("tree", "forest")),
        "building": (("buildings", "houses"), ("building", "house")),
        "playground": (("playgrounds", "sports fields"), ("playground", "sports field")),
        "vegetation": (("vegetation", "greenery"), ("vegetation area",)),
    },
}
# region name -> how the captions say it
REGION_FORMS: dict[str, tuple[str, ...]] = {
    "top left": ("in the top left corner", "at the top left", "in the upper left corner"),
    "top": ("at the top", "at the top of the scene"),
    "top right": ("in the top right corner", "at the top right", "in the upper right corner"),
    "left": ("on the left", "at the left of the scene"),
    "center": ("in the middle", "in the center", "in the centre of the scene"),
    "right": ("on the right", "at the right of the scene"),
    "bottom left": ("in the bottom left corner", "at the bottom left", "in the lower left corner"),
    "bottom": ("at the bottom", "at the bottom of the scene"),
    "bottom right": ("in the bottom right corner", "at the bottom right", "in the lower right corner"),
    "top side": ("along the top side", "on the top side", "along the top edge"),
    "left side": ("on the left side", "along the left edge", "on the left part"),
    "right side": ("on the right side", "along the right edge", "on the right part"),
    "bottom side": ("along the bottom side", "on the bottom side", "along the bottom edge"),
}
PREFIXES = ("", "", "segment ", "show ", "show me ", "find ", "mark ", "highlight ")

_CLASS_TEMPLATES = {  # {c}: plural form
    None: ("changed {c}", "{c} that changed", "changes of {c}", "the changed {c}"),
    1: ("{c} that disappeared", "{c} in the first image", "areas that were {c} before", "removed {c}",
        "{c} before the change"),
    2: ("new {c}", "{c} in the second image", "areas that became {c}", "{c} that appeared",
        "{c} after the change"),
}
BUILT_CLASSES = ("building", "road", "playground")  # "demolished" / "newly built" fit these only
_BUILT_TEMPLATES = {None: (), 1: ("demolished {c}",), 2: ("newly built {c}",)}
_LEVIR_CLASS_TEMPLATES = ("new {c}", "changed {c}", "the {c} that changed", "{c} that appeared", "newly built {c}")
_ANY_TEMPLATES = ("changes", "changed areas", "the changed regions", "all changes", "every changed pixel")
_TRANSITION_TEMPLATES = ("{a} that became {b}", "{a} turned into {b}", "areas changed from {a} to {b}",
                         "{b} that replaced {a}", "where {a} turned into {b}", "{a} converted to {b}",
                         "{b} where there was {a}")
_INSTANCE_TEMPLATES = {  # {s}: singular form, {w}: largest / smallest word
    None: ("the {w} changed {s}", "the {w} {s} that changed"),
    1: ("the {w} {s} that disappeared", "the {w} removed {s}", "the {w} {s} in the first image"),
    2: ("the {w} new {s}", "the {w} {s} that appeared", "the {w} {s} in the second image"),
}
_INSTANCE_ANY = ("the {w} change", "the {w} changed area", "the {w} changed region")
_SIZE = {"largest": ("largest", "biggest"), "smallest": ("smallest", "tiniest")}


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _what(query: Query, rng: np.random.Generator) -> str:
    """The class / transition part, without position or size."""
    forms = CLASS_FORMS[query.space]
    if query.transition is not None:
        a, b = (_pick(rng, forms[n][0]) for n in query.transition)
        return _pick(rng, _TRANSITION_TEMPLATES).format(a=a, b=b)
    if query.cls is None:
        return _pick(rng, _ANY_TEMPLATES)
    c = _pick(rng, forms[query.cls][0])
    templates: tuple[str, ...]
    if query.space == "levir":
        templates = _LEVIR_CLASS_TEMPLATES
    else:
        templates = _CLASS_TEMPLATES[query.date]
        if query.cls in BUILT_CLASSES:
            templates = (*templates, *_BUILT_TEMPLATES[query.date])
    return _pick(rng, templates).format(c=c)


def _which(query: Query, rng: np.random.Generator) -> str:
    """The size part with its class ("the largest new building")."""
    assert query.instance is not None
    w = _pick(rng, _SIZE[query.instance])
    if query.transition is not None:
        return f"the {w} " + _what(Query(query.space, transition=query.transition), rng)
    if query.cls is None:
        return _pick(rng, _INSTANCE_ANY).format(w=w)
    s = _pick(rng, CLASS_FORMS[query.space][query.cls][1])
    templates = _INSTANCE_TEMPLATES[None if query.space == "levir" else query.date]
    if query.space == "levir":
        templates = (*templates, *_INSTANCE_TEMPLATES[2][:2])
    return _pick(rng, templates).format(w=w, s=s)


def phrase(query: Query, rng: np.random.Generator | int | None = None, prefix: bool = True) -> str:
    """One wording of `query` (lower case, no final full stop); `rng` (or a seed) picks the variant."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    core = _which(query, rng) if query.instance else _what(query, rng)
    if query.position is not None:
        core = f"{core} {_pick(rng, REGION_FORMS[query.position])}"
    return (_pick(rng, PREFIXES) if prefix else "") + core
