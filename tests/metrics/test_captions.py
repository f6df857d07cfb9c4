"""Caption metrics against pycocoevalcap called directly, on real LEVIR-MCI captions."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from shared_data import DATA

from changeagent.data.constants import CANONICAL_NO_CHANGE
from changeagent.data.vocab import Vocabulary
from changeagent.errors import ChangeAgentError
from changeagent.metrics import (
    MeteorScorer,
    MeteorUnavailableWarning,
    caption_report,
    infer_changeflags,
    normalize_caption,
    s_m,
    score_captions,
)

CAPTIONS = DATA / "levir_mci_captions"
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs java")
needs_data = pytest.mark.skipif(not CAPTIONS.is_dir(), reason="shared caption corpus not present")


def _test_split(n: int | None = None) -> dict[str, list[str]]:
    """{filename: 5 references} of the LEVIR-MCI test split; the first n // 2 change and no-change pairs."""
    data = json.loads((CAPTIONS / "captions.json").read_text())
    refs = {f: [" ".join(t) for t in data["tokens"][f]] for f in data["splits"]["test"]}
    if n is None:
        return refs
    flags = infer_changeflags(refs)
    change = [f for f in refs if flags[f]][: n // 2]
    same = [f for f in refs if not flags[f]][: n - len(change)]
    return {f: refs[f] for f in sorted(change + same)}


def _direct(gts: dict[str, list[str]], res: dict[str, list[str]]) -> dict[str, float]:
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {**{f"bleu{i + 1}": b for i, b in enumerate(bleu)},
            "rouge_l": Rouge().compute_score(gts, res)[0], "cider": Cider().compute_score(gts, res)[0]}


@pytest.fixture(scope="module")
def meteor_scorer():
    """One Java process for the whole module (each start costs seconds)."""
    with MeteorScorer() as scorer:
        yield scorer


@pytest.fixture(scope="module")
def sample() -> tuple[dict[str, str], dict[str, list[str]]]:
    """100 real test pairs: hypothesis = the first caption, references = the other four."""
    refs = _test_split(100)
    return {f: r[0] for f, r in refs.items()}, {f: r[1:] for f, r in refs.items()}


def test_normalize_caption() -> None:
    assert normalize_caption("A road, and two Houses; built.") == ["a", "road", ",", "and", "two", "houses", ";",
                                                                    "built"]
    assert normalize_caption("<START> is it the same? <END> <NULL>") == ["is", "it", "the", "same"]
    assert normalize_caption("a <UNK> house") == ["a", "<unk>", "house"]


def test_s_m_check_value() -> None:
    assert round(100 * s_m(0.6524, 0.3991, 0.7524, 1.3656), 2) == 79.24
    assert s_m(0.6524, None, 0.7524, 1.3656) is None


@needs_data
@needs_java
def test_matches_pycocoevalcap_on_real_captions(sample, meteor_scorer) -> None:
    hyps, refs = sample
    ours = score_captions(hyps, refs, meteor=meteor_scorer)
    gts, res = refs, {f: [h] for f, h in hyps.items()}
    expected = _direct(gts, res)
    # pycocoevalcap's own Meteor.compute_score, called directly; it runs in the scorer's Java process
    # (a pycocoevalcap Meteor() as well) because every start costs ~10 s of CPU
    direct_meteor = meteor_scorer._meteor
    assert isinstance(direct_meteor, Meteor)
    expected["meteor"] = direct_meteor.compute_score(gts, res)[0]
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    assert ours["s_m"] == pytest.approx((ours["bleu4"] + ours["meteor"] + ours["rouge_l"] + ours["cider"]) / 4)
    assert 0 < ours["bleu4"] < ours["bleu1"] < 1 and 0 < ours["meteor"] < 1 and ours["cider"] > 0


@needs_data
def test_raw_captions_score_like_their_tokens(sample) -> None:
    hyps, refs = sample
    shouted = {f: h.capitalize() + "." for f, h in hyps.items()}
    refs_raw = {f: [r.replace(" ,", ",").upper() + "?" for r in rs] for f, rs in refs.items()}
    assert score_captions(shouted, refs_raw, meteor=False) == score_captions(hyps, refs, meteor=False)


@needs_data
def test_all_five_references_and_self_hypothesis() -> None:
    refs = _test_split(100)
    hyps = {f: r[2] for f, r in refs.items()}
    out = score_captions(hyps, refs, meteor=False)
    assert out["bleu4"] == pytest.approx(1.0) and out["rouge_l"] == pytest.approx(1.0)
    assert out["meteor"] is None and out["s_m"] is None


def test_cider_d_is_zero_for_a_single_item() -> None:
    out = score_captions({"x": "two houses are built"}, {"x": ["two houses are built", "a road appears"]},
                         meteor=False)
    assert out["bleu1"] == pytest.approx(1.0)
    assert out["cider"] == 0.0  # idf = log(1) - log(1) for every n-gram


@needs_data
def test_subsets_match_direct_scores_and_no_change_cider_is_zero(sample) -> None:
    hyps, refs = sample
    flags = infer_changeflags(_test_split(100))
    assert sum(flags.values()) == 50
    no_change = [f for f in refs if not flags[f]]
    hyps = dict(hyps)
    for f in no_change[:10]:
        hyps[f] = "a road is built"  # wrongly captioned no-change pairs
    for f in no_change[10:20]:
        hyps[f] = CANONICAL_NO_CHANGE.upper() + "."
    report = caption_report(hyps, refs, flags, meteor=False)
    assert report["counts"] == {"all": 100, "change": 50, "no_change": 50}
    assert report["no_change_accuracy"] == pytest.approx(40 / 50)
    for subset, ids in (("change", [f for f in refs if flags[f]]), ("no_change", no_change)):
        expected = _direct({f: refs[f] for f in ids}, {f: [" ".join(normalize_caption(hyps[f]))] for f in ids})
        for key, value in expected.items():
            assert report[subset][key] == pytest.approx(value, rel=1e-12, abs=1e-12), (subset, key)
    assert report["no_change"]["cider"] == 0.0  # all no-change pairs share one reference set
    assert report["all"] == score_captions(hyps, refs, meteor=False)


@needs_data
@needs_java
def test_report_reuses_one_meteor_process(sample, meteor_scorer) -> None:
    hyps, refs = sample
    pid = meteor_scorer._meteor.meteor_p.pid
    report = caption_report(hyps, refs, meteor=meteor_scorer)
    assert meteor_scorer._meteor.meteor_p.pid == pid
    alone = score_captions({f: hyps[f] for f in refs if f.startswith("test_0000")},
                           {f: refs[f] for f in refs if f.startswith("test_0000")}, meteor=meteor_scorer)
    assert alone["meteor"] is not None
    for subset in ("all", "change", "no_change"):
        assert 0 < report[subset]["meteor"] <= 1, subset


@needs_data
def test_id_level_matches_direct_scores_on_vocabulary_ids(sample) -> None:
    hyps, refs = sample
    vocab = json.loads((CAPTIONS / "vocab.json").read_text())
    hyps = dict(hyps)
    first = next(iter(hyps))
    hyps[first] = hyps[first] + " zebraically"  # out of vocabulary -> <UNK> id 1

    def ids(caption: str) -> str:
        return " ".join(str(vocab.get(w, 1)) for w in caption.split())

    expected = _direct({f: [ids(r) for r in rs] for f, rs in refs.items()}, {f: [ids(h)] for f, h in hyps.items()})
    ours = score_captions(hyps, refs, id_level=True, vocab=vocab, meteor=False)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


@needs_data
def test_id_level_merges_unknown_words() -> None:
    vocab = json.loads((CAPTIONS / "vocab.json").read_text())
    refs = {"a": ["a road is built near the qwertyx"], "b": ["many houses appear"]}
    hyps = {"a": "a road is built near the zxcvbn", "b": "many houses appear"}
    words = score_captions(hyps, refs, meteor=False)
    ids = score_captions(hyps, refs, id_level=True, vocab=vocab, meteor=False)
    assert words["bleu4"] < 0.99 and ids["bleu4"] == pytest.approx(1.0)  # both unknowns are <UNK>
    vocabulary = Vocabulary.load(CAPTIONS / "vocab.json")  # a Vocabulary object works like its mapping
    assert score_captions(hyps, refs, id_level=True, vocab=vocabulary, meteor=False) == ids
    with pytest.raises(ChangeAgentError, match="vocabulary"):
        score_captions(hyps, refs, id_level=True, meteor=False)


@needs_data
@needs_java
def test_id_level_meteor_has_no_stemming(meteor_scorer) -> None:
    vocab = json.loads((CAPTIONS / "vocab.json").read_text())
    refs = {"a": ["two buildings are built"], "b": ["a road appears"]}
    hyps = {"a": "two building is built", "b": "a road appears"}
    words = score_captions(hyps, refs, meteor=meteor_scorer)
    ids = score_captions(hyps, refs, id_level=True, vocab=vocab, meteor=meteor_scorer)
    assert words["meteor"] > ids["meteor"]  # "building" matches "buildings" by stem only with words


def test_missing_java_reports_meteor_as_none(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without java
    refs = {"a": ["a road is built"], "b": ["many houses appear"]}
    with pytest.warns(MeteorUnavailableWarning, match="java"):
        out = score_captions({"a": "a road is built", "b": "houses appear"}, refs)
    assert out["meteor"] is None and out["s_m"] is None
    assert out["bleu1"] > 0 and out["cider"] > 0


@needs_java
def test_dead_java_process_is_reported_and_closed() -> None:
    with MeteorScorer() as scorer:
        proc = scorer._meteor.meteor_p
        proc.kill()
        proc.wait()
        with pytest.warns(MeteorUnavailableWarning, match="failed"):
            assert scorer.score({"a": ["a road"]}, {"a": ["a road"]}) is None
        assert not scorer.available
    with MeteorScorer() as scorer:
        proc = scorer._meteor.meteor_p
    assert proc.returncode is not None and scorer._meteor is None  # closed on exit


@pytest.mark.parametrize(
    ("hyps", "refs", "message"),
    [
        ({"a": "x"}, {"a": ["x"], "b": ["y"]}, "no hypothesis"),
        ({"a": "x", "c": "z"}, {"a": ["x"]}, "no references"),
        ({"a": ["x", "y"]}, {"a": ["x"]}, "exactly one hypothesis"),
        ({"a": "x"}, {"a": []}, "non-empty list"),
        ({"a": "x"}, {"a": ["x", " . "]}, "empty after tokenisation"),
        ({}, {}, "no ids"),
    ],
)
def test_bad_input_raises(hyps, refs, message) -> None:
    with pytest.raises(ChangeAgentError, match=message):
        score_captions(hyps, refs, meteor=False)


@pytest.mark.slow
@needs_data
@needs_java
def test_meteor_on_the_full_test_split_fresh_vs_reused() -> None:
    """1,929 pairs: first call pays the Java start-up, the second reuses the process (SPEC §2.2)."""
    refs = _test_split()
    hyps = {f: r[0] for f, r in refs.items()}
    with MeteorScorer() as scorer:
        t0 = time.perf_counter()
        fresh = score_captions(hyps, refs, meteor=scorer)
        t1 = time.perf_counter()
        reused = score_captions(hyps, refs, meteor=scorer)
        t2 = time.perf_counter()
    assert fresh == reused and fresh["meteor"] == pytest.approx(1.0)
    print(f"METEOR 1,929 pairs: fresh process {t1 - t0:.1f} s, reused {t2 - t1:.1f} s")
