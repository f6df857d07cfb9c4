"""`changeagent score-captions` through the real CLI entry point on real LEVIR-MCI captions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from shared_data import DATA

import changeagent.metrics.meteor as meteor_module
from changeagent.cli import main
from changeagent.metrics import METRIC_KEYS, score_captions

CAPTIONS = DATA / "levir_mci_captions"
pytestmark = pytest.mark.skipif(not CAPTIONS.is_dir(), reason="shared caption corpus not present")


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """40 real val pairs: hypothesis = the fourth caption, references = all five."""
    data = json.loads((CAPTIONS / "captions.json").read_text())
    names = data["splits"]["val"][:40]
    refs = {n: [" ".join(t) for t in data["tokens"][n]] for n in names}
    hyps = {n: r[3] for n, r in refs.items()}
    hyps[names[0]] = "Two new roads are built ."  # raw text is tokenised like the references
    paths = {"hyp": tmp_path / "hyp.json", "refs": tmp_path / "refs.json", "out": tmp_path / "out.json"}
    paths["hyp"].write_text(json.dumps(hyps))
    paths["refs"].write_text(json.dumps(refs))
    return paths


def _run(files: dict[str, Path], *extra: str) -> int:
    return main(["score-captions", "--hyp", str(files["hyp"]), "--refs", str(files["refs"]), *extra])


def test_word_level_without_meteor(files, capsys) -> None:
    assert _run(files, "--no-meteor", "--json", str(files["out"])) == 0
    out = json.loads(files["out"].read_text())
    assert list(out) == list(METRIC_KEYS)
    hyps, refs = json.loads(files["hyp"].read_text()), json.loads(files["refs"].read_text())
    assert out == score_captions(hyps, refs, meteor=False)
    assert out["meteor"] is None and out["s_m"] is None
    printed = capsys.readouterr().out
    assert "in percent" in printed and f"{100 * out['bleu4']:.2f}" in printed and "missing" in printed


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs java")
def test_subsets_with_meteor_start_java_once(files, capsys, monkeypatch) -> None:
    starts = []

    class CountingMeteor(meteor_module.Meteor):
        def __init__(self) -> None:
            starts.append(1)
            super().__init__()

    monkeypatch.setattr(meteor_module, "Meteor", CountingMeteor)
    assert _run(files, "--subsets", "--json", str(files["out"])) == 0
    assert len(starts) == 1  # one Java process for all three subsets
    out = json.loads(files["out"].read_text())
    counts = out["counts"]
    assert counts["all"] == 40 and counts["change"] + counts["no_change"] == 40 and counts["no_change"] > 0
    for metrics in (out, out["subsets"]["change"], out["subsets"]["no_change"]):
        assert 0 < metrics["meteor"] <= 1 and metrics["s_m"] is not None
    assert out["subsets"]["no_change"]["cider"] == 0.0
    assert out["no_change_accuracy"] == 1.0
    printed = capsys.readouterr().out
    assert "no_change" in printed and "no-change accuracy: 100.00" in printed


def test_id_level_and_missing_java(files, capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no java: METEOR is reported missing, with a warning
    hyps, refs = json.loads(files["hyp"].read_text()), json.loads(files["refs"].read_text())
    first = next(iter(refs))
    hyps[first], refs[first][0] = "a road is built near the qwertyx", "a road is built near the zxcvbn"
    files["hyp"].write_text(json.dumps(hyps))
    files["refs"].write_text(json.dumps(refs))
    vocab = str(CAPTIONS / "vocab.json")
    assert _run(files, "--id-level", "--vocab", vocab, "--json", str(files["out"])) == 0
    ids = json.loads(files["out"].read_text())
    captured = capsys.readouterr()
    assert "java" in captured.err and "id level" in captured.out
    assert ids["meteor"] is None and ids["s_m"] is None
    assert _run(files, "--no-meteor", "--json", str(files["out"])) == 0
    words = json.loads(files["out"].read_text())
    assert ids["bleu4"] > words["bleu4"]  # the two unknown words are one <UNK> id at id level


@pytest.mark.parametrize(
    ("edit", "extra", "message"),
    [
        (lambda h, r: h.pop(next(iter(h))), (), "but no hypothesis in"),
        (lambda h, r: h.update(extra_id="a road"), (), "but no references in"),
        (lambda h, r: h.update({next(iter(h)): ["a", "b"]}), (), "exactly one caption"),
        (lambda h, r: r.update({next(iter(r)): []}), (), "non-empty list"),
        (None, ("--id-level",), "needs --vocab"),
        (None, ("--vocab", "x.json"), "only used with --id-level"),
    ],
)
def test_bad_input_is_a_clear_error(files, capsys, edit, extra, message) -> None:
    if edit is not None:
        hyps, refs = json.loads(files["hyp"].read_text()), json.loads(files["refs"].read_text())
        edit(hyps, refs)
        files["hyp"].write_text(json.dumps(hyps))
        files["refs"].write_text(json.dumps(refs))
    assert _run(files, "--no-meteor", "--json", str(files["out"]), *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not files["out"].exists()  # nothing partial is written


def test_malformed_files_are_named(files, capsys, tmp_path) -> None:
    bad_vocab = tmp_path / "vocab.json"
    bad_vocab.write_text('{"a": 4}')
    assert _run(files, "--id-level", "--vocab", str(bad_vocab)) == 2
    err = capsys.readouterr().err
    assert str(bad_vocab) in err and "<UNK>" in err
    files["refs"].write_text('{"a": ["x"')
    assert _run(files, "--no-meteor") == 2
    err = capsys.readouterr().err
    assert str(files["refs"]) in err and "malformed JSON" in err
    files["refs"] = tmp_path / "missing.json"
    assert _run(files, "--no-meteor") == 2
    assert "not found" in capsys.readouterr().err
