"""`parse(expression, dataset) -> Query`: read a referring change expression with the shared lexicon.

The parser finds, with `changeagent.data.lexicon` (longest phrase first, whole words, any case):
class names and groups, from-to connectors ("became", "turned into", "replaced", ...), dates ("first
image", "after", ...) and events ("new", "demolished", ...), a position ("top left corner", "left
side", "in the middle"), a size word ("largest", "smallest"). Everything else must be a grammar word
(`FILLER`: "segment", "the", "areas", "that", "where", "did", ...); any other word is an error naming
it and the vocabulary known, so a word we cannot read never silently widens the answer.

Rules: two classes need a connector between them (X <forward> Y: X became Y; Y <backward> X: Y
replaced X) and make a transition (SECOND only). One class after a forward connector is read on the
date-2 map ("areas that became buildings"), before it on the date-1 map ("buildings that changed
into ..."); dates and events give the date otherwise ("new" / "second image" -> 2, "demolished" /
"first image" -> 1); sources that disagree are an error. LEVIR-MCI's one change map has no direction:
dates and events are read and dropped there (LEVIR's classes are changed roads and buildings).
"""

from __future__ import annotations

import re

from changeagent.data.grounding.query import INSTANCES, MAP_DATES, REGIONS, Query, space_of
from changeagent.data.lexicon import (
    CLASS_GROUPS,
    GROUP_WORDS,
    LEXICONS,
    SIZE_WORDS,
    TRANSITION_BACKWARD,
    TRANSITION_FORWARD,
    Span,
    date_forms,
    find_classes,
    find_regions,
    find_spans,
)
from changeagent.errors import ChangeAgentError

# grammar words an expression may hold besides what the lexicon names (lower case)
FILLER = frozenset("""
a all along an and any are area areas as at be been being by can changed change changes changing could did do does
every everything find for from give got had has have highlight how i image in is it its just land locate
made mark me my of on one only or outline part parts piece pieces pixel pixels place places please region
regions scene segment select show some spot spots tell that the their them there these this those tile
us was were what where which with zone zones get got into to map maps mask object objects patch patches
happen happened occur occurred take taken took now see seen cover covered picture
""".split())

_SIZE_FORMS = {w: k for k, words in SIZE_WORDS.items() for w in words}
_CONNECTORS = {**{w: "forward" for w in TRANSITION_FORWARD}, **{w: "backward" for w in TRANSITION_BACKWARD}}
_WORD = re.compile(r"[a-z0-9_]+(?:[-'][a-z0-9_]+)*")


def vocabulary(dataset: str) -> dict[str, list[str]]:
    """What the parser reads for a dataset: class words, groups, places, sizes, dates/events, connectors."""
    space = space_of(dataset)
    lex = LEXICONS[space]
    return {
        "classes": sorted({w for t in lex.terms for w in t.words if "_" not in w}),
        "groups": sorted(CLASS_GROUPS.get(space, {})),
        "places": list(REGIONS),
        "sizes": sorted(_SIZE_FORMS),
        "dates": sorted(date_forms()),
        "connectors": sorted(_CONNECTORS),
    }


def _vocab_message(dataset: str) -> str:
    v = vocabulary(dataset)
    lex = LEXICONS[space_of(dataset)]
    classes = ", ".join(f"{t.name} ({t.phrase})" if t.phrase != t.name else t.name for t in lex.terms)
    groups = f"; groups: {', '.join(v['groups'])}" if v["groups"] else ""
    return (f"known classes: {classes}{groups}; places: {', '.join(v['places'])} (and 'corner', 'upper', "
            f"'lower', 'middle' forms); sizes: {', '.join(INSTANCES)}; dates: first/second image, before/after, "
            "new, demolished, ...")


def _normalise(expression: str) -> str:
    text = " ".join(expression.strip().lower().split())
    return text.rstrip(".?!;,:").strip()


def _blank(text: str, spans: list[Span]) -> str:
    chars = list(text)
    for s in spans:
        chars[s.start:s.end] = " " * (s.end - s.start)
    return "".join(chars)


def _free(spans: list[Span], taken: list[Span]) -> list[Span]:
    """`spans` that overlap none of `taken` (an earlier, longer reading wins)."""
    return [s for s in spans if all(s.end <= t.start or s.start >= t.end for t in taken)]


def _class_spans(text: str, space: str) -> list[Span]:
    lex = LEXICONS[space]
    names = {t.id: t.name for t in lex.terms}
    spans = [Span(names[m.id], m.text, m.start, m.end) for m in find_classes(text, lex)]
    forms = {w: g for g in CLASS_GROUPS.get(space, {}) for w in GROUP_WORDS[g]}
    groups = find_spans(_blank(text, spans), forms)
    return sorted(spans + groups, key=lambda s: s.start)


def parse(expression: str, dataset: str) -> Query:
    """The Query of a referring change expression on `dataset`'s maps (levir_mci, second_cc, second).

    Raises ChangeAgentError for an empty expression, a word it does not know (listing the known
    vocabulary), or a reading it cannot make (two classes without a connector, two places, ...).
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ChangeAgentError("grounding: the expression is empty; say what to segment, e.g. 'new buildings'")
    space = space_of(dataset)
    two_maps = MAP_DATES[space] == 2
    text = _normalise(expression)
    classes = _class_spans(text, space)
    taken = list(classes)
    regions = _free(find_regions(text), taken)
    taken += regions
    sizes = _free(find_spans(text, _SIZE_FORMS), taken)
    taken += sizes
    dates = _free(find_spans(text, date_forms()), taken)
    taken += dates
    connectors = _free(find_spans(text, _CONNECTORS), taken)
    taken += connectors

    unknown = [w for w in _WORD.findall(_blank(text, taken)) if w not in FILLER]
    if unknown:
        raise ChangeAgentError(f"grounding: unknown word(s) {', '.join(repr(w) for w in dict.fromkeys(unknown))} "
                               f"in {expression.strip()!r}; {_vocab_message(dataset)}")
    if len({r.value for r in regions}) > 1:
        raise ChangeAgentError(f"grounding: {expression.strip()!r} names several places "
                               f"({', '.join(r.text for r in regions)}); name one")
    if len({s.value for s in sizes}) > 1:
        raise ChangeAgentError(f"grounding: {expression.strip()!r} asks for both the largest and the smallest")
    position = regions[0].value if regions else None
    instance = sizes[0].value if sizes else None

    cls, transition, date_votes = None, None, []
    if len(classes) > 2:
        raise ChangeAgentError(f"grounding: {expression.strip()!r} names {len(classes)} classes; "
                               "name one class, or one 'X that became Y'")
    if len(classes) == 2:
        first, second = classes
        between = [c for c in connectors if first.end <= c.start and c.end <= second.start]
        if not between:
            raise ChangeAgentError(f"grounding: {expression.strip()!r} names two classes ({first.text}, {second.text}) "
                                   "without saying how one became the other (e.g. 'X that became Y')")
        if not two_maps:
            raise ChangeAgentError(f"grounding: {expression.strip()!r} asks for a from-to transition, but "
                                   f"{dataset} has one change map (no transitions); name one class")
        direction = between[-1].value
        transition = (first.value, second.value) if direction == "forward" else (second.value, first.value)
    elif len(classes) == 1:
        cls = classes[0].value
        c = classes[0]
        for conn in connectors:  # a connector before the class: the class is the result, after it: the source
            forward = conn.value == "forward"
            before = conn.end <= c.start
            date_votes.append((2 if forward == before else 1, conn.text))
    for d in dates:
        vote = {"1": 1, "2": 2, "appear": 2, "disappear": 1}[d.value]
        date_votes.append((vote, d.text))
    date = None
    if cls is not None and two_maps and date_votes:
        values = {v for v, _ in date_votes}
        explicit = {int(d.value) for d in dates if d.value in ("1", "2")}
        if len(explicit) == 2:  # "in the first and the second image": either map
            values = set()
        elif len(values) > 1:
            listed = ", ".join(f"'{w}' (date {v})" for v, w in date_votes)
            raise ChangeAgentError(f"grounding: {expression.strip()!r} names contradicting dates: {listed}")
        date = values.pop() if values else None
    return Query(space, cls=cls, transition=transition, position=position, instance=instance, date=date)


def try_parse(expression: str, dataset: str) -> Query | ChangeAgentError:
    """`parse`, returning the error instead of raising it: the program route answers only what it reads."""
    try:
        return parse(expression, dataset)
    except ChangeAgentError as e:
        return e
