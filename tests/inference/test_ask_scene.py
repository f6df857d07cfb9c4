"""`changeagent ask --scene A.tif B.tif` on a tiny GeoTIFF pair: `--window x,y,w,h` and `--point x,y`
(a --tile window around the point, clipped to the raster) answer about exactly that window, the same
answers as `Predictor.ask` on the window's pixels read directly; bad windows and flags exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from infer_helpers import GEOTIFF, crop_tif, save_tiny
from rasterio.windows import Window

from changeagent.data.qa.answers import TYPE_ANSWERS

QA = {"dim": 16, "text_layers": 1, "fusion_layers": 1, "heads": 2}
Q = "how many buildings were built?"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    base = tmp_path_factory.mktemp("ask_scene")
    ckpt = save_tiny(base / "ckpt", encoder="tu-mobilenetv3_small_050", tasks=["mask", "caption", "qa"], qa=QA)
    win = Window(256, 256, 96, 80)
    a = crop_tif(GEOTIFF / "cogeo.tif", base / "a.tif", win)
    b = crop_tif(GEOTIFF / "cogeo.tif", base / "b.tif", win, paint=(20, 50, 30, 70, (200, 60, 40)))
    return ckpt, a, b


def _direct(ckpt, a, b, window):
    from changeagent.inference.predictor import Predictor

    x, y, w, h = window
    arrays = []
    for p in (a, b):
        with rasterio.open(p) as src:
            arrays.append(np.moveaxis(src.read(window=Window(x, y, w, h)), 0, -1))
    return Predictor.from_pretrained(ckpt, max_len=6).ask(arrays[0], arrays[1], Q)


@pytest.mark.parametrize("flag, value, window", [
    ("--window", "16,8,48,40", [16, 8, 48, 40]),
    ("--point", "90,4", [64, 0, 32, 32]),  # a 32 px window around (90, 4), clipped at the right and top
])
def test_ask_about_a_window_of_a_scene(scene, tmp_path, run_cli, flag, value, window):
    ckpt, a, b = scene
    out = tmp_path / "ans.json"
    code, printed, err = run_cli("ask", "--checkpoint", ckpt, "--scene", a, b, flag, value, "--tile", 32, Q,
                                 "--json", out)
    assert code == 0, err
    rec = json.loads(out.read_text())
    assert rec["window"] == window and rec["type"] == "change_count" and "question type: change_count" in printed
    assert rec["answer"] in TYPE_ANSWERS["change_count"]
    assert rec["measured"]["evidence"]["tile"] == window[2] * window[3]  # the rules saw that window, whole
    direct = _direct(ckpt, a, b, window)
    assert (rec["answer"], rec["measured"]) == (direct["answer"], direct["measured"])


def test_bad_scene_arguments(scene, run_cli):
    ckpt, a, b = scene
    for extra, needle in ((["--window", "80,0,32,32"], "outside"), (["--point", "200,5"], "outside"),
                          (["--window", "1,2,3"], "4 comma-separated"), ([], "one of --window"),
                          (["--window", "0,0,32,32", "--point", "1,1"], "one of --window")):
        code, _, err = run_cli("ask", "--checkpoint", ckpt, "--scene", a, b, *extra, Q)
        assert code == 2 and "error:" in err and needle in err, (extra, err)
    code, _, err = run_cli("ask", "--checkpoint", ckpt, a, b, "--window", "0,0,32,32", Q)
    assert code == 2 and "need --scene" in err
