"""The expression vocabulary of the grounding head: one `QuestionVocab` (the QA head's class, one
vocabulary design for every question/expression text) holding every word the grounding grammar
knows (parser fillers, lexicon class/place/size/date/connector words, the phrasing templates) plus
the QA templates' words (QAG-360K items ground their question).

It is built from code, not data, so a model's size is known before any dataset is read; a saved
model keeps its own copy (`models.hub`, "expressions.json") and uses it after loading.
"""

from __future__ import annotations

from functools import lru_cache

from changeagent.data.qa.vocab import QuestionVocab


def expression_texts() -> list[str]:
    """Every word source of the grounding grammar, as texts (tokenised by `tokenize_question`)."""
    from changeagent.data.grounding import parser, phrasing
    from changeagent.data.lexicon import LEXICONS

    texts: list[str] = [" ".join(sorted(parser.FILLER))]
    for space in ("levir", "second"):
        texts += [w for words in parser.vocabulary(space).values() for w in words]
        texts += [w for t in LEXICONS[space].terms for w in t.words]
        texts += [f for plural, single in phrasing.CLASS_FORMS[space].values() for f in (*plural, *single)]
    texts += [f for forms in phrasing.REGION_FORMS.values() for f in forms] + list(phrasing.PREFIXES)
    for value in vars(phrasing).values():  # the templates ("{c} that appeared", ...)
        items = value.values() if isinstance(value, dict) else [value]
        for item in items:
            if isinstance(item, tuple) and all(isinstance(s, str) for s in item):
                texts += [s.replace("{", " ").replace("}", " ") for s in item]
    return texts


@lru_cache(maxsize=1)
def expression_vocab() -> QuestionVocab:
    """The built-in expression vocabulary (deterministic: sorted words)."""
    return QuestionVocab.build(expression_texts())
