"""Referring change expressions (change grounding, SPEC §9): Query / parse / cut / phrase / derive.

    parse(expression, dataset) -> Query          words -> meaning (unknown words are errors)
    cut(query, maps) -> bool [H, W]              meaning -> pixels of class maps (GT or predicted)
    phrase(query, rng) -> str                    meaning -> words
    derive(maps, dataset, rng, n) -> [Expression]  draw queries the maps answer, phrase, cut

See docs/data.md ("Referring expressions") and the module docstrings.
"""

from __future__ import annotations

from changeagent.lazy import lazy_getattr

_LAZY = {
    **{n: "changeagent.data.grounding.query" for n in ("EXPRESSION_TYPES", "INSTANCES", "REGIONS", "Query", "cut",
                                                        "space_of")},
    **{n: "changeagent.data.grounding.parser" for n in ("parse", "try_parse", "vocabulary")},
    "phrase": "changeagent.data.grounding.phrasing",
    **{n: "changeagent.data.grounding.vocab" for n in ("expression_texts", "expression_vocab")},
    **{n: "changeagent.data.grounding.expressions" for n in ("Expression", "derive", "derive_sample", "maps_of",
                                                              "rcd_prompts", "sample_seed")},
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
