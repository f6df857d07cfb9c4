"""The Model Context Protocol server (`changeagent mcp`): the service's functions as typed MCP tools.

Built on the official Python SDK (`mcp` 2.x, `mcp.server.mcpserver.MCPServer`). Every tool takes plain
typed arguments (paths under the roots, a class name, query text) and returns structured content that
its published output schema (the `schemas.py` models) describes, plus a text copy for the model;
`detect_changes` also returns the overlay as an image content block. No tool runs code, reads outside
the roots or writes outside the output folder. Bad input comes back as a tool error (`is_error`) with
the service's message; anything unexpected as the SDK's generic tool error, never a traceback; the
server keeps serving. Transports: stdio (what desktop clients launch) and streamable HTTP.
"""

# no `from __future__ import annotations`: the SDK reads the tools' annotations at run time, and their
# Annotated aliases are local (their descriptions name this model's heads and classes)
import base64
import hmac
from collections.abc import Callable
from typing import Annotated, Any

import anyio
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import AnyHttpUrl, Field

from changeagent.app.schemas import CountResult, DescribeResult, DetectResult, SearchResult
from changeagent.app.service import ChangeService
from changeagent.errors import ChangeAgentError

INSTRUCTIONS = (
    "Remote-sensing change understanding on two images of the same place (date A before date B). "
    "Inputs are file paths under the server's allowed folders: {roots}. detect_changes writes the change "
    "mask and returns per-class areas and object counts; describe gives a caption; count counts objects of "
    "one class; search finds indexed pairs or scene windows by a description of the change."
)
# what a tool does to its environment (MCP tool annotations): detect_changes writes new files under the
# output folder (never overwriting any), the others only read (describe/count use a scratch folder)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
READS = ToolAnnotations(read_only_hint=True, open_world_hint=False)


class StaticToken:
    """The SDK's `TokenVerifier` for one shared access token (`--token`), compared in constant time."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self.token.encode()):
            return AccessToken(token=token, client_id="changeagent", scopes=[])
        return None


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a service function on a worker thread; its ChangeAgentError becomes the tool's error message."""
    try:
        return await anyio.to_thread.run_sync(lambda: fn(*args))
    except ChangeAgentError as e:
        raise ToolError(str(e)) from None


def _structured(res: Any, image: str | None = None) -> CallToolResult:
    content: list[Any] = [TextContent(type="text", text=res.model_dump_json(indent=1))]
    if image is not None:
        with open(image, "rb") as f:
            content.append(ImageContent(type="image", data=base64.b64encode(f.read()).decode(), mime_type="image/png"))
    return CallToolResult(content=content, structured_content=res.model_dump(mode="json"))


def build_server(svc: ChangeService, *, token: str | None = None, url: str | None = None) -> MCPServer:
    """An MCPServer offering the service's tools (`svc.tools()`); `token` (HTTP) requires that bearer token."""
    auth: dict[str, Any] = {}
    if token:
        if not url:
            raise ChangeAgentError("an access token needs the server's URL")
        auth = {"token_verifier": StaticToken(token),
                "auth": AuthSettings(issuer_url=AnyHttpUrl(url), resource_server_url=AnyHttpUrl(f"{url}/mcp"),
                                     validate_token_resource=False)}
    server = MCPServer("changeagent", instructions=INSTRUCTIONS.format(roots=svc.roots.describe()),
                       log_level="WARNING", **auth)
    heads = ", ".join(svc.heads)
    A = Annotated[str, Field(description="image of date A (before): a path under the allowed folders")]
    B = Annotated[str, Field(description="image of date B (after), same place and grid as A")]
    Head = Annotated[str | None, Field(description=f"dataset head that decodes the mask (default: the model's "
                                                   f"default); one of: {heads}")]

    async def detect_changes(a: A, b: B, head: Head = None) -> Annotated[CallToolResult, DetectResult]:
        """Detect the changes between two images: writes the class mask (PNG, or GeoTIFF for GeoTIFF
        inputs) under the output folder and returns per-class changed area and object counts, the
        caption and the overlay image (date B with changed classes tinted)."""
        res = await _call(svc.detect_changes, a, b, head)
        return _structured(res, res.overlay_path)

    async def describe(a: A, b: B) -> Annotated[CallToolResult, DescribeResult]:
        """Describe in one sentence what changed between two images."""
        return _structured(await _call(svc.describe, a, b))

    classes = ", ".join(svc.classes())

    async def count(a: A, b: B, cls: Annotated[str, Field(description=f"change class to count; one of: {classes}")],
                    head: Head = None) -> Annotated[CallToolResult, CountResult]:
        """Count the changed objects of one class (8-connected regions of at least min_area pixels)."""
        return _structured(await _call(svc.count, a, b, cls, head))

    names = ", ".join(svc.indexes) or "none"

    async def search(index: Annotated[str, Field(description=f"index to search; one of: {names}")],
                     text: Annotated[str, Field(description="a description of the change, e.g. 'new buildings "
                                                            "along the road'")],
                     k: Annotated[int, Field(ge=1, le=100, description="number of results")] = 10,
                     ) -> Annotated[CallToolResult, SearchResult]:
        """Find the indexed pairs or scene windows that best match a description of a change, best first
        (as `changeagent search --json`; scene windows carry their footprint in the raster CRS)."""
        return _structured(await _call(svc.search, index, text, k))

    from changeagent.app.schemas import AskResult

    async def ask(a: A, b: B, question: Annotated[str, Field(description="a question about the change, e.g. 'how "
                                                                         "many buildings were built?'")],
                  head: Head = None) -> Annotated[CallToolResult, AskResult]:
        """Answer a question about the change between two images: the learned answer (with its
        probability), the question type it was understood as, and the answer measured on the predicted
        maps with its evidence (class areas, object counts, positions). A question it cannot parse is an
        error that lists the types it answers."""
        return _structured(await _call(svc.ask, a, b, question, head))

    # tool -> (function, annotations); ask and ground join here with their heads (svc.offers decides)
    table: dict[str, tuple[Callable[..., Any], ToolAnnotations]] = {
        "detect_changes": (detect_changes, WRITES),
        "describe": (describe, READS),
        "count": (count, READS),
        "search": (search, READS),
        "ask": (ask, READS),
    }
    from changeagent.app.schemas import GroundResult  # here, not above: one block for the ground tool

    Expression = Annotated[str, Field(description="the change to segment, e.g. 'new buildings in the top left', "
                                                  "'vegetation that became ground', 'the largest new building'")]
    Route = Annotated[str, Field(description="auto (the grounding head), learned, or program (the expression "
                                             "parsed and cut from the model's class maps)")]

    async def ground(a: A, b: B, expression: Expression, route: Route = "auto",
                     head: Head = None) -> Annotated[CallToolResult, GroundResult]:
        """Segment the change a sentence describes: writes its binary mask (PNG, or GeoTIFF plus a GeoJSON of
        its polygons for GeoTIFF inputs) under the output folder and returns its area, connected regions
        with their pixel boxes, the route that answered, and the overlay image."""
        res = await _call(svc.ground, a, b, expression, route, head)
        return _structured(res, res.overlay_path)

    table["ground"] = (ground, WRITES)
    for name in svc.tools():
        if name in table:
            fn, notes = table[name]
            server.add_tool(fn, name=name, annotations=notes)
    return server


def serve(svc: ChangeService, transport: str, host: str = "127.0.0.1", port: int = 8765,
          token: str | None = None) -> None:
    """Run the server on stdio or streamable HTTP (blocks until stopped)."""
    if transport == "stdio":
        build_server(svc).run("stdio")
        return
    import uvicorn

    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    app = build_server(svc, token=token, url=url).streamable_http_app(host=host)
    uvicorn.run(app, host=host, port=port, log_level="warning")
