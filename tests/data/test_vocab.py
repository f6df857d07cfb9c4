"""Tokenisation, the vocabulary API, and the real LEVIR-MCI vocabulary reproduced byte for byte."""

import json
from pathlib import Path

import pytest
from shared_data import DATA

from changeagent.cli import main
from changeagent.data.constants import END, NULL, START, UNK
from changeagent.data.vocab import (
    Vocabulary,
    build_vocab_from_files,
    iter_split_tokens,
    read_karpathy,
    tokenize,
)
from changeagent.errors import ChangeAgentError

REAL = DATA / "levir_mci_captions"


def test_tokenize_rule():
    assert tokenize(" Two Buildings, one road; built. Why?") == [
        "two", "buildings", ",", "one", "road", ";", "built", "why"
    ]
    assert tokenize("a.b  c") == ["ab", "c"]


def test_build_encode_decode():
    vocab = Vocabulary.build([["b", "a"]] * 3 + [["c"]], min_count=2)
    assert vocab.word_to_id == {"<NULL>": 0, "<UNK>": 1, "<START>": 2, "<END>": 3, "a": 4, "b": 5}
    assert len(vocab) == 6 and "a" in vocab and "c" not in vocab
    assert vocab.encode(["a", "c", "b"]) == [START, 4, UNK, 5, END]
    assert vocab.encode("A c B.", max_len=7) == [START, 4, UNK, 5, END, NULL, NULL]
    assert vocab.encode(["a"] * 10, max_len=4) == [START, 4, 4, END]
    assert vocab.decode([START, 4, UNK, 5, END, 4, NULL]) == "a b"
    with pytest.raises(ChangeAgentError, match="max_len"):
        vocab.encode(["a"], max_len=1)


def test_save_load_round_trip_and_bad_files(tmp_path):
    vocab = Vocabulary.build([["x", "y"]] * 2, min_count=0)
    vocab.save(tmp_path / "v.json")
    assert (tmp_path / "v.json").read_text() == json.dumps(vocab.word_to_id)
    assert Vocabulary.load(tmp_path / "v.json") == vocab
    (tmp_path / "bad.json").write_text('{"<NULL>": 0, "<UNK>": 2}')
    with pytest.raises(ChangeAgentError, match=r"bad\.json.*<UNK> to 1"):
        Vocabulary.load(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ChangeAgentError, match=r"list\.json must be a JSON object"):
        Vocabulary.load(tmp_path / "list.json")
    with pytest.raises(ChangeAgentError, match=r"missing\.json does not exist"):
        Vocabulary.load(tmp_path / "missing.json")


def test_karpathy_reading_and_restval(second_root, levir_root):
    pairs = read_karpathy(second_root / "SECOND-CC-AUG.json")
    assert [p.split for p in pairs] == ["train", "train", "train", "val", "test", "test"]
    train_tokens = list(iter_split_tokens([second_root / "SECOND-CC-AUG.json"], ["restval"]))
    assert len(train_tokens) == 15
    both = build_vocab_from_files([levir_root / "LevirCCcaptions.json", second_root / "SECOND-CC-AUG.json"],
                                  splits=["train", "val", "test"], min_count=0)
    assert "bareland" in both and "identical" in both


def test_bad_caption_entries_are_collected(tmp_path):
    path = tmp_path / "c.json"
    good = {"filename": "a.png", "split": "train", "sentences": [{"raw": "x"}] * 5}
    path.write_text(json.dumps({"images": [good, {"filename": "b.png", "split": "train", "sentences": [{"raw": "x"}] * 3},
                                           {"filename": "c.png", "split": "dev", "sentences": []}, good]}))
    errors: list[str] = []
    assert [p.name for p in read_karpathy(path, errors)] == ["a.png"]
    assert "entry 1 (b.png) has 3 sentences" in errors[0]
    assert "entry 2 (c.png) has split 'dev'" in errors[1]
    assert "entry 3 (a.png) repeats a.png" in errors[2]
    path.write_text(json.dumps({"pairs": []}))
    with pytest.raises(ChangeAgentError, match=r"c\.json has no 'images' list"):
        read_karpathy(path)


@pytest.fixture(scope="module")
def real_captions(tmp_path_factory) -> Path:
    """The real corpus (splits + token lists, not Karpathy) converted to a LevirCCcaptions.json."""
    path = tmp_path_factory.mktemp("real") / "LevirCCcaptions.json"
    data = json.loads((REAL / "captions.json").read_text())
    images = []
    for split in ("train", "val", "test"):
        for name in data["splits"][split]:
            imgid = len(images)
            sents = [{"tokens": t, "imgid": imgid, "sentid": imgid * 5 + j}
                     for j, t in enumerate(data["tokens"][name])]
            images.append({"filename": name, "filepath": split, "split": split, "imgid": imgid,
                           "sentences": sents, "sentids": [s["sentid"] for s in sents]})
    path.write_text(json.dumps({"images": images}))
    return path


def test_real_vocabulary_byte_for_byte(tmp_path, capsys, real_captions):
    captions = real_captions
    out = tmp_path / "vocab.json"
    assert main(["data", "vocab", str(captions), "--splits", "train", "val", "test",
                 "--min-count", "5", "-o", str(out), "--json", str(tmp_path / "r.json")]) == 0
    assert out.read_bytes() == (REAL / "vocab.json").read_bytes()
    assert len(Vocabulary.load(out)) == 468
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["size"] == 468 and report["splits"] == ["train", "val", "test"]
    assert main(["data", "vocab", str(captions), "--reference", "-o", str(tmp_path / "ref.json")]) == 0
    assert (tmp_path / "ref.json").read_bytes() == (REAL / "vocab.json").read_bytes()
    assert main(["data", "vocab", str(captions), "-o", str(tmp_path / "train.json")]) == 0
    assert len(Vocabulary.load(tmp_path / "train.json")) == 404  # default: train split only
    assert "404" in capsys.readouterr().out


def test_vocab_cli_errors(tmp_path, capsys):
    assert main(["data", "vocab", str(tmp_path / "none.json"), "-o", str(tmp_path / "v.json")]) == 2
    assert "none.json does not exist" in capsys.readouterr().err
    assert not (tmp_path / "v.json").exists()
