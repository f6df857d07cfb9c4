"""Paraphrase templates: `rules.Question` -> question text.

CDVQA's templates, read off the 16,441 real Val questions (every phrasing that occurs there, with its
date words: pre-change / pre-event / first image for date 1, post-change / post-event / second image for
date 2; "areas" / "regions"), QAG-360K's `change_from_what` phrasings, and ours for the LEVIR-MCI types
(overall change, counts, positions). `{c}` is the class phrase (lexicon `ClassTerm.phrase`), `{a}` areas
or regions, `{d}` a date word, `{r}` a region phrase. `render(q, lexicon, rng)` picks one uniformly;
`all_texts(lexicon)` renders every template with every filling (the question vocabulary is built
from it). Every rendered text parses back to its question (tests/data/test_qa_rules.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

from changeagent.data.lexicon import GRID_CELLS, SIDES, ClassLexicon
from changeagent.data.qa.rules import QUESTION_TYPES, Question

AREAS = ("areas", "regions")
DATE_PHRASES = {1: ("pre-change", "pre-event", "first"), 2: ("post-change", "post-event", "second")}
REGION_PHRASES = {"top left": "the top left corner", "top": "the top", "top right": "the top right corner",
                  "left": "the left", "center": "the center", "right": "the right",
                  "bottom left": "the bottom left corner", "bottom": "the bottom",
                  "bottom right": "the bottom right corner", "top side": "the top side",
                  "left side": "the left side", "right side": "the right side", "bottom side": "the bottom side"}

# (type, has class, has date, negated) -> templates
TEMPLATES: dict[tuple[str, bool, bool, bool], tuple[str, ...]] = {
    ("change_or_not", True, False, False): ("Did the {a} of {c} change?", "Have the {a} of {c} changed?"),
    ("change_or_not", True, True, False): ("Did the {a} of {c} change in the {d} image?",
                                           "Have the {a} of {c} changed in the {d} image?"),
    ("change_or_not", False, False, False): ("Has anything changed?", "Is there any change?",
                                             "Did the scene change?", "Have any areas changed?"),
    ("change_or_not", False, True, False): ("Has anything changed in the {d} image?",
                                            "Is there any change in the {d} image?"),
    ("increase_or_not", True, False, False): ("Did the {a} of {c} increase?", "Have the {a} of {c} increased?"),
    ("decrease_or_not", True, False, False): ("Did the {a} of {c} decrease?", "Have the {a} of {c} decreased?"),
    ("smallest_change", False, False, False): ("What type of change is the smallest?", "What is the smallest change?"),
    ("smallest_change", False, True, False): ("What type of change is the smallest in the {d} image?",
                                              "What is the smallest change in the {d} image?"),
    ("largest_change", False, False, False): ("What type of change is the largest?", "What is the largest change?"),
    ("largest_change", False, True, False): ("What type of change is the largest in the {d} image?",
                                             "What is the largest change in the {d} image?"),
    ("change_to_what", True, True, False): ("What have the {a} of {c} in the {d} image mainly changed to?",),
    ("change_from_what", True, True, False): ("What has the {c} mainly transformed from in the {d} image?",
                                              "What have the {a} of {c} mainly changed from in the {d} image?",
                                              "What has the {c} mainly turned from in the {d} image?"),
    ("change_ratio", False, False, False): ("What is the percentage of changed {a}?", "How much of the area has changed?",
                                            "What is the change ratio of the imagery?"),
    ("change_ratio", False, False, True): ("What is the non-change ratio of the imagery?",
                                           "What is the percentage of non-change regions?",
                                           "What is the percentage of unchanged areas?",
                                           "How much of the area has not changed?"),
    ("change_ratio_types", True, True, False): ("What is the change ratio of {c} in the {d} image?",
                                                "What is the change percentage of {c} in the {d} image?",
                                                "What is the change proportion of {c} in the {d} image?",
                                                "How much area of {c} has changed in the {d} image?"),
    ("change_ratio_types", True, False, False): ("What is the change ratio of {c}?",
                                                 "How much area of {c} has changed?"),
    ("change_count", True, False, False): ("How many {c} have changed?", "How many changed {c} are there?",
                                           "What is the number of changed {c}?", "How many {c} changed?"),
    ("change_count", False, False, False): ("How many changed objects are there?",
                                            "What is the number of changed objects?"),
    ("change_position", True, False, False): ("Have the {c} changed in {r} of the image?",
                                              "Is there any change of {c} in {r} of the image?",
                                              "Did the {c} change in {r}?"),
    ("change_position", False, False, False): ("Has anything changed in {r} of the image?",
                                               "Is there any change in {r}?"),
    ("change_location", True, False, False): ("Where have the {c} changed the most?",
                                              "In which part of the image did the {c} change the most?"),
    ("change_location", False, False, False): ("Where is the most change?",
                                               "In which part of the image is the most change?"),
}


def _key(q: Question) -> tuple[str, bool, bool, bool]:
    with_date = q.date is not None and (q.type, q.cls is not None, True, q.negated) in TEMPLATES
    return q.type, q.cls is not None, with_date, q.negated


def templates_for(q: Question) -> tuple[str, ...]:
    key = _key(q)
    if key not in TEMPLATES:
        raise KeyError(f"no template for {q}")
    return TEMPLATES[key]


def _fill(template: str, q: Question, lexicon: ClassLexicon, area: str, date_word: str) -> str:
    return template.format(a=area, c=lexicon.term(q.cls).phrase if q.cls is not None else "", d=date_word,
                           r=REGION_PHRASES.get(q.region or "", ""))


def render(q: Question, lexicon: ClassLexicon, rng: np.random.Generator) -> str:
    """One paraphrase of `q`, chosen with `rng` (template, then areas/regions and date word)."""
    options = templates_for(q)
    template = options[int(rng.integers(len(options)))]
    area = AREAS[int(rng.integers(2))]
    words = DATE_PHRASES.get(q.date or 0, ("",))
    return _fill(template, q, lexicon, area, words[int(rng.integers(len(words)))])


def all_texts(lexicon: ClassLexicon, types: tuple[str, ...] = QUESTION_TYPES) -> Iterator[str]:
    """Every template with every class, date word, areas/regions and region of `lexicon`."""
    classes = [t.id for t in lexicon.terms if t.id in lexicon.mapped]
    for (qtype, has_cls, has_date, neg), options in TEMPLATES.items():
        if qtype not in types:
            continue
        for c, d, r in itertools.product(classes if has_cls else [None], (1, 2) if has_date else [None],
                                         [*GRID_CELLS, *SIDES] if qtype == "change_position" else [None]):
            if qtype == "change_to_what" and d == 2 or qtype == "change_from_what" and d == 1:
                continue
            q = Question(qtype, c, d, neg, r)
            for template, area in itertools.product(options, AREAS):
                for word in DATE_PHRASES.get(d or 0, ("",)):
                    yield _fill(template, q, lexicon, area, word)
