"""`ask` in the app: offered only for a model with the qa head, called through the MCP SDK's in-memory
client (the learned answer, the question type and the measured answer with its evidence, as
`Predictor.ask` gives them), bad questions answered with errors while the server keeps serving, and
the web app's Ask tab."""

from __future__ import annotations

import json

import anyio
import pytest
from app_helpers import OPTIONS
from infer_helpers import save_tiny
from mcp import Client

from changeagent.app.mcp_server import build_server
from changeagent.app.service import ChangeService
from changeagent.data.qa.answers import TYPE_ANSWERS
from changeagent.errors import ChangeAgentError

QA = {"dim": 16, "text_layers": 1, "fusion_layers": 1, "heads": 2}
PAIR = {"a": "A/p03.png", "b": "B/p03.png"}
COUNT_Q = "how many buildings were built?"


@pytest.fixture(scope="module")
def qa_svc(root, tmp_path_factory) -> ChangeService:
    ckpt = save_tiny(tmp_path_factory.mktemp("qa_ckpt"), encoder="tu-mobilenetv3_small_050",
                     tasks=["mask", "caption", "qa"], qa=QA)
    return ChangeService.from_checkpoint(ckpt, roots=[root], out=tmp_path_factory.mktemp("qa_out"), **OPTIONS)


def test_ask_through_the_mcp_client(qa_svc, root):
    from changeagent.inference.predictor import Predictor

    direct = Predictor.from_pretrained(qa_svc.source, **OPTIONS).ask(str(root / PAIR["a"]), str(root / PAIR["b"]),
                                                                     COUNT_Q)

    async def main() -> None:
        async with Client(build_server(qa_svc)) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert list(tools) == ["detect_changes", "describe", "count", "ask"]
            t = tools["ask"]
            assert t.annotations.read_only_hint is True
            assert t.input_schema["required"] == ["a", "b", "question"]
            assert {"answer", "type", "measured", "probability"} <= set(t.output_schema["properties"])

            r = await c.call_tool("ask", {**PAIR, "question": COUNT_Q})
            assert not r.is_error, r.content
            s = r.structured_content
            assert json.loads(r.content[0].text) == s
            assert s["type"] == "change_count" and s["head"] == "levir_mci" and s["question"] == COUNT_Q
            assert s["answer"] in TYPE_ANSWERS["change_count"] and 0 < s["probability"] <= 1
            # the same answers as Predictor.ask on the pair; the measured count is the rules' on the maps
            assert (s["answer"], s["type"], s["measured"]) == (direct["answer"], direct["type"], direct["measured"])
            ev = s["measured"]["evidence"]
            assert s["measured"]["answer"] in TYPE_ANSWERS["change_count"] and ev["objects"] == len(ev["object_areas"])

            # bad questions and inputs: errors that say why, and the server keeps serving
            r = await c.call_tool("ask", {**PAIR, "question": "what is the weather like?"})
            text = r.content[0].text
            assert r.is_error and "cannot tell what the question" in text and "change_count" in text
            assert "Traceback" not in text
            r = await c.call_tool("ask", {**PAIR, "question": "   "})
            assert r.is_error and "empty question" in r.content[0].text
            r = await c.call_tool("ask", {**PAIR, "question": "how many zebras were built?"})
            assert r.is_error and "zebras" in r.content[0].text
            r = await c.call_tool("ask", {"a": "../outside/secret.png", "b": "B/p03.png", "question": COUNT_Q})
            assert r.is_error and "'..'" in r.content[0].text
            r = await c.call_tool("ask", {"a": "bad.png", "b": "B/p00.png", "question": COUNT_Q})
            assert r.is_error and "cannot read" in r.content[0].text
            r = await c.call_tool("ask", {**PAIR, "question": "was a road built?"})
            assert not r.is_error and r.structured_content["type"] == "change_or_not"
            assert r.structured_content["answer"] in ("yes", "no")

    anyio.run(main)


def test_ask_refuses_a_scene_too_big_for_a_pair(qa_svc, monkeypatch):
    import changeagent.inference.raster as raster

    monkeypatch.setattr(raster, "MAX_PAIR_PIXELS", 32 * 32)
    with pytest.raises(ChangeAgentError, match="--scene A B --window"):
        qa_svc.ask(PAIR["a"], PAIR["b"], COUNT_Q)


def test_the_web_app_has_an_ask_tab_only_with_the_qa_head(qa_svc, svc_no_qa):
    from changeagent.app.web import build_app

    def ids(svc: ChangeService) -> set[str]:
        return {c.get("props", {}).get("elem_id") for c in build_app(svc).config["components"]}

    assert "ask_question" in ids(qa_svc)
    assert "ask_question" not in ids(svc_no_qa) and "ask" not in svc_no_qa.tools()


@pytest.fixture(scope="module")
def svc_no_qa(app_ckpt, root, tmp_path_factory) -> ChangeService:
    return ChangeService.from_checkpoint(app_ckpt, roots=[root], out=tmp_path_factory.mktemp("noqa_out"), **OPTIONS)
