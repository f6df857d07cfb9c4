"""Question text -> `rules.Question`, by the words of `changeagent.data.lexicon` (no guessing).

Covers every CDVQA template (the eight types; checked on all 16,441 Val questions), QAG-360K's
phrasings ("mainly transformed from", "has there been any change in"), and free questions of the same
kinds ("how many buildings were built?", "where did the roads change?", "what fraction of the
image changed?"). The type comes from cue words, checked in this order:

| cue | type |
|---|---|
| "changed/turned/transformed/converted (in)to", "become" | change_to_what (date 1) |
| "changed/turned/transformed/converted from", "from what" | change_from_what (date 2) |
| "how many", "number of", "count" | change_count |
| "where", "which part/cell/region/area" | change_location |
| "smallest", "least", "minimum" | smallest_change |
| "largest", "biggest", "greatest", "maximum" | largest_change |
| "ratio", "percentage", "proportion", "percent", "fraction", "how much" | change_ratio_types with a class, else change_ratio (negated: "not changed", "non-change", "unchanged", "remained the same") |
| "increase(d)", "grow/grew/grown", "expand(ed)" | increase_or_not |
| "decrease(d)", "shrink/shrank/shrunk", "reduce(d)" | decrease_or_not |
| a position (lexicon.find_region) in a yes/no question | change_position |
| a yes/no question about change (changed, any change, built, demolished, ...) | change_or_not |

Date: the date words (lexicon.DATE_WORDS); else an event word (built -> 2, demolished -> 1) for
change_or_not / change_count / change_ratio_types / change_position / change_location. A question naming
both dates, several classes, a class outside the lexicon ("the areas of cars"), or no class where the
type needs one is a `ParseError` whose `kind` says which (`empty`, `unparsed`, `unknown_class`,
`no_class`, `several_classes`, `both_dates`) and whose message lists the types the parser answers.
"""

from __future__ import annotations

import functools
import re

from changeagent.data.lexicon import ClassLexicon, find_classes, find_dates, find_event, find_region
from changeagent.data.qa.rules import NEEDS_CLASS, NO_CLASS, QUESTION_TYPES, Question
from changeagent.errors import ChangeAgentError

KINDS = ("empty", "unparsed", "unknown_class", "no_class", "several_classes", "both_dates")


class ParseError(ChangeAgentError):
    """A question the parser cannot turn into a known type; `kind` is one of KINDS."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _re(*alts: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(alts) + r")\b", re.I)


_TO = _re(r"(?:changed|change|turned|turn|transformed|transform|converted|convert)\s+(?:in)?to", "become", "became")
_FROM = _re(r"(?:changed|change|turned|turn|transformed|transform|converted|convert)\s+from", "from what")
_COUNT = _re("how many", "number of", "count")
_WHERE = _re("where", r"which (?:part|cell|region|area|side|corner)", r"in what part")
_SMALL = _re("smallest", "least", "minimum", "minimal")
_LARGE = _re("largest", "biggest", "greatest", "maximum", "maximal")
_RATIO = _re("ratio", "percentage", "proportion", "percent", "fraction", "how much")
_NEG = _re(r"not (?:been )?changed?", "non-change", "non-changed", "unchanged", "no change", "remained the same",
           "stayed the same", "not change")
_INC = _re("increase", "increased", "increasing", "grow", "grew", "grown", "expand", "expanded", "enlarged")
_DEC = _re("decrease", "decreased", "decreasing", "shrink", "shrank", "shrunk", "reduce", "reduced")
_YESNO = re.compile(r"^\s*(?:did|do|does|have|has|had|is|are|was|were|can|could|will)\b", re.I)
_CHANGE = _re(r"chang\w*", r"differ\w*", "built", "constructed", "demolished", "removed", "appeared",
              "disappeared", "new", "destroyed", "added")
# slot of a class in the templates, to name a class the lexicon does not know
_SLOT = re.compile(r"(?:areas?|regions?|number|ratio|percentage|proportion|much area) of (?:the )?([a-z][\w -]*?)"
                   r"(?= (?:in|change|changed|mainly|increase|increased|decrease|decreased|has|have|is|are|were|"
                   r"been)\b|\?|$)|how many ([a-z][\w -]*?)(?= (?:have|has|were|are|did|changed|in)\b|\?|$)|"
                   r"(?:change in|has|have) the ([a-z][\w -]*?)(?= mainly\b|\?|$)", re.I)

_NOT_A_CLASS = {"image", "imagery", "scene", "picture", "area", "areas", "region", "regions", "change", "changed",
                "changes", "non-change", "unchanged", "objects", "things", "pixels", "anything", "something",
                "pre-change", "post-change", "pre-event", "post-event", "first", "second", "it", "there"}


def _types_line() -> str:
    return f"the questions answered are of the types {', '.join(QUESTION_TYPES)}"


def _kind_of(text: str, has_class: bool) -> tuple[str, bool] | None:
    """(type, negated) from the cue words, None when no cue matches."""
    if _TO.search(text):
        return "change_to_what", False
    if _FROM.search(text):
        return "change_from_what", False
    if _COUNT.search(text):
        return "change_count", False
    if _WHERE.search(text):
        return "change_location", False
    if _SMALL.search(text):
        return "smallest_change", False
    if _LARGE.search(text):
        return "largest_change", False
    if _RATIO.search(text):
        return ("change_ratio_types" if has_class else "change_ratio"), bool(_NEG.search(text))
    if _INC.search(text):
        return "increase_or_not", False
    if _DEC.search(text):
        return "decrease_or_not", False
    if _YESNO.search(text) and find_region(text) is not None:
        return "change_position", False
    if _YESNO.search(text) and _CHANGE.search(text):
        return "change_or_not", False
    return None


def parse_question(text: str, lexicon: ClassLexicon) -> Question:
    """The structure of a question in the label space of `lexicon`; ParseError when it has none."""
    if not isinstance(text, str) or not text.strip():
        raise ParseError("empty", f"empty question; {_types_line()}")
    return _parse(text, lexicon)


@functools.lru_cache(maxsize=8192)  # datasets and training repeat few texts (CDVQA Val: 16,441 questions)
def _parse(text: str, lexicon: ClassLexicon) -> Question:
    if not text.strip():
        raise ParseError("empty", f"empty question; {_types_line()}")
    mentions = find_classes(text, lexicon)
    ids = list(dict.fromkeys(m.id for m in mentions))
    kind = _kind_of(text, bool(ids))
    if kind is None:
        raise ParseError("unparsed", f"cannot tell what the question {text!r} asks; {_types_line()}")
    qtype, negated = kind
    if not ids:
        slot = _SLOT.search(text)
        name = next((g for g in slot.groups() if g), None) if slot else None
        if name and not set(name.lower().split()) & _NOT_A_CLASS and find_region(name) is None:
            known = ", ".join(t.phrase for t in lexicon.terms)
            raise ParseError("unknown_class", f"question {text!r} names {name.strip()!r}, which is not a class of "
                                              f"the {lexicon.id} label space ({known})")
        if qtype in NEEDS_CLASS:
            raise ParseError("no_class", f"question {text!r} ({qtype}) names no class; classes: "
                                         f"{', '.join(t.phrase for t in lexicon.terms)}")
    if len(ids) > 1:
        raise ParseError("several_classes", f"question {text!r} names several classes "
                                            f"({', '.join(lexicon.term(i).phrase for i in ids)}); ask one at a time")
    cls = ids[0] if ids else None
    if qtype in NO_CLASS and cls is not None:  # largest/smallest compare all classes
        raise ParseError("several_classes", f"question {text!r} ({qtype}) compares all classes but names "
                                            f"{lexicon.term(cls).phrase!r}")
    dates = find_dates(text)
    if qtype in ("change_to_what", "change_from_what"):
        implied = 1 if qtype == "change_to_what" else 2
        if dates - {implied}:
            raise ParseError("both_dates", f"question {text!r} asks what the class {'became' if implied == 1 else 'was'}"
                                           f" but names the {'second' if implied == 1 else 'first'} image for it")
        date: int | None = implied
    else:
        if len(dates) > 1:
            raise ParseError("both_dates", f"question {text!r} names both dates; ask about one")
        date = next(iter(dates)) if dates else None
        if date is None and qtype in ("change_or_not", "change_count", "change_ratio_types", "change_position",
                                      "change_location"):
            date = find_event(text)
    if qtype in ("increase_or_not", "decrease_or_not"):
        date = None  # compares the two dates by definition
    region = None
    if qtype == "change_position":
        found = find_region(text)
        region = found[0] if found else None
    return Question(qtype, cls, date, negated, region)


def try_parse(text: str, lexicon: ClassLexicon) -> Question | ParseError:
    """parse_question, returning the ParseError instead of raising it (for reports)."""
    try:
        return parse_question(text, lexicon)
    except ParseError as e:
        return e
