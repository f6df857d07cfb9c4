"""Question text -> structure: every real CDVQA Val question, QAG-360K's phrasings, every template, bad ones."""

import json
from collections import Counter

import pytest
from shared_data import DATA

from changeagent.data.lexicon import lexicon_for
from changeagent.data.qa.parse import ParseError, parse_question
from changeagent.data.qa.rules import QUESTION_TYPES, Question
from changeagent.data.qa.templates import TEMPLATES, all_texts

VAL = DATA / "cdvqa_val"
QAG = DATA / "qag360k_sample"
SECOND = lexicon_for("second")
needs_val = pytest.mark.skipif(not (VAL / "Val_questions.json").is_file(), reason="shared CDVQA Val JSONs absent")


@needs_val
def test_every_cdvqa_val_question_parses_to_its_type_class_and_date():
    questions = json.loads((VAL / "Val_questions.json").read_text())["questions"]
    assert len(questions) == 16441
    got: Counter[str] = Counter()
    for q in questions:
        text = q["question"]
        p = parse_question(text, SECOND)
        assert p.type == q["type"], text
        low = text.lower()
        date = 1 if any(w in low for w in ("pre-", "first")) else 2 if any(w in low for w in ("post-", "second")) \
            else None
        assert p.date == (1 if q["type"] == "change_to_what" else date), text
        assert (p.cls is None) == (q["type"] in ("largest_change", "smallest_change", "change_ratio")), text
        assert p.negated == ("not" in low or "non-change" in low or "unchanged" in low), text
        got[p.type] += 1
    assert got == {"change_or_not": 5751, "increase_or_not": 1920, "decrease_or_not": 1922, "smallest_change": 1200,
                   "largest_change": 1200, "change_to_what": 1239, "change_ratio": 800, "change_ratio_types": 2409}


@pytest.mark.parametrize("text, q", [
    ("Did the areas of non-vegetated ground surface change in the post-event image?", Question("change_or_not", 2, 2)),
    ("What have the regions of buildings in the pre-event image mainly changed to?", Question("change_to_what", 5, 1)),
    ("How much of the area has not changed?", Question("change_ratio", negated=True)),
    ("What is the change proportion of water in the first image?", Question("change_ratio_types", 1, 1)),
    # QAG-360K's phrasings (the public sample)
    ("What has the non-vegetated ground surface mainly transformed from in the second image?",
     Question("change_from_what", 2, 2)),
    ("What has the trees mainly turned from in the post-event image?", Question("change_from_what", 4, 2)),
    ("Has there been any change in the non-vegetated ground surface?", Question("change_or_not", 2)),
    # free questions
    ("What did the trees turn into?", Question("change_to_what", 4, 1)),
    ("Which class changed the least?", Question("smallest_change")),
])
def test_phrasings(text, q):
    assert parse_question(text, lexicon_for("qag360k")) == q


@pytest.mark.parametrize("text, q", [
    ("how many buildings were built?", Question("change_count", 2, 2)),    # "built": date 2
    ("How many roads were demolished?", Question("change_count", 1, 1)),
    ("where did the villas change the most?", Question("change_location", 2)),
    ("Is there any change of roads in the top left corner?", Question("change_position", 1, region="top left")),
    ("Were houses built on the left side?", Question("change_position", 2, 2, region="left side")),
    ("Has anything changed?", Question("change_or_not")),
    ("what fraction of the image changed?", Question("change_ratio")),
])
def test_levir_phrasings(text, q):
    assert parse_question(text, lexicon_for("levir")) == q


@pytest.mark.parametrize("lex", ["second", "levir", "qag360k"])
def test_every_template_parses_back(lex):
    lexicon = lexicon_for(lex)
    n = 0
    for text in all_texts(lexicon):
        parse_question(text, lexicon)  # raises on a text the parser cannot read
        n += 1
    assert n > 200


def test_templates_round_trip_structure():
    import numpy as np

    from changeagent.data.qa.templates import render

    rng = np.random.default_rng(0)
    for (qtype, has_cls, has_date, neg) in TEMPLATES:
        for lex in ("second", "levir"):
            lexicon = lexicon_for(lex)
            if (qtype in ("increase_or_not", "decrease_or_not", "change_to_what", "change_from_what")
                    and lex == "levir"):
                continue
            cls = lexicon.mapped[-1] if has_cls else None
            date = (2 if qtype == "change_from_what" else 1) if has_date else None
            q = Question(qtype, cls, date, neg, "bottom left" if qtype == "change_position" else None)
            for _ in range(6):
                assert parse_question(render(q, lexicon, rng), lexicon) == q


@pytest.mark.parametrize("text, kind", [
    ("", "empty"),
    ("   ", "empty"),
    ("What colour is the roof?", "unparsed"),
    ("Did the areas of cars change?", "unknown_class"),
    ("What is the change ratio of solar panels in the first image?", "unknown_class"),
    ("Have the areas increased?", "no_class"),
    ("Did the buildings and the trees change?", "several_classes"),
    ("What is the largest change of buildings?", "several_classes"),
    ("Did the areas of water change in the first image and the second image?", "both_dates"),
    ("What have the regions of trees in the second image mainly changed to?", "both_dates"),
])
def test_unparsable_questions_say_why_and_list_the_types(text, kind):
    with pytest.raises(ParseError) as e:
        parse_question(text, SECOND)
    assert e.value.kind == kind
    if kind in ("empty", "unparsed"):
        assert all(t in str(e.value) for t in QUESTION_TYPES)
