"""The `ground` tool: offered only with the grounding head, through the service and the MCP in-memory client."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import numpy as np
import pytest
import rasterio
from app_helpers import OPTIONS
from infer_helpers import save_tiny
from mcp import Client
from PIL import Image

from changeagent.app.mcp_server import build_server
from changeagent.app.service import ChangeService
from changeagent.errors import ChangeAgentError
from changeagent.inference import Predictor

GROUNDING = {"tasks": ["mask", "caption", "grounding"], "grounding": {"channels": 8, "text_dim": 16, "heads": 2}}
PAIR = {"a": "A/p03.png", "b": "B/p03.png"}


@pytest.fixture(scope="module")
def gsvc(root, tmp_path_factory) -> ChangeService:
    ck = save_tiny(tmp_path_factory.mktemp("ground_ckpt"), encoder="tu-mobilenetv3_small_050", **GROUNDING)
    return ChangeService.from_checkpoint(ck, roots=[root], out=tmp_path_factory.mktemp("ground_out"), **OPTIONS)


def test_ground_offered_only_with_the_head(gsvc, app_ckpt, root, tmp_path):
    assert "ground" in gsvc.tools()
    plain = ChangeService.from_checkpoint(app_ckpt, roots=[root], out=tmp_path / "o", **OPTIONS)
    assert "ground" not in plain.tools() and plain.tools()[:3] == ["detect_changes", "describe", "count"]


def test_ground_over_mcp_in_memory(gsvc, root):
    async def main() -> None:
        async with Client(build_server(gsvc), raise_exceptions=True) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert "ground" in tools and tools["ground"].annotations.read_only_hint is False
            assert set(tools["ground"].input_schema["required"]) == {"a", "b", "expression"}

            r = await c.call_tool("ground", {**PAIR, "expression": "changed buildings in the left side"})
            assert not r.is_error, r.content
            s = r.structured_content
            assert s["route"] == "learned" and {"mask_path", "area", "components", "boxes"} <= set(s)
            assert gsvc.out.contains(Path(s["mask_path"]))
            mask = np.asarray(Image.open(s["mask_path"])) == 1
            assert s["area"]["pixels"] == int(mask.sum()) and s["components"] == len(s["boxes"])
            # the same answer as the Python API on the same files
            pred = Predictor.from_pretrained(gsvc.source, **OPTIONS)
            g = pred.ground(root / PAIR["a"], root / PAIR["b"], "changed buildings in the left side")
            assert np.array_equal(mask, g.mask)
            assert any(b.type == "image" for b in r.content)

            r = await c.call_tool("ground", {**PAIR, "expression": "changed roads", "route": "program"})
            assert not r.is_error and r.structured_content["route"] == "program"

            r = await c.call_tool("ground", {"a": "geo/a.tif", "b": "geo/b.tif", "expression": "changed buildings",
                                             "route": "program"})
            assert not r.is_error, r.content
            s = r.structured_content
            with rasterio.open(root / "geo/a.tif") as src, rasterio.open(s["mask_path"]) as m:
                assert m.crs == src.crs and m.transform == src.transform
            assert json.loads(Path(s["geojson_path"]).read_text())["type"] == "FeatureCollection"

            for args, needle in (({"expression": "new swimming pools"}, "swimming"),
                                 ({"expression": " "}, "empty"),
                                 ({"expression": "new buildings", "route": "magic"}, "route")):
                r = await c.call_tool("ground", {**PAIR, **args})
                assert r.is_error and needle in r.content[0].text, args
            r = await c.call_tool("ground", {"a": "../x.png", "b": "B/p03.png", "expression": "new buildings"})
            assert r.is_error

    anyio.run(main)


def test_service_ground_failure_leaves_no_request_folder(gsvc):
    before = sorted(p.name for p in gsvc.out.path.iterdir())
    with pytest.raises(ChangeAgentError, match="unknown word"):
        gsvc.ground(PAIR["a"], PAIR["b"], "new pools")
    assert sorted(p.name for p in gsvc.out.path.iterdir()) == before
