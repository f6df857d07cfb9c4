"""Referring change expressions: cut on hand-made maps, parse (incl. bad input), phrase<->parse round
trip, and derivation (types, empty targets, determinism, masks = cut(parse(text)))."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from changeagent.data.grounding import (
    EXPRESSION_TYPES,
    REGIONS,
    Query,
    cut,
    derive,
    derive_sample,
    parse,
    phrase,
)
from changeagent.data.grounding.expressions import sample_seed
from changeagent.errors import ChangeAgentError


def levir_map() -> np.ndarray:
    """12x12 LEVIR map (0 bg, 1 road, 2 building); the 3x3 grid splits rows/cols 0-3 | 4-7 | 8-11."""
    m = np.zeros((12, 12), np.int64)
    m[0:3, 0:3] = 2      # building A, 9 px, top left cell
    m[8:12, 8:12] = 2    # building B, 16 px, bottom right cell
    m[0:2, 10:12] = 2    # building C, 4 px (< 6 px: not an object), top right cell
    m[5, :] = 1          # road, 12 px across the middle row (left, center, right cells)
    return m


def second_maps() -> np.ndarray:
    """[2, 12, 12] SECOND maps: low vegetation -> ground (top rows), tree -> building (bottom right),
    water -> water (bottom left), and one IGNORE pixel."""
    s = np.zeros((2, 12, 12), np.int64)
    s[0, 0:4, 0:6], s[1, 0:4, 0:6] = 3, 2      # 24 px
    s[0, 6:12, 6:12], s[1, 6:12, 6:12] = 4, 5  # 36 px
    s[0, 8:10, 0:2], s[1, 8:10, 0:2] = 1, 1    # 4 px
    s[:, 11, 0] = 255
    return s


def box(rows: slice, cols: slice, shape=(12, 12)) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[rows, cols] = True
    return out


def test_cut_levir_each_kind() -> None:
    m = levir_map()
    a, b, c = box(slice(0, 3), slice(0, 3)), box(slice(8, 12), slice(8, 12)), box(slice(0, 2), slice(10, 12))
    road = box(slice(5, 6), slice(0, 12))
    q = lambda **kw: Query("levir", **kw)  # noqa: E731
    assert (cut(q(cls="building"), m) == (a | b | c)).all()
    assert (cut(q(cls="road"), m) == road).all()
    assert (cut(q(), m) == (a | b | c | road)).all()  # any change
    assert (cut(q(cls="building", position="top left"), m) == a).all()
    assert (cut(q(cls="road", position="left side"), m) == box(slice(5, 6), slice(0, 4))).all()
    assert (cut(q(cls="road", position="center"), m) == box(slice(5, 6), slice(4, 8))).all()
    assert not cut(q(cls="road", position="top"), m).any()
    assert (cut(q(cls="building", instance="largest"), m) == b).all()
    assert (cut(q(cls="building", instance="smallest"), m) == a).all()  # C (4 px) is not an object
    assert (cut(q(instance="largest"), m) == b).all()  # B 16 px > road 12 px
    assert (cut(q(cls="building", position="top right"), m) == c).all()
    assert not cut(q(cls="building", position="top right", instance="largest"), m).any()  # C too small
    no_road = np.where(m == 1, 0, m)
    assert not cut(q(cls="road"), no_road).any()
    assert cut(q(cls="building"), torch.from_numpy(m)).sum() == 29  # torch maps too


def test_cut_second_dates_transitions_groups_ignore() -> None:
    s = second_maps()
    veg = box(slice(0, 4), slice(0, 6))
    built = box(slice(6, 12), slice(6, 12))
    water = box(slice(8, 10), slice(0, 2))
    q = lambda **kw: Query("second", **kw)  # noqa: E731
    assert (cut(q(cls="ground", date=2), s) == veg).all()
    assert not cut(q(cls="ground", date=1), s).any()
    assert (cut(q(cls="ground"), s) == veg).all()
    assert (cut(q(cls="low_vegetation", date=1), s) == veg).all()
    assert (cut(q(cls="vegetation", date=1), s) == (veg | built)).all()  # group: low vegetation + tree
    assert (cut(q(transition=("vegetation", "ground")), s) == veg).all()
    assert (cut(q(transition=("tree", "building")), s) == built).all()
    assert not cut(q(transition=("building", "tree")), s).any()
    assert (cut(q(cls="water"), s) == water).all()
    assert (cut(q(), s) == (veg | built | water)).all()  # the IGNORE pixel is never selected
    assert cut(q(cls="building", date=2, position="bottom right"), s).sum() == 16  # rows/cols 8-11
    assert (cut(q(cls="building", instance="largest"), s) == built).all()


def test_query_validation() -> None:
    with pytest.raises(ChangeAgentError, match="not a class of levir"):
        Query("levir", cls="water")
    with pytest.raises(ChangeAgentError, match="no from-to transitions"):
        Query("levir", transition=("road", "building"))
    with pytest.raises(ChangeAgentError, match="not a region"):
        Query("second", cls="tree", position="north")
    with pytest.raises(ChangeAgentError, match="date"):
        Query("levir", cls="road", date=2)
    with pytest.raises(ChangeAgentError, match="maps must be"):
        cut(Query("second", cls="tree"), levir_map())  # one map where two are needed
    q = Query("second", transition=("tree", "building"), position="left side", instance="smallest")
    assert Query.from_dict(q.to_dict()) == q and q.kind == "instance"


@pytest.mark.parametrize("text, dataset, want", [
    ("Segment the buildings that appeared in the top left", "second_cc",
     Query("second", cls="building", date=2, position="top left")),
    ("where did vegetation turn into bare ground?", "second_cc", Query("second", transition=("vegetation", "ground"))),
    ("New buildings in the top left corner.", "levir_mci", Query("levir", cls="building", position="top left")),
    ("changed roads", "levir_mci", Query("levir", cls="road")),
    ("demolished buildings", "levir_mci", Query("levir", cls="building")),  # LEVIR: no direction
    ("the largest new building on the left side", "second", Query("second", cls="building", date=2,
                                                                   position="left side", instance="largest")),
    ("trees in the first image", "second", Query("second", cls="tree", date=1)),
    ("buildings that replaced trees", "second", Query("second", transition=("tree", "building"))),
    ("areas changed from water to low vegetation", "second", Query("second", transition=("water", "low_vegetation"))),
    ("areas that became playgrounds", "second", Query("second", cls="playground", date=2)),
    ("changes in the middle", "second", Query("second", position="center")),
    ("the smallest change", "levir_mci", Query("levir", instance="smallest")),
    ("buildings in the first image and the second image", "second", Query("second", cls="building")),
])
def test_parse_examples(text: str, dataset: str, want: Query) -> None:
    assert parse(text, dataset) == want


@pytest.mark.parametrize("text, dataset, match", [
    ("", "levir_mci", "empty"),
    ("   ", "second", "empty"),
    ("new cars in the top left", "levir_mci", r"unknown word\(s\) 'cars'.*known classes: road"),
    ("buildings in the north", "second_cc", "'north'.*places: top left"),
    ("water", "levir_mci", "'water'"),
    ("roads that became buildings", "levir_mci", "one change map"),
    ("buildings trees", "second", "without saying how"),
    ("the largest smallest buildings", "second", "largest and the smallest"),
    ("buildings in the top left and the bottom right", "levir_mci", "several places"),
    ("new buildings in the first image", "second", "contradicting dates"),
    ("water, trees and buildings", "second", "names 3 classes"),
])
def test_parse_bad_input(text: str, dataset: str, match: str) -> None:
    with pytest.raises(ChangeAgentError, match=match):
        parse(text, dataset)


def test_parse_unknown_dataset() -> None:
    with pytest.raises(ChangeAgentError, match="no class maps"):
        parse("new buildings", "levir_cd")


def _queries() -> list[Query]:
    qs = []
    for space, classes, dates in (("levir", ["road", "building", None], [None]),
                                  ("second", ["water", "ground", "low_vegetation", "tree", "building", "playground",
                                              "vegetation", None], [None, 1, 2])):
        for c, d, pos, inst in itertools.product(classes, dates, [None, "top left", "top", "center", "left side",
                                                                   "bottom side"], [None, "largest", "smallest"]):
            if c is None and d is not None:
                continue
            qs.append(Query(space, cls=c, date=d, position=pos, instance=inst))
    for a, b in itertools.product(["water", "ground", "tree", "building", "vegetation"], repeat=2):
        qs.append(Query("second", transition=(a, b), position="right" if a == b else None,
                        instance="largest" if a == "tree" else None))
    return qs


def test_every_phrasing_parses_back() -> None:
    """phrase -> parse is the identity for every template and class form (seeds pick the variants)."""
    for q in _queries():
        for seed in range(10):
            text = phrase(q, seed)
            assert parse(text, "levir_mci" if q.space == "levir" else "second_cc") == q, text


def test_every_region_has_a_phrasing() -> None:
    for r in REGIONS:
        q = Query("levir", cls="building", position=r)
        assert {parse(phrase(q, s), "levir_mci").position for s in range(8)} == {r}


def test_derive_levir_types_masks_and_determinism() -> None:
    m = levir_map()
    out = derive(m, "levir_mci", 0, n=12)
    assert 1 <= len(out) <= 12 and len({e.query for e in out}) == len(out)
    kinds = {e.type for e in out}
    assert {"class", "position", "instance", "empty"} <= kinds and "transition" not in kinds
    for e in out:
        assert e.type in EXPRESSION_TYPES
        assert e.mask.dtype == bool and e.mask.shape == m.shape
        assert (e.mask == cut(parse(e.text, "levir_mci"), m)).all()  # the program route on GT maps
        assert (e.type == "empty") == (not e.mask.any())
        if e.type != "empty":
            assert e.type == e.query.kind
    again = derive(m, "levir_mci", 0, n=12)
    assert [(e.text, e.type) for e in again] == [(e.text, e.type) for e in out]
    other = derive(m, "levir_mci", 1, n=12)
    assert [e.text for e in other] != [e.text for e in out]


def test_derive_second_has_transitions_and_dates() -> None:
    s = second_maps()
    seen = set()
    for seed in range(6):
        for e in derive(s, "second", seed, n=10):
            seen.add(e.type)
            assert (e.mask == cut(parse(e.text, "second"), s)).all()
            if e.query.cls is not None and e.type == "class":
                assert e.query.date in (None, 1, 2)
    assert seen == set(EXPRESSION_TYPES)


def test_derive_empty_targets() -> None:
    none = derive(np.zeros((16, 16), np.int64), "levir_mci", 3, n=4)  # a pair without change
    assert len(none) == 4 and {e.type for e in none} == {"empty"} and not any(e.mask.any() for e in none)
    only_roads = np.zeros((12, 12), np.int64)
    only_roads[5] = 1
    out = derive(only_roads, "levir_mci", 0, n=5, empty_share=0.4)
    empties = [e for e in out if e.type == "empty"]
    assert len(empties) == 2
    assert all(not cut(e.query, only_roads).any() for e in empties)
    assert not [e for e in derive(only_roads, "levir_mci", 0, n=5, empty_share=0.0) if e.type == "empty"]


def test_derive_bad_input() -> None:
    with pytest.raises(ChangeAgentError, match="n must be"):
        derive(levir_map(), "levir_mci", 0, n=0)
    with pytest.raises(ChangeAgentError, match="maps must be"):
        derive(levir_map().astype(np.float32), "levir_mci")
    with pytest.raises(ChangeAgentError, match="no class maps"):
        derive(levir_map(), "whu_cd")


def test_derive_sample_and_seed() -> None:
    sample = {"dataset": "second_cc", "name": "x.png", "sem": torch.from_numpy(second_maps())}
    a = derive_sample(sample, seed=5, epoch=0)
    assert [e.text for e in a] == [e.text for e in derive_sample(sample, seed=5, epoch=0)]
    assert sample_seed(5, "x.png", 0) != sample_seed(5, "x.png", 1) != sample_seed(5, "y.png", 1)
    assert sample_seed(5, "x.png", 0) == sample_seed(5, "x.png", 0)
    with pytest.raises(ChangeAgentError, match="no 'sem'"):
        derive_sample({"dataset": "second", "name": "y"})


def test_try_parse_and_rcd_prompts() -> None:
    from changeagent.data.grounding import rcd_prompts, try_parse

    assert try_parse("new roads", "levir_mci") == Query("levir", cls="road")
    assert isinstance(try_parse("new cars", "levir_mci"), ChangeAgentError)
    prompts = rcd_prompts("second_cc")
    assert sorted(prompts) == [1, 2]
    for date, rows in prompts.items():
        assert [cid for cid, _, _ in rows] == [1, 2, 3, 4, 5, 6]
        for cid, q, text in rows:
            assert parse(text, "second_cc") == q and q.date == date
            s = second_maps()
            assert (cut(q, s) == np.isin(s[date - 1], [cid])).all()  # the class on that date's map
    with pytest.raises(ChangeAgentError, match="one change map"):
        rcd_prompts("levir_mci")
