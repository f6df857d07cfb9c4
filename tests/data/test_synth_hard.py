"""The hard synthetic benchmark (`data synth --difficulty hard`): every nuisance is present and
unlabelled, the layouts and label noise occur at their rates, output is deterministic, loaders read it."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage

from changeagent.cli import main
from changeagent.data.constants import NO_CHANGE_SENTENCES
from changeagent.data.levir_mci import LevirMCI
from changeagent.data.second_cc import SecondCC
from changeagent.data.synth import hard, hard_captions, hard_second, nuisance
from changeagent.data.synth.captions import captions as default_captions

SIZE = 64


def _levir(i: int, change: bool = True, noisy: bool = False, size: int = SIZE, seed: int = 0):
    return hard.levir_pair(np.random.default_rng([seed, i]), size, change, noisy=noisy)


def _second(i: int, change: bool = True, noisy: bool = False, size: int = SIZE):
    return hard_second.second_pair(np.random.default_rng([1, i]), size, change, noisy=noisy)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _synth(fmt: str, out: Path, difficulty: str = "hard", seed: int = 4) -> int:
    return main(["data", "synth", "--format", fmt, "--out", str(out), "--n-train", "10", "--n-val", "3",
                 "--n-test", "3", "--size", "32", "--seed", str(seed), "--difficulty", difficulty, "--no-progress"])


# -- nuisances: present, and never labelled ---------------------------------------------------------

def test_cast_shadows_move_with_the_sun_and_are_not_labelled():
    checked = 0
    for i in range(12):
        p = _levir(i)
        looks, buildings = p.meta["looks"], p.meta["buildings"]
        changed = p.label == 2
        shade = {d: nuisance.shadow_masks(buildings[d], looks[d], SIZE) for d in ("a", "b")}
        for d in ("a", "b"):
            if not buildings[d]:
                continue
            assert shade[d].any()
            roofs = np.zeros_like(changed)
            for b in buildings[d]:
                roofs |= b.mask(SIZE)
            assert not (shade[d] & roofs).any()  # a shadow lies on the ground
            # a shadow pixel is never labelled (only footprints are)
            ground_shadow = shade[d] & ~changed & (p.label != 1)
            assert (p.label[ground_shadow] == 0).all()
            assert (p.label[shade[d] & ~(changed | (p.label == 1))] == 0).all()
            checked += int(ground_shadow.any())
        both = [b for b in buildings["a"] if b in buildings["b"]]  # unchanged buildings
        if both and looks["a"].sun_azimuth != looks["b"].sun_azimuth:
            sa = nuisance.shadow_masks(both, looks["a"], SIZE)
            sb = nuisance.shadow_masks(both, looks["b"], SIZE)
            assert (sa ^ sb).any()  # the sun moved: an unchanged building's shadow changed
    assert checked >= 5


def test_shadows_darken_the_ground():
    ground = np.full((SIZE, SIZE, 3), 150.0, np.float32)
    b = hard.sh.Building(32, 32, 10, 6, 0.3, np.array([200, 60, 60], np.float32), 6.0)
    look = nuisance.draw_look(np.random.default_rng(0), sun_base=0.5)
    look = nuisance.DateLook(**{**look.__dict__, "gain": 1.0, "cast": (1.0, 1.0, 1.0), "bias": (0, 0, 0),
                                "gamma": 1.0, "haze": 0.0, "blur": 0.0, "noise": 0.0})
    img = nuisance.render(np.random.default_rng(1), ground, np.zeros((SIZE, SIZE), bool), [b], look)
    shade = nuisance.shadow_masks([b], look, SIZE)
    assert shade.sum() > 10
    assert img[shade].mean() < 0.7 * 150 and abs(float(img[~shade & ~b.mask(SIZE)].mean()) - 150) < 1


def test_radiometric_change_exists_in_unchanged_areas():
    diffs = []
    for i in range(10):
        p = _levir(i, change=False)
        assert not p.label.any() and not p.events
        a, b = p.image_a.astype(np.float32), p.image_b.astype(np.float32)
        diffs.append(float(np.abs(a.mean((0, 1)) - b.mean((0, 1))).max()))
        la, lb = p.meta["looks"]["a"], p.meta["looks"]["b"]
        assert (la.gain, la.gamma, la.cast, la.bias) != (lb.gain, lb.gamma, lb.cast, lb.bias)
    # the same ground, nothing labelled, yet a channel's mean differs by several grey levels
    assert np.median(diffs) > 6


def test_haze_is_a_gradient_across_the_tile():
    flat = np.full((SIZE, SIZE, 3), 80.0, np.float32)
    base = nuisance.draw_look(np.random.default_rng(0), 0.0)
    look = nuisance.DateLook(**{**base.__dict__, "gain": 1.0, "cast": (1.0, 1.0, 1.0), "bias": (0, 0, 0),
                                "gamma": 1.0, "haze": 0.3, "haze_angle": 0.0})  # thickening to the right
    out = nuisance.radiometry(flat, look)
    cols = out[..., 0].mean(0)
    assert cols[-1] - cols[0] > 25 and (np.diff(cols) >= -1e-4).all()
    assert np.allclose(out[:, 0], out[0, 0], atol=1e-3)  # constant across the haze direction


def test_seasonal_colour_only_on_vegetation():
    img = np.full((8, 8, 3), 100.0, np.float32)
    veg = np.zeros((8, 8), bool)
    veg[:4] = True
    look = nuisance.DateLook(**{**nuisance.draw_look(np.random.default_rng(0), 0).__dict__, "season": "autumn",
                                "season_mix": 1.0})
    nuisance.apply_season(img, veg, look)
    assert np.allclose(img[4:], 100) and img[0, 0, 0] > 120 and img[0, 0, 2] < 70
    seasons = Counter((p.meta["looks"]["a"].season, p.meta["looks"]["b"].season) for p in map(_levir, range(12)))
    assert sum(n for (sa, sb), n in seasons.items() if sa != sb) >= 6  # dates usually differ in season


def test_misregistration_is_measurable_and_at_most_two_pixels():
    errors, integer = [], 0
    for i in range(10):
        p = _levir(i, change=False, size=128)
        dx, dy = p.meta["shift"]
        assert max(abs(dx), abs(dy)) <= 2.0 and (dx, dy) != (0.0, 0.0)
        integer += float(dx).is_integer() and float(dy).is_integer()
        grey = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float32) for im in (p.image_a, p.image_b)]
        grey = [g - cv2.GaussianBlur(g, (0, 0), 4) for g in grey]  # radiometry and haze are smooth
        (mx, my), _ = cv2.phaseCorrelate(grey[1], grey[0], cv2.createHanningWindow((128, 128), cv2.CV_32F))
        errors.append(float(np.hypot(mx - dx, my - dy)))
    assert np.median(errors) < 0.4  # the shift of A against the label grid (B) is really in the pixels
    shifts = [_levir(i).meta["shift"] for i in range(40)]
    n_int = sum(float(x).is_integer() and float(y).is_integer() for x, y in shifts)
    assert 5 <= n_int <= 30  # both integer and sub-pixel misregistration occur


def test_second_shadows_and_seasons_are_not_labelled():
    seen = 0
    for i in range(12):
        p = _second(i)
        changed = (p.sem_a > 0) | (p.sem_b > 0)
        for d in ("a", "b"):
            shade = nuisance.shadow_masks(p.meta["buildings"][d], p.meta["looks"][d], SIZE)
            assert (p.sem_a[shade & ~changed] == 0).all() and (p.sem_b[shade & ~changed] == 0).all()
            seen += int((shade & ~changed).any())
        assert ((p.sem_a > 0) == (p.sem_b > 0)).all()  # the same pixels on both dates (SPEC §1.2)
    assert seen >= 4


# -- layouts, small objects, label noise, captions ---------------------------------------------------

def test_many_layouts_occur():
    kinds: Counter[str] = Counter()
    for i in range(120):
        for ev in _levir(i, size=96).meta["label_events"]:
            kinds[ev.kind] += 1
            kinds[f"{ev.kind}:{ev.layout}"] += 1
            if ev.road:
                kinds[f"road:{ev.road}"] += 1
            if ev.sides:
                kinds[f"sides:{ev.sides}"] += 1
            kinds["crosses_old"] += ev.crosses_old
    for k in ("houses:cell", "houses:scattered", "houses:cluster", "houses:along_old", "factory", "demolish",
              "crossing", "road_rows", "road:dead_end", "road:curved", "road:straight", "sides:1", "sides:2",
              "crosses_old"):
        assert kinds[k] > 0, (k, kinds)


def test_most_changed_buildings_are_small():
    areas = []
    for i in range(40):
        p = _levir(i, size=128)
        factories = np.zeros_like(p.label, dtype=bool)
        for d in ("a", "b"):
            for b in p.meta["buildings"][d]:
                if b.kind == "factory":
                    factories |= b.mask(128)
        lab, n = ndimage.label((p.label == 2) & ~factories)
        areas += list(np.bincount(lab.ravel())[1:] / 128**2)
    assert len(areas) > 50 and np.median(areas) < 0.006 and np.mean(np.array(areas) < 0.01) > 0.8


def test_label_caption_disagreements_in_train_only():
    kinds: Counter[str | None] = Counter()
    n = 400
    for i in range(n):
        p = _levir(i, change=i % 2 == 0, noisy=True, size=32, seed=3)
        kinds[p.meta["disagreement"]] += 1
        caps = hard_captions.captions(np.random.default_rng(i), p.events)
        says_change = caps != list(NO_CHANGE_SENTENCES)
        if p.meta["disagreement"] == "uncaptioned":
            assert p.label.any() and not says_change
        elif p.meta["disagreement"] == "unlabelled":
            assert not p.label.any() and says_change
        elif p.meta["disagreement"] == "miscounted":
            told = [e.count for e in p.events]
            drawn = [e.count for e in p.meta["label_events"]]
            assert told != drawn and p.label.any()
        else:
            assert bool(p.label.any()) == says_change  # everything else agrees
    rate = 1 - kinds[None] / n
    assert 0.02 <= rate <= 0.09, kinds  # about 5 % of the pairs, as in LEVIR-MCI
    assert all(_levir(i, change=True, noisy=False, size=32).meta["disagreement"] is None for i in range(30))
    rate2 = np.mean([_second(i, change=i % 2 == 0, noisy=True, size=32).meta["disagreement"] is not None
                     for i in range(200)])
    assert 0.01 <= rate2 <= 0.1


def test_captions_vary_more_than_the_default_grammar():
    hard_forms, default_forms = set(), set()
    for i in range(40):
        ev = hard.HardEvent("houses", (0, 0), 2, "grass", layout="cell")
        hard_forms.update(hard_captions.captions(np.random.default_rng(i), [ev]))
        from changeagent.data.synth.scenes import Event

        default_forms.update(default_captions(np.random.default_rng(i), [Event("houses", (0, 0), 2, "grass")]))
    assert len(hard_forms) > 1.5 * len(default_forms)
    words = lambda forms: {w for c in forms for w in c.split()}  # noqa: E731
    assert len(words(hard_forms)) > 1.3 * len(words(default_forms))
    for c in hard_forms:
        assert "two" in c.split() and ("top" in c or "upper" in c) and "left" in c  # all true of the event


def test_hard_captions_survive_flips():
    """Position words of the hard grammar can be rewritten under the dihedral group (augmentation)."""
    from changeagent.data.transforms import allowed_rewrites

    ok = total = 0
    for i in range(60):
        p = _levir(i, size=32)
        caps = hard_captions.captions(np.random.default_rng(i), p.events)
        total += 1
        ok += len(allowed_rewrites(caps)) == 8
    assert ok / total > 0.9


# -- files: CLI, determinism, loaders ----------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["levir-mci", "second-cc"])
def test_cli_hard_is_deterministic_and_differs_from_default(tmp_path, fmt):
    assert _synth(fmt, tmp_path / "a") == 0
    assert _synth(fmt, tmp_path / "b") == 0
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _synth(fmt, tmp_path / "d", difficulty="default") == 0
    ha, hd = _digest(tmp_path / "a"), _digest(tmp_path / "d")
    assert set(ha) == set(hd)  # the same release layout
    assert sum(ha[k] != hd[k] for k in ha) > len(ha) // 2
    reader = LevirMCI if fmt == "levir-mci" else SecondCC
    ds = reader(tmp_path / "a", split="train")
    item = ds[0]
    assert item["image"].shape == (2, 3, 32, 32) and len(item["captions"]) == 5


def test_cli_rejects_unknown_difficulty(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _synth("levir-mci", tmp_path / "x", difficulty="extreme")
    assert e.value.code == 2


def test_binary_layout_hard(tmp_path):
    rc = main(["data", "synth", "--format", "levir-cd", "--out", str(tmp_path / "cd"), "--n-train", "4",
               "--n-val", "2", "--n-test", "2", "--size", "32", "--difficulty", "hard", "--no-progress",
               "--json", str(tmp_path / "s.json")])
    assert rc == 0 and json.loads((tmp_path / "s.json").read_text())["difficulty"] == "hard"
    assert len(list((tmp_path / "cd" / "A").glob("*.png"))) == 8


def test_engine_generates_the_hard_benchmark_when_asked(tmp_path):
    from changeagent.engine.roots import ensure_synthetic

    base = {"format": "levir_mci", "n_train": 3, "n_val": 1, "n_test": 1, "size": 32, "seed": 2,
            "mask_variant": "grey"}
    ensure_synthetic(tmp_path / "d", base)
    ensure_synthetic(tmp_path / "h", {**base, "difficulty": "hard"})
    assert json.loads((tmp_path / "h" / ".synth.json").read_text())["difficulty"] == "hard"
    assert _digest(tmp_path / "d") != _digest(tmp_path / "h")
