"""The shared change language: classes, dates, grid positions, components and ratio bins."""

import numpy as np
import pytest

from changeagent.data.constants import LEVIR_CLASSES, SECOND_CLASSES
from changeagent.data.lexicon import (
    CDVQA_ANSWER_CLASSES,
    GRID_CELLS,
    RATIO_BINS,
    cell_areas,
    cell_of,
    class_of_answer,
    components,
    find_classes,
    find_dates,
    find_event,
    find_region,
    lexicon_for,
    ratio_bin,
    ratio_bin_range,
)


def test_cdvqa_answers_map_to_second_ids():
    assert CDVQA_ANSWER_CLASSES == {"water": 1, "NVG_surface": 2, "low_vegetation": 3, "trees": 4,
                                    "buildings": 5, "playgrounds": 6}
    lex = lexicon_for("second_cc")
    for t in lex.terms:  # names are the dataset's class names (SPEC §1.2 ids)
        assert SECOND_CLASSES[t.id] == t.name
    levir = lexicon_for("levir_mci")
    assert [(t.id, t.name) for t in levir.terms] == [(1, LEVIR_CLASSES[1]), (2, LEVIR_CLASSES[2])]
    assert class_of_answer("NVG_surface", lex) == 2 and class_of_answer("yes", lex) is None
    assert lexicon_for("qag360k").answers[-4:] == ("green_house", "road", "bridge", "others")
    with pytest.raises(KeyError):
        lexicon_for("levir_cd")


@pytest.mark.parametrize("text, ids", [
    ("Did the areas of non-vegetated ground surface change?", [2]),  # not "ground" + nothing
    ("Have the regions of low vegetation changed in the second image?", [3]),
    ("What have the regions of trees in the first image mainly changed to?", [4]),
    ("Has the NVG_surface turned into buildings?", [2, 5]),
    ("a HOUSE near the river", [5, 1]),
    ("How much of the area has changed?", []),
    ("the playgrounds and sports fields", [6, 6]),
])
def test_find_classes_second(text, ids):
    assert [m.id for m in find_classes(text, lexicon_for("second"))] == ids


def test_find_classes_levir_spans():
    text = "many villas are built along the new road"
    ms = find_classes(text, lexicon_for("levir"))
    assert [(m.id, text[m.start:m.end]) for m in ms] == [(2, "villas"), (1, "road")]
    assert find_classes("roadside", lexicon_for("levir")) == []  # whole words only


@pytest.mark.parametrize("text, dates", [
    ("Did the areas of water change in the pre-change image?", {1}),
    ("Have the areas of trees changed in the first image?", {1}),
    ("What is the largest change in the pre-event image?", {1}),
    ("What is the change ratio of water in the post-event image?", {2}),
    ("Have the regions of trees changed in the second image?", {2}),
    ("buildings before and after", {1, 2}),
    ("Did the areas of water change?", set()),
])
def test_find_dates(text, dates):
    assert find_dates(text) == dates


def test_find_event():
    assert find_event("how many buildings were built?") == 2
    assert find_event("the demolished houses") == 1
    assert find_event("what changed?") is None
    assert find_event("houses removed and new ones built") is None  # both: no single date


@pytest.mark.parametrize("text, name, cells", [
    ("a road is built at the top left corner", "top left", (0,)),
    ("villas appear in the upper right", "top right", (2,)),
    ("in the lower-left of the scene", "bottom left", (6,)),
    ("buildings at the bottom of the scene", "bottom", (7,)),
    ("a house in the middle", "center", (4,)),
    ("trees on the left side", "left side", (0, 3, 6)),
    ("along the right edge", "right side", (2, 5, 8)),
    ("on the right", "right", (5,)),
    ("nothing here", None, None),
])
def test_find_region(text, name, cells):
    got = find_region(text)
    assert (got == (name, cells)) if name else got is None


def test_grid_cells_and_areas():
    assert GRID_CELLS[4] == "center" and len(GRID_CELLS) == 9
    assert cell_of(0, 0, 9, 9) == 0 and cell_of(8, 8, 9, 9) == 8 and cell_of(4, 0, 9, 9) == 3
    assert cell_of(2, 3, 9, 9) == 1 and cell_of(3, 2, 9, 9) == 3
    m = np.zeros((9, 9), bool)
    m[0, 0] = m[0, 1] = True  # two px in top left
    m[8, 4] = True  # bottom
    m[4, 4] = True  # center
    assert cell_areas(m).tolist() == [2, 0, 0, 0, 1, 0, 0, 1, 0]
    # a 256 tile splits 86 / 85 / 85 by floor(3y/h)
    assert cell_of(85, 0, 256, 256) == 0 and cell_of(86, 0, 256, 256) == 3 and cell_of(170, 0, 256, 256) == 3
    assert cell_of(171, 0, 256, 256) == 6


def test_components_eight_connectivity_and_area_rule():
    m = np.zeros((20, 20), np.uint8)
    m[0:2, 0:3] = 1  # 6 px: kept (area > 5)
    m[5, 5] = m[6, 6] = m[7, 7] = m[8, 8] = m[9, 9] = m[10, 10] = 1  # 6 px diagonal: one 8-connected object
    m[15:17, 15:17] = 1  # 4 px... plus one below -> 5 px: dropped
    m[17, 15] = 1
    labels, comps = components(m)
    assert len(comps) == 2 and sorted(c.area for c in comps) == [6, 6]
    assert labels.max() == 2 and (labels > 0).sum() == 12 and labels[16, 16] == 0
    diag = next(c for c in comps if c.bbox == (5, 5, 11, 11))
    assert diag.centroid == (7.5, 7.5) and diag.cell == cell_of(7, 7, 20, 20)
    assert len(components(m, min_area=1)[1]) == 3
    assert components(np.zeros((4, 4)), 6)[1] == []
    with pytest.raises(ValueError):
        components(np.zeros((2, 4, 4)))


@pytest.mark.parametrize("num, den, answer", [
    (0, 100, "0"), (1, 1000, "0_to_10"), (10, 100, "0_to_10"), (11, 100, "10_to_20"),
    (1, 3, "30_to_40"), (2, 3, "60_to_70"), (90, 100, "80_to_90"), (91, 100, "90_to_100"),
    (100, 100, "90_to_100"), (65535, 65536, "90_to_100"),
])
def test_ratio_bin(num, den, answer):
    assert ratio_bin(num, den) == answer
    lo, hi = ratio_bin_range(answer)
    assert (num == 0) if answer == "0" else lo < num / den <= hi


def test_ratio_bins_are_cdvqa_answers():
    assert RATIO_BINS == ("0", "0_to_10", "10_to_20", "20_to_30", "30_to_40", "40_to_50", "50_to_60",
                          "60_to_70", "70_to_80", "80_to_90", "90_to_100")
    with pytest.raises(ValueError):
        ratio_bin(3, 2)
    with pytest.raises(ValueError):
        ratio_bin_range("100")
