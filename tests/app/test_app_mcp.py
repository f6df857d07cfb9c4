"""The MCP server through the SDK's own client: in memory, over stdio (a subprocess) and over streamable
HTTP on 127.0.0.1 (a subprocess), including 20 concurrent requests against one server."""

from __future__ import annotations

import base64
import io
import json
import os
import sys
from pathlib import Path

import anyio
import httpx2
import pytest
from app_helpers import OPTIONS, PAIRS, REPO, SMALL_MP, cli_env, free_port, rss_mb, start, stop
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from PIL import Image

from changeagent.app.limits import Limits
from changeagent.app.mcp_server import build_server
from changeagent.app.service import ChangeService

GOLDEN = Path(__file__).with_name("mcp_tools.json")  # the tools' schemas, pinned (UPDATE_GOLDEN=1 rewrites)
PAIR = {"a": "A/p03.png", "b": "B/p03.png"}


@pytest.fixture(scope="module")
def svc(app_ckpt, root, index, tmp_path_factory) -> ChangeService:
    return ChangeService.from_checkpoint(app_ckpt, roots=[root], out=tmp_path_factory.mktemp("mcp_out"),
                                         indexes=[index], limits=Limits(max_megapixels=SMALL_MP), **OPTIONS)


def described(tools) -> list[dict]:
    return [{"name": t.name, "annotations": t.annotations.model_dump(mode="json", exclude_none=True),
             "input_schema": t.input_schema, "output_schema": t.output_schema} for t in tools.tools]


def roots_free(text: str, root: Path) -> str:
    return text.replace(str(root), "<root>")


async def check_session(c: Client, root: Path, trap, expected: dict | None = None) -> dict:
    """What every transport must do: tools as pinned, each tool answers, refusals, errors, and it keeps serving."""
    tools = described(await c.list_tools())
    names = [t["name"] for t in tools]
    assert names[:3] == ["detect_changes", "describe", "count"]
    golden = json.loads(GOLDEN.read_text())
    assert tools == [g for g in golden if g["name"] in names]

    r = await c.call_tool("detect_changes", PAIR)
    assert not r.is_error, r.content
    s = r.structured_content
    assert Path(s["mask_path"]).is_file() and s["mode"] == "pair" and [x["name"] for x in s["classes"]] == ["road", "building"]
    assert json.loads(r.content[0].text) == s  # the text copy is the same result
    img = next(b for b in r.content if b.type == "image")
    assert img.mime_type == "image/png"
    assert Image.open(io.BytesIO(base64.b64decode(img.data))).size == (64, 64)
    if expected is not None:
        assert s["classes"] == expected["classes"] and s["caption"] == expected["caption"]

    r = await c.call_tool("describe", PAIR)
    assert not r.is_error and r.structured_content == {"caption": s["caption"]}
    r = await c.call_tool("count", {**PAIR, "cls": "building"})
    assert not r.is_error and r.structured_content["count"] == s["classes"][1]["objects"]

    # refused without being read: the trap outside the root (absolute, by '..', via a symlink in the root)
    for a in (str(trap.path), "../outside/secret.png", "link.png"):
        r = await c.call_tool("detect_changes", {"a": a, "b": "B/p03.png"})
        assert r.is_error and ("outside the allowed folders" in r.content[0].text or "'..'" in r.content[0].text)
    await anyio.sleep(0.3)
    assert not trap.opened.is_set(), "the server opened a file outside its root"

    # a corrupt image, an oversized one and bad arguments: errors, and the server keeps working
    r = await c.call_tool("detect_changes", {"a": "bad.png", "b": "B/p00.png"})
    assert r.is_error and "cannot read" in r.content[0].text and "Traceback" not in r.content[0].text
    r = await c.call_tool("detect_changes", {"a": "big/A.png", "b": "big/B.png"})
    assert r.is_error and "megapixels" in r.content[0].text
    r = await c.call_tool("count", PAIR)  # `cls` missing: refused by the input schema
    assert r.is_error
    r = await c.call_tool("describe", PAIR)
    assert not r.is_error and r.structured_content["caption"] == s["caption"]
    return s


def test_in_memory(svc, root, trap):
    async def main() -> None:
        async with Client(build_server(svc), raise_exceptions=True) as c:
            if os.environ.get("UPDATE_GOLDEN"):
                GOLDEN.write_text(json.dumps(described(await c.list_tools()), indent=1) + "\n")
            s = await check_session(c, root, trap)
            r = await c.call_tool("search", {"index": "crops", "text": "a new building", "k": 3})
            assert not r.is_error
            hits = r.structured_content["results"]
            assert [h["rank"] for h in hits] == [1, 2, 3]
            assert hits == svc.search("crops", "a new building", 3).model_dump(mode="json")["results"]
            r = await c.call_tool("search", {"index": "crops", "text": "x", "k": 0})
            assert r.is_error  # k out of the schema's range
            assert s["head"] == "levir_mci"

    anyio.run(main)


def test_tools_without_index(svc, tmp_path):
    bare = ChangeService(svc._model, roots=svc.roots.roots, out=tmp_path, norm=svc._norm, datasets=svc._datasets)

    async def main() -> None:
        async with Client(build_server(bare)) as c:
            assert [t.name for t in (await c.list_tools()).tools] == ["detect_changes", "describe", "count"]

    anyio.run(main)


def test_stdio_subprocess(svc, app_ckpt, root, trap, tmp_path):
    expected = svc.detect_changes(PAIR["a"], PAIR["b"]).model_dump(mode="json")
    params = StdioServerParameters(
        command=sys.executable, cwd=str(REPO), env=cli_env(),
        args=["-m", "changeagent", "mcp", "-k", str(app_ckpt), "--root", str(root), "--out", str(tmp_path / "out"),
              "--max-len", "6", "--threads", "1", "--max-megapixels", str(SMALL_MP)])

    async def main() -> None:
        with open(tmp_path / "stderr.txt", "w") as err:
            from mcp.client.stdio import stdio_client

            async with Client(stdio_client(params, errlog=err)) as c:
                s = await check_session(c, root, trap, expected)
                assert s["mask_path"].startswith(str(tmp_path / "out"))

    anyio.run(main)


@pytest.fixture(scope="module")
def http_server(app_ckpt, root, index, tmp_path_factory):
    """`changeagent mcp --transport http` with an access token, queue 4 (the load test overflows it)."""
    tmp = tmp_path_factory.mktemp("mcp_http")
    port = free_port()
    env = {**cli_env(), "CHANGEAGENT_TOKEN": "s3cret-token"}
    proc = start(["mcp", "-k", str(app_ckpt), "--root", str(root), "--index", str(index), "--out", str(tmp / "out"),
                  "--transport", "http", "--port", str(port), "--max-len", "6", "--threads", "1",
                  "--max-megapixels", str(SMALL_MP), "--queue", "4"], port, tmp / "log.txt", env)
    yield f"http://127.0.0.1:{port}/mcp", proc
    stop(proc)


def client(url: str, token: str | None = "s3cret-token") -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers, timeout=120)))


def test_http(http_server, svc, root, trap):
    url, _ = http_server
    expected = svc.detect_changes(PAIR["a"], PAIR["b"]).model_dump(mode="json")

    async def main() -> None:
        for bad in (None, "wrong"):
            with pytest.raises(Exception):  # noqa: B017 - 401 from the transport, whatever the SDK wraps it in
                async with client(url, bad) as c:
                    await c.list_tools()
        async with client(url) as c:
            await check_session(c, root, trap, expected)
            r = await c.call_tool("search", {"index": "crops", "text": "a new building", "k": 2})
            assert [h["name"] for h in r.structured_content["results"]] == \
                [h.name for h in svc.search("crops", "a new building", 2).results]

    anyio.run(main)


def test_twenty_concurrent_requests(http_server, svc):
    """20 users at once, each with its own pair: every answer is its own pair's result or a clear 'busy';
    none lost or mixed up; the server's memory stays bounded."""
    url, proc = http_server
    names = [f"p{i:02d}.png" for i in range(PAIRS)]
    expected = {n: svc.detect_changes(f"A/{n}", f"B/{n}").model_dump(mode="json") for n in names}
    assert len({json.dumps(e["classes"]) for e in expected.values()}) > PAIRS // 2  # inputs really differ
    answers: dict[str, tuple[bool, dict | str]] = {}

    async def one(n: str) -> None:
        async with client(url) as c:
            r = await c.call_tool("detect_changes", {"a": f"A/{n}", "b": f"B/{n}"})
            answers[n] = (r.is_error, r.content[0].text if r.is_error else r.structured_content)

    async def main() -> None:
        async with client(url) as c:  # warm up: the first request loads lazily imported code
            await c.call_tool("describe", {"a": "A/p00.png", "b": "B/p00.png"})
        rss0, _ = rss_mb(proc.pid)
        async with anyio.create_task_group() as tg:
            for n in names:
                tg.start_soon(one, n)
        _, peak = rss_mb(proc.pid)
        assert peak - rss0 < 400, f"peak RSS grew {peak - rss0:.0f} MiB under load"

    anyio.run(main)
    assert sorted(answers) == names  # every request answered
    done = 0
    for n, (err, got) in answers.items():
        if err:
            assert "busy" in got, got
            continue
        done += 1
        assert got["classes"] == expected[n]["classes"] and got["caption"] == expected[n]["caption"], n
        assert Path(got["mask_path"]).is_file()
    assert done >= 1
    print(f"load: {done} answered with results, {len(names) - done} busy")
