"""`changeagent export --format onnx` and `predict --runtime onnx`: the graphs match eager PyTorch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from infer_helpers import TILES, save_tiny
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
# the module's one export (three torch.export traces + onnxruntime checks) takes ~40-100 s on 2 cores
pytestmark = pytest.mark.slow

from changeagent.errors import ChangeAgentError  # noqa: E402
from changeagent.inference.onnx_runtime import OnnxModel  # noqa: E402
from changeagent.models import load_model  # noqa: E402
from changeagent.models.retrieval import encode_texts  # noqa: E402

A = TILES / "LEVIR-CD/A/test_55_0256_0000.png"
B = TILES / "LEVIR-CD/B/test_55_0256_0000.png"
FAST = ("--max-len", "6", "--no-progress", "--no-vis")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny three-task model and its export (traced at 64 px; one export for the module: ~30 s)."""
    from changeagent.cli import main

    root = tmp_path_factory.mktemp("onnx")
    ck = save_tiny(root / "model", seed=3, tasks=["mask", "caption", "retrieval"])
    torch.set_num_threads(1)
    assert main(["export", "-k", str(ck), "--format", "onnx", "-o", str(root / "export"), "--size", "64"]) == 0
    return ck, root / "export"


def test_manifest_lists_graphs_norm_and_fingerprint(exported):
    ck, folder = exported
    m = json.loads((folder / "manifest.json").read_text())
    assert m["exported"] == ["caption_step", "pair", "text"] and m["not_exported"] == {}
    import hashlib

    assert m["weights_sha256"] == hashlib.sha256((ck / "model.safetensors").read_bytes()).hexdigest()
    config = json.loads((ck / "config.json").read_text())
    assert m["norm"] == config["norm"] and m["opset"] == 17
    pair = m["graphs"]["pair"]
    assert [i["name"] for i in pair["inputs"]] == ["image", "dataset"]
    assert pair["inputs"][0]["shape"] == ["batch", 2, 3, "height", "width"] and pair["dynamic_hw"]
    assert [o["name"] for o in pair["outputs"]] == ["change", "masks.levir_mci", "masks.second_cc", "pair_emb", "memory"]
    assert not [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_onnxruntime_matches_eager(exported):
    """Another batch size and H/W than the traced ones: masks, pair and text embeddings within 1e-4."""
    ck, folder = exported
    model = load_model(ck).eval()
    onnx = OnnxModel(folder)
    gen = torch.Generator().manual_seed(1)
    image = torch.randn(3, 2, 3, 96, 128, generator=gen)
    names = ["levir_mci", "second_cc", "levir_mci"]
    texts = encode_texts(model.vocab, ["a new building is built", "the scene is the same as before", "road"])
    opts = {"max_len": 5}
    with torch.no_grad():
        ref = model.predict(image, names, inputs={"texts": texts}, **opts)
    got = onnx.predict(image, names, inputs={"texts": texts}, **opts)
    assert got["change"].shape == ref["change"].shape == (3, 1, 96, 128)
    for key in ("change", "pair_emb", "text_emb"):
        assert torch.allclose(got[key], ref[key], atol=1e-4, rtol=0), key
    assert set(got["masks"]) == set(ref["masks"]) == {"levir_mci", "second_cc"}
    for d in ref["masks"]:
        assert torch.allclose(got["masks"][d], ref["masks"][d], atol=1e-4, rtol=0), d
    assert torch.equal(got["tokens"], ref["tokens"])  # greedy over the cache-less step = the cached one


def test_predict_runtime_onnx_equals_torch(exported, tmp_path, run_cli):
    ck, folder = exported
    code, _, err = run_cli("predict", "-k", ck, A, B, "-o", tmp_path / "torch", *FAST)
    assert code == 0, err
    code, _, err = run_cli("predict", "--runtime", "onnx", "--onnx", folder, A, B, "-o", tmp_path / "onnx", *FAST)
    assert code == 0, err
    stem = "test_55_0256_0000"
    rt, ro = (json.loads((tmp_path / d / f"{stem}.json").read_text()) for d in ("torch", "onnx"))
    mt, mo = (np.asarray(Image.open(tmp_path / d / f"{stem}_mask.png")) for d in ("torch", "onnx"))
    assert np.array_equal(mt, mo) and len(np.unique(mt)) > 1
    assert ro["caption"] == rt["caption"] and ro["changed_fraction"] == rt["changed_fraction"]


def test_missing_caption_and_bad_folders_are_clear_errors(exported, tmp_path, run_cli):
    _, folder = exported
    cut = tmp_path / "cut"
    shutil.copytree(folder, cut)
    m = json.loads((cut / "manifest.json").read_text())
    del m["graphs"]["caption_step"]
    m["not_exported"] = {"caption": "--no-caption given"}
    (cut / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ChangeAgentError, match=r"lacks task\(s\) \['caption'\].*--no-caption"):
        OnnxModel(cut)
    only = OnnxModel(cut, skip_missing=True)
    out = only.predict(torch.zeros(1, 2, 3, 64, 64), ["levir_mci"])
    assert "tokens" not in out and "change" in out
    code, _, err = run_cli("predict", "--runtime", "onnx", "--onnx", tmp_path, A, B, "-o", tmp_path / "o", *FAST)
    assert code == 2 and "no manifest.json" in err
    code, _, err = run_cli("predict", "--runtime", "onnx", A, B, "-o", tmp_path / "o", *FAST)
    assert code == 2 and "--onnx DIR" in err
