"""`make bench` (through tools/bench.py) or alone: latency of the MCP server, one request at a time and
under 20 concurrent requests, on real 256x256 LEVIR-CD pairs.

Starts `changeagent mcp --transport http` (the `fast` model with untrained weights unless --checkpoint,
so captions run to --max-len tokens) in a child process and calls `detect_changes` through the SDK's
client: `--requests` calls one after another (p50/p95 latency), then `--concurrent` clients at once
(p50/p95 of the answered ones, how many were answered "busy", the server's peak RSS). The numbers go
to `<out>/app_bench.json`. Not run by the tests; time it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np


def _pcts(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_s": None, "p95_s": None, "n": 0}
    return {"p50_s": round(float(np.percentile(values, 50)), 4), "p95_s": round(float(np.percentile(values, 95)), 4),
            "n": len(values)}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _measure(url: str, names: list[str], requests: int, concurrent: int) -> dict[str, Any]:
    from mcp import Client

    async def call(n: str) -> tuple[float, bool]:
        t0 = time.perf_counter()
        async with Client(url) as c:
            r = await c.call_tool("detect_changes", {"a": f"A/{n}", "b": f"B/{n}"})
        return time.perf_counter() - t0, bool(r.is_error)

    await call(names[0])  # warm-up
    single = [(await call(names[i % len(names)]))[0] for i in range(requests)]
    results: list[tuple[float, bool]] = []

    async def one(i: int) -> None:
        results.append(await call(names[i % len(names)]))

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(concurrent):
            tg.start_soon(one, i)
    wall = time.perf_counter() - t0
    ok = [t for t, err in results if not err]
    return {"single": _pcts(single), "load": {**_pcts(ok), "busy": sum(err for _, err in results),
                                             "requests": concurrent, "wall_s": round(wall, 3)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/app", help="folder for app_bench.json")
    parser.add_argument("--checkpoint", help="model folder (default: the untrained `fast` model)")
    parser.add_argument("--requests", type=int, default=20, help="sequential requests")
    parser.add_argument("--concurrent", type=int, default=20, help="simultaneous requests")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-len", type=int, default=41)
    args = parser.parse_args(argv)
    from changeagent.inference.bench import make_model, make_tiles

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ckpt = Path(args.checkpoint) if args.checkpoint else make_model(work / "model")
        make_tiles(work / "tiles", 8)
        names = sorted(p.name for p in (work / "tiles" / "A").iterdir())
        port = _port()
        cmd = [sys.executable, "-m", "changeagent", "mcp", "-k", str(ckpt), "--root", str(work / "tiles"),
               "--out", str(work / "out"), "--transport", "http", "--port", str(port),
               "--threads", str(args.threads), "--max-len", str(args.max_len)]
        server = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        try:
            for _ in range(600):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if server.poll() is not None:
                    raise SystemExit(f"the server exited with {server.returncode}")
                time.sleep(0.5)
            res = anyio.run(_measure, f"http://127.0.0.1:{port}/mcp", names, args.requests, args.concurrent)
            res.update(peak_rss_mb=round(_peak_mb(server.pid), 1), threads=args.threads, max_len=args.max_len,
                       pair="256x256 LEVIR-CD", model=str(args.checkpoint or "fast (untrained)"))
        finally:
            server.terminate()
            server.wait(timeout=30)
    (out / "app_bench.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
