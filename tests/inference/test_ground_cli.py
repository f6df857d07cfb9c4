"""`changeagent ground` and `Predictor.ground`: both routes on a PNG pair and a GeoTIFF scene, every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from infer_helpers import GEOTIFF, TILES, crop_tif, listing, save_tiny
from PIL import Image
from rasterio.windows import Window

from changeagent.data.lexicon import cell_index, region_cells
from changeagent.errors import ChangeAgentError
from changeagent.inference import Predictor

A = TILES / "LEVIR-CD/A/test_55_0256_0000.png"
B = TILES / "LEVIR-CD/B/test_55_0256_0000.png"
GROUNDING = {"tasks": ["mask", "caption", "grounding"], "grounding": {"channels": 8, "text_dim": 16, "heads": 2}}
KEYS = {"expression", "route", "head", "query", "area", "components", "boxes", "height", "width", "a", "b",
        "mask", "overlay", "record"}


@pytest.fixture(scope="module")
def gckpt(tmp_path_factory):
    """A tiny model with the grounding head (random weights)."""
    return save_tiny(tmp_path_factory.mktemp("gckpt"), **GROUNDING)


def test_ground_pair_program_route_writes_mask_overlay_json(ckpt, tmp_path, run_cli):
    out = tmp_path / "out"
    code, stdout, err = run_cli("ground", "--checkpoint", ckpt, A, B, "new buildings in the top left", "-o", out,
                                "--no-progress")
    assert code == 0, err
    assert "program route" in stdout  # auto on a model without the head
    rec = json.loads((out / "test_55_0256_0000_ground.json").read_text())
    assert KEYS <= set(rec) and rec["route"] == "program"
    assert rec["query"] == {"space": "levir", "cls": "building", "transition": None, "position": "top left",
                            "instance": None, "date": None}
    with Image.open(rec["mask"]) as im:
        mask = np.asarray(im)
    assert mask.shape == (256, 256) and set(np.unique(mask)) <= {0, 1}
    assert rec["area"]["pixels"] == int((mask == 1).sum())
    assert rec["area"]["fraction"] == pytest.approx((mask == 1).mean())
    outside = ~np.isin(cell_index(256, 256), region_cells("top left"))
    assert not mask[outside].any()
    # the program route is the cut of the model's own predicted maps (predict's decoding)
    maps = Predictor.from_pretrained(ckpt).predict(A, B).maps["mask"]
    assert np.array_equal(mask == 1, (maps == 2) & ~outside)
    assert rec["components"] == len(rec["boxes"])
    for box in rec["boxes"]:
        assert mask[box["y0"]:box["y1"], box["x0"]:box["x1"]].sum() >= box["area"] >= 6
    with Image.open(rec["overlay"]) as vis:
        assert vis.width > 2 * 200
    assert not [n for n in listing(out) if ".tmp" in n]
    assert not [n for n in listing(tmp_path) if ".tmp" in n]


def test_ground_learned_route_is_the_head_thresholded(gckpt, tmp_path, run_cli):
    out = tmp_path / "out"
    code, stdout, err = run_cli("ground", "--checkpoint", gckpt, A, B, "changed roads", "-o", out, "--no-progress")
    assert code == 0, err
    rec = json.loads((out / "test_55_0256_0000_ground.json").read_text())
    assert rec["route"] == "learned" and rec["threshold"] == 0.35
    with Image.open(rec["mask"]) as im:
        mask = np.asarray(im) == 1
    pred = Predictor.from_pretrained(gckpt)
    x = torch.from_numpy(pred.prepare_pair(A, B))[None]
    logits = pred.model.predict(x, dataset=["levir_mci"], inputs={"expressions": ["changed roads"]})["grounding"]
    assert np.array_equal(mask, (torch.sigmoid(logits[0, 0]) >= 0.35).numpy())
    # the same model answers by the program route when asked
    g = pred.ground(A, B, "changed roads", route="program")
    assert g.route == "program" and np.array_equal(g.mask, pred.predict(A, B).maps["mask"] == 1)


def test_ground_scene_is_georeferenced_like_the_input(gckpt, tmp_path, run_cli):
    win = Window(0, 0, 96, 96)
    a = crop_tif(GEOTIFF / "cogeo.tif", tmp_path / "a.tif", win)
    b = crop_tif(GEOTIFF / "cogeo.tif", tmp_path / "b.tif", win, paint=(20, 70, 30, 90, (180, 60, 40)))
    out = tmp_path / "out"
    # tile 64 on a 96 px scene: the windows' logits are blended
    code, _, err = run_cli("ground", "--checkpoint", gckpt, "--scene", a, b, "changed buildings", "-o", out,
                           "--route", "program", "--tile", "64", "--overlap", "16", "--no-progress")
    assert code == 0, err
    rec = json.loads((out / "a_ground.json").read_text())
    assert rec["route"] == "program" and rec["geojson"].endswith("a_ground.geojson")
    with rasterio.open(a) as src, rasterio.open(rec["mask"]) as m:
        assert m.crs == src.crs and m.transform == src.transform and (m.width, m.height) == (96, 96)
        mask = m.read(1)
    assert rec["area"]["pixels"] == int((mask == 1).sum())
    gj = json.loads((out / "a_ground.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and rec["polygons"] == len(gj["features"])
    assert rec["area"]["pixels"] > 0  # the tiny model's spread heads mark some change here
    assert gj["features"] and gj["features"][0]["geometry"]["type"] == "Polygon"
    x, y = gj["features"][0]["geometry"]["coordinates"][0][0]
    left, bottom, right, top = rasterio.transform.array_bounds(96, 96, m.transform)
    assert left <= x <= right and bottom <= y <= top  # map coordinates, not pixels


def test_ground_bad_inputs_exit_2_and_write_nothing(ckpt, gckpt, tmp_path, run_cli):
    cases = [
        ((ckpt, A, B, "   "), "empty"),
        ((ckpt, A, B, "new swimming pools"), "'swimming'"),  # unknown word: the vocabulary is listed
        ((ckpt, A, B, "buildings in the far corner"), "known classes"),
        ((ckpt, A, B, "new buildings", "--route", "learned"), "no grounding head"),
        ((gckpt, A, B, "new buildings", "--scene"), "--scene"),  # PNGs are no scene
    ]
    for i, ((ck, *rest), needle) in enumerate(cases):
        out = tmp_path / f"out{i}"
        code, _, err = run_cli("ground", "--checkpoint", ck, *rest, "-o", out, "--no-progress")
        assert code == 2, (rest, err)
        assert err.startswith("error:") and needle in err, (rest, err)
        assert not out.exists(), rest
    assert not [n for n in listing(tmp_path) if ".tmp" in n]
    code, _, err = run_cli("ground", "--checkpoint", ckpt, A, B, "new pools", "-o", tmp_path / "o")
    assert "building" in err and "top left" in err  # the known class and place words


def test_predictor_ground_api_errors(ckpt):
    pred = Predictor.from_pretrained(ckpt)
    with pytest.raises(ChangeAgentError, match="route"):
        pred.ground(A, B, "new buildings", route="magic")
    g = pred.ground(A, B, "the largest new building")
    assert g.route == "program" and g.query.instance == "largest"
    assert g.record()["components"] <= 1
