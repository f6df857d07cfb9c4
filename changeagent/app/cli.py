"""`changeagent serve` (the web app) and `changeagent mcp` (the MCP tool server): one service, two faces.

`--help` imports neither torch, gradio nor mcp: they are imported when the command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from changeagent.app.limits import Limits
from changeagent.errors import ChangeAgentError

TOKEN_ENV = "CHANGEAGENT_TOKEN"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, and the examples in the epilog kept on their own lines."""


def _common(parser: argparse.ArgumentParser, port: int) -> None:
    parser.formatter_class = _Formatter
    parser.add_argument("--checkpoint", "-k", required=True,
                        help="model folder (a run's best/), a run folder, or a last.pt; loaded once")
    parser.add_argument("--index", action="append", default=[], metavar="INDEX",
                        help="search index folder built by `changeagent index` (repeat for more)")
    parser.add_argument("--out", "-o", default=None,
                        help="output folder; each request writes into a new sub-folder (None: a new temp folder)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=port, help="port to listen on")
    parser.add_argument("--allow-remote", action="store_true",
                        help=f"allow a --host other than loopback; then an access token is required "
                             f"({TOKEN_ENV} or --token-file)")
    parser.add_argument("--token-file", help=f"file holding the access token (else the {TOKEN_ENV} environment "
                                             "variable); with a token every client must present it")
    g = parser.add_argument_group("model options (as `changeagent predict`)")
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    g.add_argument("--threads", type=int, default=None, help="CPU threads for torch (None: torch's choice)")
    g.add_argument("--tile", type=int, default=None, help="window size, a multiple of 32 (None: 256)")
    g.add_argument("--overlap", type=int, default=32, help="window overlap in pixels")
    g.add_argument("--batch-size", type=int, default=8, help="windows per model call")
    g.add_argument("--max-len", type=int, default=41, help="longest caption in tokens")
    g.add_argument("--min-area", type=int, default=16, help="smallest object counted, in pixels")
    g.add_argument("--bands", help="1-based bands to use, e.g. 3,2,1")
    g.add_argument("--scale", default="auto", help="auto, percentile[:LO,HI], divide:N")
    lim = parser.add_argument_group("limits (docs/app.md, 'Limits')")
    d = Limits()
    for f in dataclasses.fields(Limits):
        flag = "--" + {"timeout_s": "timeout", "queue_timeout_s": "queue-timeout"}.get(f.name, f.name).replace("_", "-")
        lim.add_argument(flag, dest=f"limit_{f.name}", type=type(getattr(d, f.name)), default=getattr(d, f.name),
                         metavar="N", help=f.metadata["help"])


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser, 7860)
    parser.epilog = ("changeagent serve -k runs/x/best --root data/scenes --index index/scene1\n"
                     "then open http://127.0.0.1:7860 in a browser")
    parser.add_argument("--root", action="append", default=[], metavar="DIR",
                        help="folder whose images (and GeoTIFF scenes) may be chosen by path (repeat for more)")


def add_mcp_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser, 8765)
    parser.epilog = ("stdio (a desktop LLM client launches it):\n"
                     "  changeagent mcp -k runs/x/best --root data/\n"
                     "HTTP:  changeagent mcp -k runs/x/best --root data/ --transport http --port 8765\n"
                     "       (clients connect to http://127.0.0.1:8765/mcp)")
    parser.add_argument("--root", action="append", required=True, metavar="DIR",
                        help="folder the tools may read images from (repeat for more); nothing else is read")
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio",
                        help="stdio, or streamable HTTP on --host:--port at /mcp")


def limits_of(args: argparse.Namespace) -> Limits:
    from changeagent.typed import convert

    raw = {f.name: getattr(args, f"limit_{f.name}") for f in dataclasses.fields(Limits)}
    return convert(Limits, raw, "limits")


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as e:
            raise ChangeAgentError(f"--token-file {args.token_file}: {e}") from None
        if not token:
            raise ChangeAgentError(f"--token-file {args.token_file} is empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def check_host(host: str, allow_remote: bool, token: str | None) -> None:
    """Loopback by default; any other address needs --allow-remote and an access token."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return
    if not allow_remote:
        raise ChangeAgentError(f"--host {host} would accept connections from other machines; pass --allow-remote "
                               f"(and an access token) to do that")
    if not token:
        raise ChangeAgentError(f"--host {host} needs an access token: set {TOKEN_ENV} or give --token-file")


def build_service(args: argparse.Namespace, roots: list[str], progress: bool = False) -> Any:
    from changeagent.app.service import ChangeService
    from changeagent.inference.raster import parse_bands

    if args.threads is not None:
        if args.threads < 1:
            raise ChangeAgentError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    out = args.out or tempfile.mkdtemp(prefix="changeagent-app-")
    svc = ChangeService.from_checkpoint(
        args.checkpoint, roots=roots, out=out, indexes=args.index, limits=limits_of(args), device=args.device,
        tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, max_len=args.max_len,
        min_area=args.min_area, scale=args.scale, bands=parse_bands(args.bands))
    svc.progress = progress
    print(f"changeagent: model {args.checkpoint} (tools: {', '.join(svc.tools())}); outputs under {svc.out.path}",
          file=sys.stderr)
    return svc


def run_serve(args: argparse.Namespace) -> int:
    token = _token(args)
    check_host(args.host, args.allow_remote, token)
    limits_of(args)  # bad limits are reported before the model loads
    svc = build_service(args, args.root, progress=True)
    from changeagent.app.web import launch

    launch(svc, host=args.host, port=args.port, token=token)
    return 0


def run_mcp(args: argparse.Namespace) -> int:
    token = _token(args)
    if args.transport == "http":
        check_host(args.host, args.allow_remote, token)
    limits_of(args)
    svc = build_service(args, args.root)
    from changeagent.app.mcp_server import serve

    serve(svc, args.transport, host=args.host, port=args.port, token=token if args.transport == "http" else None)
    return 0
