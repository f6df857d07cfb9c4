"""The answer rules on hand-made maps, every type with its hand-computed answer (SPEC §8)."""

import numpy as np
import pytest

from changeagent.data.lexicon import lexicon_for
from changeagent.data.qa.answers import ANSWERS, CDVQA_ANSWERS, TYPE_ANSWERS, AnswerVocab
from changeagent.data.qa.rules import (
    QUESTION_TYPES,
    Evidence,
    Question,
    RuleError,
    answer,
    answer_maps,
    from_decoded,
)

SECOND = lexicon_for("second")
LEVIR = lexicon_for("levir")
W, G, LV, T, B, P = 1, 2, 3, 4, 5, 6  # SECOND ids: water, ground, low vegetation, tree, building, playground


def second_maps() -> np.ndarray:
    """6x6 tile, 12 changed px. Date 1: ground 6, low vegetation 2, building 4.
    Date 2: building 5, ground 1, tree 1, low vegetation 4, water 1."""
    a = np.zeros((6, 6), np.int64)
    b = np.zeros((6, 6), np.int64)
    a[0:2, 0:3] = G
    b[0, 0:3] = B
    b[1, 0:2] = B
    b[1, 2] = G  # ground -> building x5, ground -> ground x1
    a[2, 0:2] = LV
    b[2, 0], b[2, 1] = T, LV  # low vegetation -> tree, -> low vegetation
    a[3:5, 4:6] = B
    b[3, 4], b[3, 5], b[4, 4], b[4, 5] = LV, LV, LV, W  # building -> low vegetation x3, -> water
    return np.stack([a, b])


@pytest.fixture
def ev() -> Evidence:
    return Evidence(second_maps(), SECOND)


@pytest.mark.parametrize("q, expected", [
    (Question("change_or_not", W), "yes"),           # 0 + 1 > 0
    (Question("change_or_not", W, 1), "no"),
    (Question("change_or_not", W, 2), "yes"),
    (Question("change_or_not", T, 1), "no"),
    (Question("change_or_not", P), "no"),
    (Question("change_or_not"), "yes"),              # any change
    (Question("increase_or_not", B), "yes"),         # 5 > 4
    (Question("decrease_or_not", B), "no"),
    (Question("increase_or_not", G), "no"),          # 1 < 6
    (Question("decrease_or_not", G), "yes"),
    (Question("increase_or_not", LV), "yes"),        # 4 > 2
    (Question("increase_or_not", P), "no"),          # 0 = 0
    (Question("decrease_or_not", P), "no"),
    (Question("largest_change"), "buildings"),       # sums: ground 7, lv 6, building 9, tree 1, water 1
    (Question("smallest_change"), "trees"),          # tree 1 = water 1: CDVQA order puts trees first
    (Question("largest_change", date=1), "NVG_surface"),
    (Question("smallest_change", date=1), "low_vegetation"),
    (Question("largest_change", date=2), "buildings"),
    (Question("smallest_change", date=2), "NVG_surface"),  # ground = tree = water = 1: ground first
    (Question("change_to_what", G, 1), "buildings"),       # building 5, ground 1
    (Question("change_to_what", LV, 1), "trees"),          # tree 1 = low vegetation 1: trees first
    (Question("change_to_what", B, 1), "low_vegetation"),  # 3 vs water 1
    (Question("change_from_what", LV, 2), "buildings"),    # 3 from building, 1 from low vegetation
    (Question("change_from_what", W, 2), "buildings"),
    (Question("change_ratio"), "30_to_40"),                # 12 / 36 = 33.3 %
    (Question("change_ratio", negated=True), "60_to_70"),  # 24 / 36 = 66.7 %
    (Question("change_ratio_types", G, 1), "10_to_20"),    # 6 / 36 = 16.7 %
    (Question("change_ratio_types", B, 2), "10_to_20"),    # 5 / 36 = 13.9 %
    (Question("change_ratio_types", W, 1), "0"),
    (Question("change_ratio_types", W, 2), "0_to_10"),     # 1 / 36 = 2.8 %
    (Question("change_ratio_types", LV), "10_to_20"),      # pixels of lv in either map: 5 / 36
    (Question("change_count", B, 2), "0"),                 # one 5-px object: not > 5 px
    (Question("change_count", G, 1), "1"),                 # 6 px
    (Question("change_position", B, 1, region="center"), "no"),
    (Question("change_position", B, 1, region="right"), "yes"),  # rows 3-4 x cols 4-5: middle-right cell
    (Question("change_location", G, 1), "top_left"),
])
def test_second_rules(ev, q, expected):
    assert answer(q, ev).answer == expected


def test_second_evidence(ev):
    a = answer(Question("change_or_not", W), ev)
    assert a.evidence["area"] == 1 and a.evidence["area_per_date"] == [0, 1] and a.evidence["tile"] == 36
    a = answer(Question("largest_change", date=1), ev).evidence
    assert a["areas"]["NVG_surface"] == 6 and a["areas"]["buildings"] == 4 and a["areas"]["water"] == 0
    assert a["present"] == ["NVG_surface", "low_vegetation", "buildings"]  # CDVQA order
    a = answer(Question("change_to_what", G, 1), ev).evidence
    assert a["into"]["buildings"] == 5 and a["into"]["NVG_surface"] == 1 and a["present"] is True
    s = ev.summary()
    assert s["changed"] == 12 and s["areas"]["buildings"] == [4, 5] and s["areas"]["playgrounds"] == [0, 0]


def test_tile_without_change_answers_like_cdvqa():
    """CDVQA answers NVG_surface to largest/smallest on a tile with no change (Val file 05330.png)."""
    ev = Evidence(np.zeros((2, 8, 8), np.int64), SECOND)
    for t in ("largest_change", "smallest_change"):
        for d in (None, 1, 2):
            a = answer(Question(t, date=d), ev)
            assert a.answer == "NVG_surface" and a.evidence["present"] == []
    assert answer(Question("change_ratio"), ev).answer == "0"
    assert answer(Question("change_ratio", negated=True), ev).answer == "90_to_100"


def levir_map() -> np.ndarray:
    """12x12 tile (grid cells of 4x4). Buildings: a 9-px block in the top left cell, a 5-px line in row
    11 (cols 3-7: bottom left 1 px, bottom 4 px; too small to count), a 6-px diagonal (4,4)..(9,9)
    (center 4 px, bottom right 2 px). Road: col 11, rows 0-5 (top right 4 px, right 2 px)."""
    m = np.zeros((12, 12), np.int64)
    m[0:3, 0:3] = 2
    m[11, 3:8] = 2
    for i in range(4, 10):
        m[i, i] = 2
    m[0:6, 11] = 1
    return m


@pytest.mark.parametrize("q, expected", [
    (Question("change_or_not"), "yes"),
    (Question("change_or_not", 1), "yes"),
    (Question("change_ratio"), "10_to_20"),                # 26 / 144 = 18.1 %
    (Question("change_ratio", negated=True), "80_to_90"),  # 118 / 144 = 81.9 %
    (Question("change_ratio_types", 2), "10_to_20"),       # 20 / 144 = 13.9 %
    (Question("change_ratio_types", 1), "0_to_10"),        # 6 / 144 = 4.2 %
    (Question("change_count", 2), "2"),                    # 9 px and the 8-connected 6-px diagonal
    (Question("change_count", 1), "1"),
    (Question("change_count"), "3"),                       # any change: block, diagonal, road (not the line)
    (Question("largest_change"), "buildings"),
    (Question("smallest_change"), "road"),
    (Question("change_position", 2, region="top left"), "yes"),
    (Question("change_position", 2, region="top"), "no"),
    (Question("change_position", 2, region="bottom"), "yes"),   # the line's cols 4-7
    (Question("change_position", 2, region="bottom left"), "yes"),  # its col 3
    (Question("change_position", 2, region="right side"), "yes"),  # the diagonal's (8,8), (9,9)
    (Question("change_position", 2, region="top right"), "no"),
    (Question("change_position", 1, region="top right"), "yes"),
    (Question("change_position", 2, region="left side"), "yes"),
    (Question("change_position", 1, region="bottom side"), "no"),
    (Question("change_location", 2), "top_left"),          # 9 vs center 4, bottom 4, bottom right 2
    (Question("change_location", 1), "top_right"),
])
def test_levir_rules(q, expected):
    assert answer_maps(q, levir_map()[None], LEVIR).answer == expected


def test_levir_count_evidence_and_dates():
    a = answer_maps(Question("change_count", 2, date=2), levir_map(), LEVIR)
    assert a.answer == "2" and a.evidence["objects"] == 2 and sorted(a.evidence["object_areas"]) == [6, 9]
    assert a.evidence["date_ignored"] is True  # one change map: "built" cannot be told from "demolished"
    assert sorted(a.evidence["object_cells"]) == ["center", "top left"]
    with pytest.raises(RuleError, match="one change map"):
        answer_maps(Question("increase_or_not", 2), levir_map(), LEVIR)
    with pytest.raises(RuleError, match="one change map"):
        answer_maps(Question("change_to_what", 2, 1), levir_map(), LEVIR)


def test_valid_mask_drops_pixels():
    valid = np.ones((12, 12), bool)
    valid[0:3] = False  # the top 3 rows: the 9-px block and 3 road px
    ev = Evidence(levir_map()[None], LEVIR, valid)
    assert ev.tile == 108 and ev.area(2, None) == 11 and ev.area(1, None) == 3
    assert answer(Question("change_count", 2), ev).answer == "1"
    assert answer(Question("change_count", 1), ev).answer == "0"  # 3 px of road left
    assert int(ev.areas[0, 0]) == 108 - 14  # unchanged: valid pixels only


def test_from_decoded_predicted_maps():
    sem = second_maps()
    pred = {"from": sem[0].astype(np.uint8), "to": sem[1].astype(np.uint8), "mask": (sem[0] > 0).astype(np.uint8)}
    pred["from"][5, 5] = pred["to"][5, 5] = 255  # nodata
    maps, valid = from_decoded(pred, dates=2)
    ev = Evidence(maps, SECOND, valid)
    assert ev.tile == 35 and answer(Question("largest_change"), ev).answer == "buildings"
    maps, valid = from_decoded({"mask": levir_map().astype(np.uint8)}, dates=1)
    assert answer(Question("change_count", 2), Evidence(maps, LEVIR, valid)).answer == "2"
    with pytest.raises(RuleError, match="lack"):
        from_decoded({"mask": levir_map()}, dates=2)


@pytest.mark.parametrize("q, match", [
    (Question("how_big"), "unknown question type"),
    (Question("increase_or_not"), "needs a class"),
    (Question("largest_change", B), "takes no class"),
    (Question("change_or_not", 8), "no id in the second maps"),
    (Question("change_position", B), "needs a region"),
    (Question("change_position", B, region="upstairs"), "unknown region"),
    (Question("change_or_not", B, negated=True), "cannot be negated"),
])
def test_bad_questions(ev, q, match):
    with pytest.raises(RuleError, match=match):
        answer(q, ev)


def test_bad_maps():
    with pytest.raises(RuleError, match="ids 0..6"):
        Evidence(np.full((2, 4, 4), 7), SECOND)
    with pytest.raises(RuleError, match="integer"):
        Evidence(np.zeros((2, 4, 4), np.float32), SECOND)
    with pytest.raises(RuleError, match="no valid pixel"):
        answer(Question("change_ratio"), Evidence(np.zeros((1, 4, 4), np.int64), LEVIR, np.zeros((4, 4), bool)))


def test_every_answer_is_in_the_answer_set():
    assert len(CDVQA_ANSWERS) == 19 and ANSWERS[:19] == CDVQA_ANSWERS
    assert set(TYPE_ANSWERS) == set(QUESTION_TYPES)
    for answers in TYPE_ANSWERS.values():
        assert set(answers) <= set(ANSWERS)
    v = AnswerVocab.default()
    assert AnswerVocab.from_json(v.to_json()) == v and v.index("0") == ANSWERS.index("0")
    mask = v.allowed(["change_ratio", "change_or_not"])
    assert sum(mask[0]) == 11 and [v.answer(i) for i, ok in enumerate(mask[1]) if ok] == ["yes", "no"]


def test_measured_answer_and_training_targets_with_ignored_pixels():
    from changeagent.data.qa.derive import derive
    from changeagent.data.qa.rules import measured_answer, split_nodata

    pred = {"mask": levir_map().astype(np.uint8)}
    a = measured_answer(Question("change_count", 2), pred, LEVIR, dates=1)
    assert a.answer == "2" and a.evidence["objects"] == 2
    target = levir_map()
    target[0:3] = 255  # IGNORE_INDEX of augmentation padding
    maps, valid = split_nodata(target)
    assert valid.sum() == 108 and maps.max() == 2
    groups = derive(maps, LEVIR, seed=0, key="k", valid=valid)
    count = next(it for g in groups for it in g if it.question == Question("change_count", 2))
    assert count.answer == "1" and count.evidence["tile"] == 108
