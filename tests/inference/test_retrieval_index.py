"""`changeagent index` / `changeagent search`: pairs, a GeoTIFF scene, resume, FAISS, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from infer_helpers import GEOTIFF, TILES, crop_tif, save_tiny
from PIL import Image
from rasterio.windows import Window

from changeagent.errors import ChangeAgentError
from changeagent.inference import index as ix
from changeagent.inference.index_store import IndexStore
from changeagent.inference.predictor import Predictor
from changeagent.inference.search import Searcher

RETR = {"enabled": True, "dim": 16, "text_dim": 16, "text_layers": 1, "heads": 2}
SMALL = {"encoder": "tu-mobilenetv3_small_050", "retrieval": RETR}
FAST = ("--max-len", "6", "--no-progress")


@pytest.fixture(scope="module")
def rck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("rck"), **SMALL)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Five 64x64 pairs cut from the real LEVIR-CC tiles."""
    root = tmp_path_factory.mktemp("pairs")
    names = sorted(p.name for p in (TILES / "LEVIR-CC" / "A").iterdir())
    for d in ("A", "B"):
        (root / d).mkdir()
        for i in range(5):
            im = Image.open(TILES / "LEVIR-CC" / d / names[i % len(names)]).convert("RGB")
            im.crop((64 * i, 0, 64 * i + 64, 64)).save(root / d / f"p{i}.png")
    return root / "A", root / "B"


def test_pairs_index_and_search_contract(rck, pairs, tmp_path, run_cli):
    idx = tmp_path / "idx"
    code, out, err = run_cli("index", "-k", rck, "--a-dir", pairs[0], "--b-dir", pairs[1], "-o", idx,
                             "--batch-size", "2", "--json", tmp_path / "s.json", *FAST)
    assert code == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["count"] == 5 and summary["indexed"] == 5 and summary["kind"] == "pairs"
    store = IndexStore.open(idx)
    assert store.embeddings().shape == (5, 16)
    assert np.allclose(np.linalg.norm(store.embeddings(), axis=1), 1.0, atol=1e-5)
    items = store.items()
    assert [it["name"] for it in items] == [f"p{i}" for i in range(5)]
    assert all(isinstance(it["caption"], str) and 0 <= it["change_fraction"] <= 1 for it in items)

    code, out, err = run_cli("search", idx, "a new building zzqx", "--top-k", "3", "--json", tmp_path / "h.json")
    assert code == 0, err
    res = json.loads((tmp_path / "h.json").read_text())
    assert res["query"] == "a new building zzqx" and res["unknown_words"] == ["zzqx"]
    assert "zzqx" in err  # unknown words are reported, not silently dropped
    assert [h["rank"] for h in res["results"]] == [1, 2, 3]
    for h in res["results"]:
        assert {"name", "score", "caption"} <= set(h)
    # scores are the cosine with the query's embedding, best first, identical to a brute-force ranking
    s = Searcher.from_index(idx)
    q = s.encoder.encode(["a new building zzqx"])[0]
    brute = store.embeddings() @ q
    assert [h["name"] for h in res["results"]] == [items[i]["name"] for i in np.argsort(-brute)[:3]]
    assert res["results"][0]["score"] == pytest.approx(float(brute.max()), abs=1e-5)

    # several indexes searched together (here the same pairs twice): merged by score
    idx2 = tmp_path / "idx2"
    assert run_cli("index", "-k", rck, "--a-dir", pairs[0], "--b-dir", pairs[1], "-o", idx2, *FAST)[0] == 0
    both = Searcher.from_index([idx, idx2]).search("a new building", k=4)["results"]
    assert [h["name"] for h in both[::2]] == [h["name"] for h in both[1::2]]
    assert {h["index"] for h in both} == {str(idx), str(idx2)}


def test_resume_after_a_kill(rck, pairs, tmp_path, monkeypatch):
    pred = Predictor.from_pretrained(rck, batch_size=2, max_len=6)
    fresh = ix.index_pairs(pred, *pairs, tmp_path / "fresh", progress=False)
    assert fresh["count"] == 5

    calls = {"n": 0}
    real = IndexStore.append

    def dying(self, emb, items):
        real(self, emb, items)
        calls["n"] += 1
        if calls["n"] == 2:
            # a kill after the rows of the 3rd batch hit the disk but before its items did
            with open(self.path / "embeddings.f32", "ab") as f:
                f.write(np.ones((1, 16), np.float32).tobytes())
            with open(self.path / "items.jsonl", "a") as f:
                f.write('{"name": "p4", "capt')
            raise KeyboardInterrupt

    monkeypatch.setattr(IndexStore, "append", dying)
    with pytest.raises(KeyboardInterrupt):
        ix.index_pairs(pred, *pairs, tmp_path / "killed", progress=False)
    monkeypatch.setattr(IndexStore, "append", real)
    with pytest.raises(ChangeAgentError, match="unfinished"):
        IndexStore.open(tmp_path / "killed")
    again = ix.index_pairs(pred, *pairs, tmp_path / "killed", progress=False)
    assert again["already_done"] == 4 and again["indexed"] == 1 and again["count"] == 5
    a, b = IndexStore.open(tmp_path / "fresh"), IndexStore.open(tmp_path / "killed")
    assert [i["name"] for i in a.items()] == [i["name"] for i in b.items()]
    np.testing.assert_allclose(np.asarray(a.embeddings()), np.asarray(b.embeddings()), atol=1e-5)
    # a finished index: running the command again embeds nothing
    assert ix.index_pairs(pred, *pairs, tmp_path / "killed", progress=False)["indexed"] == 0


def test_scene_index_geojson_and_ann(rck, tmp_path, run_cli):
    win = Window(60, 60, 192, 128)
    a = crop_tif(GEOTIFF / "RGB.byte.tif", tmp_path / "a.tif", win)
    b = crop_tif(GEOTIFF / "RGB.byte.tif", tmp_path / "b.tif", win, paint=(20, 60, 20, 80, (255, 255, 255)))
    idx = tmp_path / "scene_idx"
    code, out, err = run_cli("index", "-k", rck, "--scene", a, b, "-o", idx, "--tile", "64", "--overlap", "0",
                             "--ann", "hnsw", "--json", tmp_path / "s.json", *FAST)
    assert code == 0, err
    store = IndexStore.open(idx)
    assert store.header["crs"] == "EPSG:32618" and store.header["ann"]["type"] == "hnsw"
    items = store.items()
    # 2 x 3 windows of 64 px; the top-left one is all nodata (the scene's rotated border): not indexed
    assert [it["name"] for it in items] == ["a:r0_c64", "a:r0_c128", "a:r64_c0", "a:r64_c64", "a:r64_c128"]
    assert json.loads((tmp_path / "s.json").read_text())["windows_nodata"] == 1
    assert all(0 < it["valid_fraction"] <= 1 for it in items)
    ring = np.asarray(items[0]["footprint"])
    assert ring.shape == (5, 2) and np.allclose(ring[0], ring[-1])
    code, _, err = run_cli("search", idx, "a building", "-n", "10", "--json", tmp_path / "h.json",
                           "--geojson", tmp_path / "h.geojson")
    assert code == 0, err
    gj = json.loads((tmp_path / "h.geojson").read_text())
    assert gj["crs"]["properties"]["name"] == "EPSG:32618" and len(gj["features"]) == 5
    assert gj["features"][0]["geometry"]["coordinates"][0] == items[
        json.loads((tmp_path / "h.json").read_text())["results"][0]["index_row"]]["footprint"]
    # the HNSW index and the exact search agree on this tiny index
    approx = Searcher.from_index(idx).search("a building", 5)["results"]
    exact = Searcher.from_index(idx, exact=True).search("a building", 5)["results"]
    assert [h["name"] for h in approx] == [h["name"] for h in exact]


def test_bad_input(rck, pairs, tmp_path, run_cli):
    plain = save_tiny(tmp_path / "plain")  # no retrieval head
    code, _, err = run_cli("index", "-k", plain, "--a-dir", pairs[0], "--b-dir", pairs[1], "-o", tmp_path / "x", *FAST)
    assert code == 2 and "no retrieval head" in err
    code, _, err = run_cli("index", "-k", rck, "--a-dir", pairs[0], "-o", tmp_path / "x", *FAST)
    assert code == 2 and "--b-dir" in err
    code, _, err = run_cli("search", tmp_path, "a building")
    assert code == 2 and "not a search index" in err

    idx = tmp_path / "idx"
    assert run_cli("index", "-k", rck, "--a-dir", pairs[0], "--b-dir", pairs[1], "-o", idx, *FAST)[0] == 0
    for query, msg in (("   ", "empty query"), (" . ? ", "empty query"), ("zzqx qqzz", "none of its words")):
        code, _, err = run_cli("search", idx, query)
        assert code == 2 and msg in err, err
    code, _, err = run_cli("search", idx, "a building", "--top-k", "0")
    assert code == 2 and "top-k" in err
    code, _, err = run_cli("search", idx, "a building", "--geojson", tmp_path / "g.json")
    assert code == 2 and "footprint" in err

    # another model's index cannot be searched together with this one, nor resumed into
    other = save_tiny(tmp_path / "other", seed=1, **SMALL)
    idx_o = tmp_path / "idx_o"
    assert run_cli("index", "-k", other, "--a-dir", pairs[0], "--b-dir", pairs[1], "-o", idx_o, *FAST)[0] == 0
    code, _, err = run_cli("search", idx, idx_o, "a building")
    assert code == 2 and "different models" in err
    code, _, err = run_cli("index", "-k", other, "--a-dir", pairs[0], "--b-dir", pairs[1], "-o", idx, *FAST)
    assert code == 2 and "another model" in err

    # an all-nodata scene gives an empty index, which search refuses
    nod = GEOTIFF / "all-nodata.tif"
    code, _, err = run_cli("index", "-k", rck, "--scene", nod, nod, "-o", tmp_path / "empty", "--tile", "64",
                           "--bands", "1,2,3", *FAST)
    assert code == 0, err
    code, _, err = run_cli("search", tmp_path / "empty", "a building")
    assert code == 2 and "empty" in err
    # damaged: rows missing
    (idx / "embeddings.f32").write_bytes(b"")
    code, _, err = run_cli("search", idx, "a building")
    assert code == 2 and "damaged" in err


def test_index_uses_the_trained_head_and_refuses_an_untrained_one(tmp_path, pairs, run_cli):
    # a model trained on SECOND-CC only: the default head is its own, LEVIR's untrained head is refused
    ck = save_tiny(tmp_path / "second_only", datasets=["second_cc"], **SMALL)
    code, _, err = run_cli("index", "-k", ck, "--a-dir", pairs[0], "--b-dir", pairs[1], "-o", tmp_path / "bad",
                           "--head", "levir_mci", *FAST)
    assert code == 2 and "no heads for levir_mci" in err and not (tmp_path / "bad").exists()
    code, _, err = run_cli("index", "-k", ck, "--a-dir", pairs[0], "--b-dir", pairs[1], "-o", tmp_path / "ok",
                           "--json", tmp_path / "s.json", *FAST)
    assert code == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["count"] == 5


def test_search_embeds_queries_without_torch(rck, pairs, tmp_path, run_cli):
    """Start-up: the index carries its caption encoder as ONNX, `search` runs it on onnxruntime and
    never imports torch; its embeddings equal the model's own text encoder's."""
    import subprocess
    import sys

    import torch

    from changeagent.inference.index_store import TEXT_ONNX, TEXT_WEIGHTS
    from changeagent.models.retrieval import encode_texts

    idx = tmp_path / "idx"
    assert run_cli("index", "-k", rck, "--a-dir", pairs[0], "--b-dir", pairs[1], "-o", idx, *FAST)[0] == 0
    assert (idx / TEXT_ONNX).is_file()
    onnx = Searcher.from_index(idx).encoder
    model = Predictor.from_pretrained(rck).model.retrieval.text.eval()
    queries = ["a new building", "zzqx the road is built " * 6, "", "the scene is the same as before"]
    with torch.inference_mode():
        want = model(encode_texts(onnx.vocab, queries, onnx.max_len)).numpy()
    assert np.abs(onnx.encode(queries) - want).max() < 1e-5
    # an index written before the ONNX copy still searches (through torch), with the same embeddings
    (idx / TEXT_ONNX).rename(tmp_path / "kept.onnx")
    old = Searcher.from_index(idx).encoder
    assert old.encoder is not None and np.abs(old.encode(queries) - want).max() < 1e-5
    (tmp_path / "kept.onnx").rename(idx / TEXT_ONNX)
    assert (idx / TEXT_WEIGHTS).is_file()
    probe = ("import sys; from changeagent.cli import main; "
             f"code = main(['search', {str(idx)!r}, 'a new building', '-n', '2']); "
             "assert code == 0; print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False", r.stdout
