"""Caption metrics with the COCO caption evaluation code (pycocoevalcap), SPEC §2.2.

BLEU-1..4 (closest reference length), METEOR 1.5 (Java), ROUGE-L (beta 1.2) and CIDEr-D
(pycocoevalcap's `Cider`: n = 4, sigma = 6, clipped tf-idf, Gaussian length penalty, document
frequencies from the evaluated references) on lower-cased, tokenised captions, as fractions
(CIDEr-D on its 0..10 scale, so 1.3656 prints as 136.56). S*m = mean(BLEU-4, METEOR, ROUGE-L, CIDEr-D).

Captions are tokenised with the SPEC §1.1 rule (`changeagent.data.vocab.tokenize`) instead of pycocoevalcap's PTBTokenizer, which
would start one more Java process. `id_level=True` scores strings of vocabulary ids instead of words,
as the reference (Change-Agent) code does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from tqdm.auto import tqdm

from changeagent.data.constants import NO_CHANGE_SENTENCES, SPECIALS, UNK
from changeagent.data.vocab import tokenize
from changeagent.errors import ChangeAgentError
from changeagent.metrics.meteor import MeteorScorer

METRIC_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider", "s_m")
METRIC_LABELS = {
    "bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu3": "BLEU-3", "bleu4": "BLEU-4",
    "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider": "CIDEr-D", "s_m": "S*m",
}
SUBSETS = ("all", "change", "no_change")
# <UNK> stays: it is a real (wrong) word slot of a hypothesis, and the reference keeps its id too
_DROPPED = {s.lower() for s in SPECIALS} - {"<unk>"}


def normalize_caption(text: str) -> list[str]:
    """Tokens of a caption: `data.vocab.tokenize` (SPEC §1.1), then <NULL>/<START>/<END> dropped."""
    return [t for t in tokenize(text) if t not in _DROPPED]


def s_m(bleu4: float | None, meteor: float | None, rouge_l: float | None, cider: float | None) -> float | None:
    """S*m = mean(BLEU-4, METEOR, ROUGE-L, CIDEr-D); None when any of them is missing."""
    parts = (bleu4, meteor, rouge_l, cider)
    return None if any(p is None for p in parts) else sum(parts) / 4  # type: ignore[arg-type]


def infer_changeflags(refs: Mapping[str, list[str]],
                      no_change_sentences: Iterable[str] = NO_CHANGE_SENTENCES) -> dict[str, int]:
    """changeflag per id from its references: 0 when every reference is a no-change sentence."""
    nc = {" ".join(normalize_caption(s)) for s in no_change_sentences}
    return {i: int(not all(" ".join(normalize_caption(r)) in nc for r in rs)) for i, rs in refs.items()}


def validate_captions(hyps: Mapping, refs: Mapping, hyp_name: str = "hypotheses",
                      ref_name: str = "references") -> None:
    """Raise ChangeAgentError unless hyps is {id: str} and refs {id: [str, ...]} over the same ids."""
    if not isinstance(hyps, Mapping) or not isinstance(refs, Mapping):
        raise ChangeAgentError(f"{hyp_name} and {ref_name} must be mappings of id -> caption(s)")
    if not refs:
        raise ChangeAgentError(f"{ref_name}: no ids to score")
    no_hyp = [i for i in refs if i not in hyps]
    no_ref = [i for i in hyps if i not in refs]
    for ids, what in ((no_hyp, f"have references in {ref_name} but no hypothesis in {hyp_name}"),
                      (no_ref, f"have a hypothesis in {hyp_name} but no references in {ref_name}")):
        if ids:
            shown = ", ".join(map(repr, ids[:5])) + (", ..." if len(ids) > 5 else "")
            raise ChangeAgentError(f"{len(ids)} id(s) {what}: {shown}")
    for i, h in hyps.items():
        if not isinstance(h, str):
            raise ChangeAgentError(f"{hyp_name}[{i!r}] must be one caption string (exactly one hypothesis "
                                   f"per id), got {type(h).__name__}")
    for i, rs in refs.items():
        if not isinstance(rs, list) or not rs or not all(isinstance(r, str) for r in rs):
            raise ChangeAgentError(f"{ref_name}[{i!r}] must be a non-empty list of caption strings")
        for k, r in enumerate(rs):
            if not normalize_caption(r):
                raise ChangeAgentError(f"{ref_name}[{i!r}][{k}] is empty after tokenisation: {r!r}")


def _word_to_id(vocab: object) -> Mapping[str, int]:
    mapping = getattr(vocab, "word_to_id", vocab)
    if not isinstance(mapping, Mapping) or not mapping:
        raise ChangeAgentError("id-level scoring needs a vocabulary: a {word: id} mapping or a Vocabulary")
    return mapping


def _prepare(hyps: Mapping[str, str], refs: Mapping[str, list[str]], id_level: bool,
             vocab: object) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """pycocoevalcap inputs: gts {id: [ref, ...]}, res {id: [hyp]}, space-joined words or ids."""
    if not id_level and vocab is not None:
        raise ChangeAgentError("a vocabulary is only used for id-level scoring (id_level=True)")
    w2i = _word_to_id(vocab) if id_level else {}
    unk = w2i.get("<UNK>", UNK)

    def join(tokens: list[str]) -> str:
        return " ".join(str(w2i.get(t, unk)) for t in tokens) if id_level else " ".join(tokens)
    gts = {i: [join(normalize_caption(r)) for r in refs[i]] for i in refs}
    res = {i: [join(normalize_caption(hyps[i]))] for i in refs}
    return gts, res


def _score_prepared(gts: dict[str, list[str]], res: dict[str, list[str]], meteor: MeteorScorer | None,
                    step: Callable[[], None] = lambda: None) -> dict[str, float | None]:
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    step()
    rouge, _ = Rouge().compute_score(gts, res)
    step()
    cider, _ = Cider().compute_score(gts, res)
    step()
    met = meteor.score(gts, res) if meteor is not None else None
    step()
    out: dict[str, float | None] = {f"bleu{n + 1}": float(b) for n, b in enumerate(bleu)}
    out.update(meteor=met, rouge_l=float(rouge), cider=float(cider))
    out["s_m"] = s_m(out["bleu4"], met, out["rouge_l"], out["cider"])
    return out


def _meteor_context(meteor: bool | MeteorScorer | None):
    """(context manager, scorer or None): a fresh scorer for True, the caller's own one reused as is."""
    if isinstance(meteor, MeteorScorer):
        return nullcontext(meteor)
    return MeteorScorer() if meteor else nullcontext(None)


def score_captions(hyps: Mapping[str, str], refs: Mapping[str, list[str]], *, id_level: bool = False,
                   vocab: object = None, meteor: bool | MeteorScorer | None = True,
                   progress: bool = False) -> dict[str, float | None]:
    """Corpus caption metrics (fractions) of one hypothesis per id against all its references.

    Returns `bleu1..bleu4, meteor, rouge_l, cider, s_m`. `meteor`: True starts (and closes) one Java
    process, a `MeteorScorer` is reused, False skips METEOR. When METEOR is missing (False, or no
    Java: a warning) `meteor` and `s_m` are None. `id_level` needs `vocab` ({word: id} or a Vocabulary).
    """
    validate_captions(hyps, refs)
    gts, res = _prepare(hyps, refs, id_level, vocab)
    with _meteor_context(meteor) as scorer, tqdm(total=4, desc="caption metrics", disable=not progress) as bar:
        return _score_prepared(gts, res, scorer, lambda: bar.update(1))


def caption_report(hyps: Mapping[str, str], refs: Mapping[str, list[str]],
                   changeflags: Mapping[str, int] | None = None, *, id_level: bool = False,
                   vocab: object = None, meteor: bool | MeteorScorer | None = True,
                   no_change_sentences: Iterable[str] = NO_CHANGE_SENTENCES,
                   progress: bool = False) -> dict:
    """Caption metrics for the `all`, `change` and `no_change` subsets, with one METEOR process.

    changeflags: {id: 0|1} for every id (None: inferred from the references, see `infer_changeflags`).
    Returns {"all": metrics, "change": metrics | None, "no_change": metrics | None (None when the
    subset is empty), "counts": {subset: n}, "no_change_accuracy": fraction of no-change pairs whose
    hypothesis is one of `no_change_sentences` (word level, after tokenisation) | None}.
    """
    validate_captions(hyps, refs)
    sentences = list(no_change_sentences)
    if changeflags is None:
        changeflags = infer_changeflags(refs, sentences)
    missing = [i for i in refs if i not in changeflags]
    if missing:
        raise ChangeAgentError(f"{len(missing)} id(s) have no changeflag, e.g. {missing[0]!r}")
    bad = [i for i in refs if changeflags[i] not in (0, 1)]
    if bad:
        raise ChangeAgentError(f"changeflag of {bad[0]!r} is {changeflags[bad[0]]!r}; expected 0 or 1")
    gts, res = _prepare(hyps, refs, id_level, vocab)
    ids = {"all": list(refs), "change": [i for i in refs if changeflags[i] == 1],
           "no_change": [i for i in refs if changeflags[i] == 0]}
    report: dict = {"counts": {s: len(v) for s, v in ids.items()}}
    with _meteor_context(meteor) as scorer, \
            tqdm(total=4 * sum(1 for v in ids.values() if v), desc="caption metrics",
                 disable=not progress) as bar:
        for subset in SUBSETS:
            sel = ids[subset]
            report[subset] = (_score_prepared({i: gts[i] for i in sel}, {i: res[i] for i in sel}, scorer,
                                              lambda: bar.update(1)) if sel else None)
    nc = {" ".join(normalize_caption(s)) for s in sentences}
    hits = [" ".join(normalize_caption(hyps[i])) in nc for i in ids["no_change"]]
    report["no_change_accuracy"] = sum(hits) / len(hits) if hits else None
    return report
