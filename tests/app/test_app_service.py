"""The shared service: the same results as `changeagent predict`, scenes, limits, capabilities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from app_helpers import OPTIONS, SMALL_MP
from PIL import Image
from scipy import ndimage

from changeagent.app.limits import Limits
from changeagent.app.service import ChangeService, Upload, model_tasks
from changeagent.errors import ChangeAgentError


@pytest.fixture(scope="module")
def svc(app_ckpt: Path, root: Path, index: Path, tmp_path_factory: pytest.TempPathFactory) -> ChangeService:
    return ChangeService.from_checkpoint(app_ckpt, roots=[root], out=tmp_path_factory.mktemp("svc_out"),
                                         indexes=[index], limits=Limits(max_megapixels=SMALL_MP), **OPTIONS)


def components(mask: np.ndarray, cls: int, min_area: int) -> int:
    lab, n = ndimage.label(mask == cls, structure=np.ones((3, 3), bool))
    return int((np.bincount(lab.ravel())[1:] >= min_area).sum()) if n else 0


def test_detect_matches_predict(svc, root, app_ckpt, tmp_path, run_cli):
    res = svc.detect_changes("A/p03.png", "B/p03.png")
    assert res.mode == "pair" and res.head == "levir_mci" and (res.width, res.height) == (64, 64)
    assert svc.out.contains(res.mask_path) and svc.out.contains(res.overlay_path)
    code, _, err = run_cli("predict", "-k", app_ckpt, root / "A" / "p03.png", root / "B" / "p03.png",
                           "-o", tmp_path, "--max-len", "6")
    assert code == 0, err
    want = np.asarray(Image.open(tmp_path / "p03_mask.png"))
    got = np.asarray(Image.open(res.mask_path))
    assert np.array_equal(got, want)
    rec = json.loads((tmp_path / "p03.json").read_text())
    assert res.caption == rec["caption"]
    for i, c in enumerate(res.classes, start=1):
        assert c.name == ["road", "building"][i - 1]
        assert c.pixels == int((want == i).sum())
        assert c.changed_fraction == pytest.approx(rec["changed_fraction"][c.name])
        assert c.objects == components(want, i, 16) == rec["object_counts"][c.name]
    assert res.changed_fraction == pytest.approx(float((want > 0).mean()))
    overlay = np.asarray(Image.open(res.overlay_path))
    assert overlay.shape == (64, 64, 3)
    # describe and count answer from the same analysis; a class of another head is refused
    assert svc.describe("A/p03.png", "B/p03.png").caption == res.caption
    assert svc.count("A/p03.png", "B/p03.png", "building").count == res.classes[1].objects
    with pytest.raises(ChangeAgentError, match="not a change class"):
        svc.count("A/p03.png", "B/p03.png", "tree")


def test_scene_mode_for_geotiff(svc, root):
    res = svc.detect_changes("geo/a.tif", "geo/b.tif")
    assert res.mode == "scene" and res.mask_path.endswith(".tif") and res.geojson_path
    with rasterio.open(res.mask_path) as m, rasterio.open(root / "geo" / "a.tif") as a:
        assert m.crs == a.crs and m.transform == a.transform
        mask = m.read(1)
    assert [c.pixels for c in res.classes] == [int((mask == i).sum()) for i in (1, 2)]
    assert [c.objects for c in res.classes] == [components(mask, i, 16) for i in (1, 2)]
    assert isinstance(res.caption, str) and res.caption
    gj = json.loads(Path(res.geojson_path).read_text())
    assert gj["features"] and gj["features"][0]["geometry"]["type"] == "Polygon"


def test_bad_inputs_leave_nothing(svc, root, tmp_path):
    before = sorted(svc.out.path.iterdir())
    for a, why in [("bad.png", "cannot read"), ("big/A.png", "megapixels"), ("A/none.png", "does not exist"),
                   ("../outside/secret.png", "'..'")]:
        with pytest.raises(ChangeAgentError, match=why):
            svc.detect_changes(a, "B/p00.png")
    assert sorted(svc.out.path.iterdir()) == before  # failed requests leave no request folder
    big = tmp_path / "upload.bin"
    big.write_bytes(b"\0" * 2048)
    small = ChangeService(svc._model, roots=[], out=tmp_path / "o", limits=Limits(max_upload_mb=1 / 1024),
                          norm=svc._norm, datasets=svc._datasets)
    with pytest.raises(ChangeAgentError, match="more than the limit of"):
        small.detect_changes(Upload(big), Upload(big))
    with pytest.raises(ChangeAgentError, match="reads no files"):
        small.detect_changes("A/p00.png", "B/p00.png")


def test_uploads_run_without_roots(svc, root, tmp_path):
    up = ChangeService(svc._model, roots=[], out=tmp_path / "o", norm=svc._norm, datasets=svc._datasets, **OPTIONS)
    res = up.detect_changes(Upload(root / "A" / "p05.png"), Upload(root / "B" / "p05.png"))
    ref = svc.detect_changes("A/p05.png", "B/p05.png")
    assert res.classes == ref.classes and res.caption == ref.caption
    assert "p05" not in res.mask_path  # output names come from the server, never from the input's name


def test_time_limit_stops_the_request(svc, tmp_path):
    slow = ChangeService(svc._model, roots=svc.roots.roots, out=tmp_path / "o", limits=Limits(timeout_s=1e-6),
                         norm=svc._norm, datasets=svc._datasets)
    with pytest.raises(ChangeAgentError, match="time limit"):
        slow.detect_changes("A/p01.png", "B/p01.png")
    assert list((tmp_path / "o").iterdir()) == []
    assert slow.gate.running == 0  # the slot is free again


def test_search_and_thumbnails(svc):
    res = svc.search("crops", "a new building", 3, thumbnails=True)
    assert [h.rank for h in res.results] == [1, 2, 3]
    for h in res.results:
        thumb = Image.open(h.model_extra["thumbnail_path"])
        assert thumb.size[1] == 64  # A | B at their size (below the thumbnail side)
    plain = svc.search("crops", "a new building", 3)
    assert [h.name for h in plain.results] == [h.name for h in res.results]
    assert "thumbnail_path" not in (plain.results[0].model_extra or {})
    with pytest.raises(ChangeAgentError, match="no index named"):
        svc.search("nope", "a building", 3)


def test_tools_follow_the_model(svc, tmp_path):
    assert svc.tools() == ["detect_changes", "describe", "count", "search"]
    bare = ChangeService(svc._model, roots=[], out=tmp_path / "o", norm=svc._norm, datasets=svc._datasets)
    assert bare.tools() == ["detect_changes", "describe", "count"]  # no index, no search

    class WithHeads:
        tasks = ["mask", "caption", "qa"]  # a model's tasks, one head each (docs/design.md "Tasks")

    assert model_tasks(WithHeads()) == {"mask", "caption", "qa"}
    assert model_tasks(svc._model) == set(svc._model.tasks)
    assert not bare.offers("ask")  # this model has no qa head
    bare.tasks.add("qa")
    assert bare.offers("ask") and bare.tools() == ["detect_changes", "describe", "count", "ask"]


def test_scene_index_thumbnails_and_footprints(svc, app_ckpt, root, tmp_path):
    """Scene windows found by search get an A | B thumbnail and their footprints on a scene overview."""
    from changeagent.inference import index as ix
    from changeagent.inference.predictor import Predictor

    pred = Predictor.from_pretrained(app_ckpt, tile=64, overlap=0, **OPTIONS)
    ix.index_scene(pred, str(root / "geo" / "a.tif"), str(root / "geo" / "b.tif"), tmp_path / "scene", progress=False)
    scenes = ChangeService(svc._model, roots=[root], out=tmp_path / "o", indexes=[tmp_path / "scene"],
                           norm=svc._norm, datasets=svc._datasets, **OPTIONS)
    res = scenes.search("scene", "a new building", 4, thumbnails=True)
    assert len(res.results) == 4 and all(h.footprint for h in res.results)  # 96 px in 64 px windows: 4
    for h in res.results:
        assert Image.open(h.model_extra["thumbnail_path"]).size == (2 * h.model_extra["width"] + 4,
                                                                     h.model_extra["height"])
    extra = res.model_extra
    assert Image.open(extra["footprints_paths"][0]).size == (96, 96)
    gj = json.loads(Path(extra["geojson_path"]).read_text())
    assert len(gj["features"]) == 4 and gj["crs"]["properties"]["name"].endswith("3857")


def test_from_checkpoint_uses_the_one_loader(tmp_path):
    """The app opens a checkpoint exactly as `predict` does: a folder without config.json is named."""
    (tmp_path / "weights.bin").write_bytes(b"not a model")
    with pytest.raises(ChangeAgentError, match="has no config.json"):
        ChangeService.from_checkpoint(tmp_path)
    with pytest.raises(ChangeAgentError, match="does not exist"):
        ChangeService.from_checkpoint(tmp_path / "missing")
