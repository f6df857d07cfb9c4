"""Paired augmentation: shared geometry, nearest masks, independent photometry, true captions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from albumentations.augmentations.geometric.functional import d4
from shared_data import DATA
from torch.utils.data import DataLoader, Dataset

from changeagent.data.constants import IGNORE_INDEX
from changeagent.data.levir_mci import LevirMCI
from changeagent.data.second_cc import SecondCC
from changeagent.data.synth import generate
from changeagent.data.synth.captions import POSITIONS
from changeagent.data.transforms import DIHEDRAL, allowed_rewrites, build_transforms, rewrite_caption
from changeagent.errors import ChangeAgentError

CORPUS = DATA / "levir_mci_captions/captions.json"
AXIS_SWAPS = {"r90", "r270", "t", "hvt"}
GEOMETRY_ONLY = {"color_jitter": None, "gauss_noise": 0, "blur": 0}


@pytest.fixture(scope="module")
def real_sentences() -> list[str]:
    if not CORPUS.is_file():
        pytest.skip(f"{CORPUS} not available")
    tokens = json.loads(CORPUS.read_text())["tokens"]
    return sorted({" ".join(s) for caps in tokens.values() for s in caps})


def cell_from_words(caption: str) -> tuple[int, int]:
    """3x3 cell a caption names: row from top/upper/bottom/lower, column from left/right."""
    words = set(caption.replace("-", " ").split())
    row = 0 if words & {"top", "upper"} else 2 if words & {"bottom", "lower"} else 1
    col = 0 if "left" in words else 2 if "right" in words else 1
    return row, col


def cell_of(mask: np.ndarray) -> tuple[int, int]:
    ys, xs = np.nonzero(mask)
    return min(2, int(ys.mean() * 3 / mask.shape[0])), min(2, int(xs.mean() * 3 / mask.shape[1]))


def block_mask(cell: tuple[int, int], size: int = 30) -> np.ndarray:
    m = np.zeros((size, size), np.int64)
    r, c = cell
    m[r * 10 + 3 : r * 10 + 7, c * 10 + 3 : c * 10 + 7] = 2
    return m


@pytest.mark.parametrize("g", DIHEDRAL)
def test_position_words_follow_the_pixels(g):
    for cell, phrases in POSITIONS.items():
        moved = cell_of(d4(block_mask(cell), g))
        for phrase in phrases:
            out = rewrite_caption(f"a house appears {phrase}", g)
            assert out is not None and cell_from_words(out) == moved, (g, phrase, out)


@pytest.mark.parametrize("g", DIHEDRAL)
def test_road_orientation_follows_the_pixels(g):
    strip = np.zeros((30, 30), np.int64)
    strip[:, 3:6] = 1  # a vertical road on the left
    moved = d4(strip, g)
    vertical = moved[:, moved.any(0)].all()
    out = rewrite_caption("a vertical road is built on the left", g)
    assert ("vertical" in out.split()) == bool(vertical)
    assert cell_from_words(out) == cell_of(moved)


def test_hflip_on_real_captions(real_sentences):
    assert rewrite_caption("a road is built on the left", "h") == "a road is built on the right"
    assert rewrite_caption("houses appear in the top left corner", "h") == "houses appear in the top right corner"
    assert rewrite_caption("villas appear on the lower-left side", "h") == "villas appear on the lower-right side"
    changed = 0
    for s in real_sentences:
        once = rewrite_caption(s, "h")
        assert once is not None, s  # a horizontal flip can always be described
        assert rewrite_caption(once, "h") == s
        changed += once != s
    assert changed > 2000


@pytest.mark.parametrize("g", ["v", "r180"])
def test_involutions_twice_are_identity_on_real_captions(real_sentences, g):
    for s in real_sentences:
        once = rewrite_caption(s, g)
        if once is not None:
            assert rewrite_caption(once, g) == s


def test_words_that_are_not_directions_are_kept():
    assert rewrite_caption("only a few trees are left on the right", "h") == "only a few trees are left on the left"
    assert rewrite_caption("two roads meet at a right angle", "h") == "two roads meet at a right angle"
    assert rewrite_caption("a road vertical to the old one is built", "r90") == "a road vertical to the old one is built"
    assert rewrite_caption("some houses show up", "v") == "some houses show up"


def test_unsafe_rewrites_are_refused():
    assert rewrite_caption("a row of houses is built on top of the road", "v") is None
    assert rewrite_caption("the trees above are removed", "r90") is None
    assert rewrite_caption("the trees above are removed", "v") == "the trees below are removed"
    allowed = allowed_rewrites(["the trees above are removed", "a house on the left"])
    assert set(allowed) == {"e", "h", "v", "r180"}


def _sample(size: int = 30, captions: list[str] | None = None) -> dict:
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.stack([yy * 8, xx * 8, (yy + xx) * 4], -1).astype(np.uint8)
    return {"image_a": img, "image_b": img.copy(), "masks": {"mask": block_mask((0, 0), size)},
            "captions": captions or ["a house appears in the top left corner"] * 5}


def _which(inp: np.ndarray, out: np.ndarray) -> str:
    matches = [g for g in DIHEDRAL if d4(inp, g).shape == out.shape and (d4(inp, g) == out).all()]
    assert matches, "output is no dihedral transform of the input"
    return matches[0]


def test_geometry_shared_and_captions_true():
    t = build_transforms({**GEOMETRY_ONLY, "dihedral": 1.0, "seed": 0}, train=True)
    used = set()
    for _ in range(40):
        s = _sample()
        out = t(s)
        assert set(out) == {"image_a", "image_b", "masks", "captions"}
        g = _which(s["image_a"], out["image_a"])
        used.add(g)
        assert (out["image_b"] == out["image_a"]).all()
        assert out["masks"]["mask"].dtype == np.int64
        assert (out["masks"]["mask"] == d4(s["masks"]["mask"], g)).all()
        assert all(cell_from_words(c) == cell_of(out["masks"]["mask"]) for c in out["captions"])
    assert len(used) >= 6 and "e" not in used


def test_transform_excluded_when_a_caption_cannot_follow():
    t = build_transforms({**GEOMETRY_ONLY, "dihedral": 1.0, "seed": 1}, train=True)
    caps = ["the trees above are removed", "a house appears in the top left corner"]
    used = {_which(_sample()["image_a"], t(_sample(captions=caps))["image_a"]) for _ in range(30)}
    assert used and not used & AXIS_SWAPS
    caps = ["a row of houses is built on top of the road"]  # only a horizontal flip keeps it true
    assert {_which(_sample()["image_a"], t(_sample(captions=caps))["image_a"]) for _ in range(10)} == {"h"}


def test_photometry_independent_per_date():
    t = build_transforms({"dihedral": 0.0, "color_jitter": {"brightness": 0.3, "p": 1.0}, "gauss_noise": 0,
                          "blur": 0, "seed": 2}, train=True)
    outs = [t(_sample()) for _ in range(5)]
    assert all((o["masks"]["mask"] == _sample()["masks"]["mask"]).all() for o in outs)
    assert sum((o["image_a"] != o["image_b"]).any() for o in outs) >= 4


def test_masks_nearest_with_affine_and_ignore_border():
    t = build_transforms({**GEOMETRY_ONLY, "dihedral": 0.0, "seed": 3,
                          "affine": {"rotate": [20, 30], "scale": [0.8, 0.9], "p": 1.0}}, train=True)
    s = _sample()
    s["masks"]["sem"] = np.tile(np.arange(30) % 7, (30, 1)).astype(np.int64)
    out = t(s)
    assert not (out["image_a"] == s["image_a"]).all()
    assert set(np.unique(out["masks"]["sem"]).tolist()) <= set(range(7)) | {IGNORE_INDEX}
    assert IGNORE_INDEX in out["masks"]["sem"]  # the rotated-in border is unlabelled, not background
    assert set(np.unique(out["masks"]["mask"]).tolist()) <= {0, 2, IGNORE_INDEX}


def test_crop_and_bad_inputs():
    t = build_transforms({**GEOMETRY_ONLY, "crop": 24, "seed": 4}, train=True)
    out = t(_sample())
    assert out["image_a"].shape == (24, 24, 3) and out["masks"]["mask"].shape == (24, 24)
    with pytest.raises(ChangeAgentError, match="larger than"):
        build_transforms({"crop": 40}, train=True)(_sample())
    bad = _sample()
    del bad["image_b"]
    with pytest.raises(ChangeAgentError, match="image_b"):
        t(bad)
    bad = _sample()
    bad["masks"]["mask"] = np.zeros((5, 5), np.int64)
    with pytest.raises(ChangeAgentError, match="shape"):
        t(bad)
    bad = _sample()
    bad["masks"]["mask"][0, 0] = 300
    with pytest.raises(ChangeAgentError, match="0..255"):
        t(bad)


def test_build_transforms_options():
    assert build_transforms({"crop": 8}, train=False) is None
    assert build_transforms(None, train=True) is None
    assert build_transforms({"enabled": False}, train=True) is None
    assert build_transforms({}, train=True) is None  # an empty config means no augmentation
    assert build_transforms({"enabled": True}, train=True).cfg["dihedral"] == 0.875
    for cfg, msg in [({"flip": True}, "augment.flip: unknown key"),
                     ({"dihedral_elements": ["x"]}, r"dihedral_elements\[0\]: 'x' is not one of"),
                     ({"crop": -3}, "crop"), ({"dihedral": 2}, r"dihedral: must be in \[0, 1\]"),
                     ({"color_jitter": 0.2}, "augment.color_jitter: expected a mapping")]:
        with pytest.raises(ChangeAgentError, match=msg):
            build_transforms(cfg, train=True)


def test_seeded_transforms_repeat():
    cfg = {"crop": 20, "dihedral": 0.9, "seed": 7}
    t1, t2 = build_transforms(cfg, train=True), build_transforms(cfg, train=True)
    for _ in range(5):
        o1, o2 = t1(_sample()), t2(_sample())
        assert (o1["image_a"] == o2["image_a"]).all() and (o1["image_b"] == o2["image_b"]).all()


@pytest.fixture(scope="module")
def synth_roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("aug")
    generate("levir-mci", base / "levir", 40, 2, 2, size=32, seed=9)
    generate("second-cc", base / "second", 6, 2, 2, size=32, seed=9)
    return base


def test_real_loader_captions_follow_augmented_masks(synth_roots):
    t = build_transforms({**GEOMETRY_ONLY, "dihedral": 1.0, "seed": 5}, train=True)
    ds = LevirMCI(synth_roots / "levir", "train", transforms=t)
    checked = 0
    for i in range(len(ds)):
        s = ds[i]
        m = s["mask"].numpy()
        text = " ".join(s["captions"])
        if not (m == 2).any() or (m == 1).any() or "along the road" in text:
            continue  # houses only, with a position in every caption
        assert all(cell_from_words(c) == cell_of(m == 2) for c in s["captions"]), s["captions"]
        checked += 1
    assert checked >= 3
    sc = SecondCC(synth_roots / "second", "train", transforms=build_transforms({"crop": 24}, train=True))
    assert sc[0]["sem"].shape == (2, 24, 24) and sc[0]["image"].shape == (2, 3, 24, 24)


class _Repeat(Dataset):
    def __init__(self, transform):
        self.t = transform

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.t(_sample())["image_a"].copy())


def test_dataloader_workers_draw_different_augmentations():
    t = build_transforms({"seed": 0, "dihedral": 1.0}, train=True)
    assert t is not None
    loader = DataLoader(_Repeat(t), batch_size=None, num_workers=2, generator=torch.Generator().manual_seed(0))
    out = list(loader)
    # worker 0 yields items 0, 2, 4, ... and worker 1 items 1, 3, 5, ...: identical streams would pair up
    assert not all((out[k] == out[k + 1]).all() for k in range(0, 16, 2))


# -- per-date nuisances: radiometry, haze, misregistration, date swap ------------------------------

NO_PHOTO = {"dihedral": 0.0, "color_jitter": None, "gauss_noise": 0, "blur": 0}


def test_radiometric_and_haze_per_date_keep_geometry():
    flat = {"image_a": np.full((32, 32, 3), 120, np.uint8), "image_b": np.full((32, 32, 3), 120, np.uint8),
            "masks": {"mask": block_mask((0, 0), 32)}, "captions": ["a house appears in the top left corner"]}
    rad = build_transforms({**NO_PHOTO, "radiometric": {"gamma": [0.6, 1.6], "channel_gain": 0.2, "p": 1.0},
                            "seed": 11}, train=True)
    haze = build_transforms({**NO_PHOTO, "haze": {"intensity": [0.15, 0.2], "p": 1.0}, "seed": 11}, train=True)
    for t, what in ((rad, "cast"), (haze, "gradient")):
        outs = [t({**flat, "masks": dict(flat["masks"])}) for _ in range(6)]
        for o in outs:
            assert (o["masks"]["mask"] == flat["masks"]["mask"]).all()  # photometry never moves a label
            assert o["captions"] == flat["captions"]
            if what == "cast":  # uniform in space, different per channel
                assert o["image_a"].reshape(-1, 3).std(0).max() < 1 and np.ptp(o["image_a"].reshape(-1, 3).mean(0)) > 1
            else:  # the same for every channel, varying across the tile
                assert o["image_a"][..., 0].std() > 2 and (o["image_a"][..., 0] == o["image_a"][..., 2]).all()
        # each date draws its own: the two dates of one sample differ
        assert sum(not np.array_equal(o["image_a"], o["image_b"]) for o in outs) == len(outs)


def test_shift_moves_one_date_by_subpixel_amounts():
    t = build_transforms({**NO_PHOTO, "shift": {"max_px": 2.0, "p": 1.0}, "seed": 12}, train=True)
    s = _sample(32)
    s["image_a"] = s["image_b"] = np.zeros((32, 32, 3), np.uint8)
    s["image_a"][14:18, 14:18] = s["image_b"][14:18, 14:18] = 255
    centres, fractional = [], 0
    for _ in range(20):
        o = t({**s, "masks": dict(s["masks"])})
        assert (o["image_b"] == s["image_b"]).all() and (o["masks"]["mask"] == s["masks"]["mask"]).all()
        w = o["image_a"][..., 0].astype(float)
        yy, xx = np.mgrid[0:32, 0:32]
        cy, cx = (w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()
        centres.append((cx - 15.5, cy - 15.5))
        fractional += len(np.unique(o["image_a"])) > 2  # bilinear: a sub-pixel shift blends edge pixels
    d = np.abs(np.array(centres))
    assert d.max() <= 2.05 and d.max() > 0.5 and fractional >= 15
    tb = build_transforms({**NO_PHOTO, "shift": {"max_px": 1.0, "p": 1.0, "date": "b"}, "seed": 1}, train=True)
    o = tb({**s, "masks": dict(s["masks"])})
    assert (o["image_a"] == s["image_a"]).all() and not (o["image_b"] == s["image_b"]).all()
    with pytest.raises(ChangeAgentError, match="shift.date"):
        build_transforms({"shift": {"date": "c"}}, train=True)


def test_swap_dates_only_without_captions_and_per_date_masks_follow():
    t = build_transforms({**NO_PHOTO, "swap_dates": 1.0, "seed": 13}, train=True)
    a, b = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 200, np.uint8)
    sem_a, sem_b = np.full((8, 8), 3, np.int64), np.full((8, 8), 5, np.int64)
    change = np.ones((8, 8), np.int64)
    o = t({"image_a": a, "image_b": b, "masks": {"sem_a": sem_a, "sem_b": sem_b, "change": change}, "captions": []})
    assert (o["image_a"] == 200).all() and (o["image_b"] == 0).all()
    assert (o["masks"]["sem_a"] == 5).all() and (o["masks"]["sem_b"] == 3).all() and (o["masks"]["change"] == 1).all()
    o = t({"image_a": a, "image_b": b, "masks": {"sem_a": sem_a}, "captions": ["two houses are built"]})
    assert (o["image_a"] == 0).all()  # "built" would become false: captioned samples are never swapped
