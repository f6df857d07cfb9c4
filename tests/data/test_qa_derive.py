"""Derived questions: CDVQA's group structure, answers by the rules, seeded and deterministic; `data qa`."""

import json

import numpy as np
import pytest

from changeagent.cli import main
from changeagent.data.lexicon import lexicon_for
from changeagent.data.qa.derive import derive
from changeagent.data.qa.parse import parse_question
from changeagent.data.qa.rules import Evidence, answer
from changeagent.data.registry import get_spec

SECOND, LEVIR = lexicon_for("second"), lexicon_for("levir")


def _sem(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 7, (16, 16))
    b = np.where(a > 0, rng.integers(1, 7, (16, 16)), 0)
    return np.stack([a, b])


def test_two_date_groups_follow_cdvqa():
    groups = derive(_sem(), SECOND, seed=0, key="train/x.png")
    assert len(groups) == 16  # CDVQA's 16 image entries per file
    types = [{it.question.type for it in g} for g in groups]
    order = ["change_or_not"] * 3 + ["increase_or_not", "decrease_or_not", "smallest_change", "largest_change",
                                     "smallest_change", "smallest_change", "largest_change", "largest_change",
                                     "change_to_what", "change_ratio", "change_ratio", "change_ratio_types",
                                     "change_ratio_types"]
    assert all(t <= {o} for t, o in zip(types, order))
    assert [it.question.date for it in groups[5] + groups[6] + groups[7] + groups[8] + groups[9] + groups[10]] == \
        [None, None, 1, 2, 1, 2]
    assert [it.question.negated for it in groups[12] + groups[13]] == [False, True]
    ev = Evidence(_sem(), SECOND)
    assert {it.question.cls for it in groups[11]} == {c for c in SECOND.mapped if ev.area(c, 1) > 0}
    for g in groups:
        for it in g:
            assert it.answer == answer(it.question, ev).answer  # the rules, one code path
            assert parse_question(it.text, SECOND) == it.question  # the text says what was asked


def test_group_sizes_match_cdvqa_rates():
    """Over many tiles, change_or_not groups average 0.8 x 6 classes and change_ratio_types 0.5 x 6."""
    sizes = {0: [], 14: []}
    for i in range(150):
        g = derive(_sem(i), SECOND, seed=0, key=f"t{i}")
        sizes[0].append(len(g[0]))
        sizes[14].append(len(g[14]))
    assert 4.5 < np.mean(sizes[0]) < 5.1 and 2.6 < np.mean(sizes[14]) < 3.4


def test_deterministic_per_tile():
    a = derive(_sem(), SECOND, seed=3, key="train/a.png")
    b = derive(_sem(), SECOND, seed=3, key="train/a.png")
    c = derive(_sem(), SECOND, seed=4, key="train/a.png")
    d = derive(_sem(), SECOND, seed=3, key="train/b.png")
    text = lambda gs: [(it.text, it.answer) for g in gs for it in g]  # noqa: E731
    assert text(a) == text(b) and text(a) != text(c) and text(a) != text(d)


def test_one_map_groups():
    m = np.zeros((1, 24, 24), np.int64)
    m[0, 0:4, 0:4] = 2  # a building top left
    m[0, 20:24, 10:20] = 2  # another, bottom
    m[0, 10:12, 0:24] = 1  # a road across the middle row of cells
    groups = derive(m, LEVIR, seed=0, key="k")
    items = {(it.question.type, it.question.cls): it for g in groups for it in g
             if it.question.type not in ("change_position",)}
    assert items[("change_count", 2)].answer == "2" and items[("change_count", 1)].answer == "1"
    assert items[("change_location", 2)].answer == "bottom"  # 40 px vs 16 top left
    assert items[("largest_change", None)].answer == "buildings"  # 56 vs 48
    assert items[("change_or_not", None)].answer == "yes"
    positions = [it for g in groups for it in g if it.question.type == "change_position"]
    assert sorted(it.answer for it in positions) == ["no", "no", "yes", "yes"]  # per class: one hit, one miss
    for it in positions + list(items.values()):
        assert parse_question(it.text, LEVIR) == it.question


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    base = tmp_path_factory.mktemp("qa_src")
    for fmt in ("second-cc", "levir-mci", "second"):
        assert main(["data", "synth", "--format", fmt, "--out", str(base / fmt), "--n-train", "3", "--n-val", "2",
                     "--n-test", "1", "--size", "32", "--seed", "1", "--no-progress"]) == 0
    return base


def test_data_qa_second_cc_writes_a_cdvqa_root(synth, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["data", "qa", str(synth / "second-cc"), "--format", "second-cc", "-o", str(out), "--link-images",
                 "--no-progress", "--json", str(tmp_path / "s.json")]) == 0
    assert "train: 3 pairs, 48 image entries" in capsys.readouterr().out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary == json.loads((out / "qa_summary.json").read_text()) | {"out": str(out)}
    assert sorted(p.name for p in out.glob("*.json")) == sorted(
        f"{s}_{k}.json" for s in ("Train", "Val", "Test") for k in ("images", "questions", "answers")) + ["qa_summary.json"]
    imgs = json.loads((out / "Train_images.json").read_text())["images"]
    assert set(imgs[0]) == {"id", "file_name", "questions_ids", "res_x", "res_y", "active"}
    q = json.loads((out / "Train_questions.json").read_text())["questions"][0]
    assert set(q) == {"id", "img_id", "type", "question", "answers_ids", "active"}
    # the output is a CDVQA root: its reader reads it, with the label maps
    ds = get_spec("cdvqa").reader(out, split="val")
    item = ds[0]
    assert item["sem"].shape == (2, 32, 32) and item["image"].shape == (2, 3, 32, 32)
    assert answer(parse_question(item["question"], SECOND), Evidence(item["sem"].numpy(), SECOND)).answer == item["answer"]
    assert main(["data", "check", str(out), "--format", "cdvqa", "--no-progress"]) == 0
    # same seed: identical files; another seed: other questions
    again, other = tmp_path / "again", tmp_path / "other"
    main(["data", "qa", str(synth / "second-cc"), "--format", "second_cc", "-o", str(again), "--no-progress"])
    main(["data", "qa", str(synth / "second-cc"), "--format", "second_cc", "-o", str(other), "--seed", "1",
          "--no-progress"])
    for name in ("Train_questions.json", "Val_answers.json"):
        assert (again / name).read_text() == (out / name).read_text()
    assert (other / "Train_questions.json").read_text() != (out / "Train_questions.json").read_text()


def test_data_qa_levir_and_second(synth, tmp_path):
    assert main(["data", "qa", str(synth / "levir-mci"), "--format", "levir-mci", "-o", str(tmp_path / "l"),
                 "--splits", "test", "--no-progress"]) == 0
    qs = json.loads((tmp_path / "l" / "Test_questions.json").read_text())["questions"]
    assert {"change_count", "change_position", "change_ratio"} <= {q["type"] for q in qs}
    assert not (tmp_path / "l" / "Train_questions.json").exists()
    assert main(["data", "qa", str(synth / "second"), "--format", "second", "-o", str(tmp_path / "s"),
                 "--with-from-what", "--no-progress"]) == 0
    types = {q["type"] for q in json.loads((tmp_path / "s" / "Train_questions.json").read_text())["questions"]}
    assert "change_from_what" in types and not (tmp_path / "s" / "Val_questions.json").exists()  # SECOND: train/test


def test_data_qa_bad_input(synth, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "x").write_text("")
    assert main(["data", "qa", str(synth / "second-cc"), "--format", "second-cc", "-o", str(out), "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["data", "qa", str(synth / "second-cc"), "--format", "second-cc", "-o", str(tmp_path / "n"),
                 "--splits", "test2", "--no-progress"]) == 2
    assert "splits" in capsys.readouterr().err and not (tmp_path / "n").exists()
    assert main(["data", "qa", str(tmp_path / "nothing"), "--format", "levir-mci", "-o", str(tmp_path / "m"),
                 "--no-progress"]) == 2
    assert not (tmp_path / "m").exists()
