"""`make bench`: parameter counts and CPU timings of the model configs, side by side.

Each step is one `changeagent` command run in its own process (so peak RSS is per model) and writes
a JSON file into --out; the table and the ratios the model issue names are computed from those files.
To add a benchmark, append to the list `steps()` returns and, if it should be summarised, to `report()`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MODELS = ("fast", "mci", "mamba")


def steps(args: argparse.Namespace, out: Path) -> list[tuple[str, list[str]]]:
    """(name, changeagent arguments) in execution order; step `name` writes `out/name.json`."""
    todo: list[tuple[str, list[str]]] = []
    for model in args.models:
        todo.append((f"info_{model}", ["model-info", f"model={model}", "--json", str(out / f"info_{model}.json")]))
    for model in args.models:
        todo.append((f"bench_{model}", [
            "bench", f"model={model}", "--batch", str(args.batch), "--size", str(args.size),
            "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device,
            "--json", str(out / f"bench_{model}.json"),
        ]))
    return todo


def _load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def report(args: argparse.Namespace, out: Path) -> str:
    """Markdown table of every model plus the target ratios (fast vs mci)."""
    lines = ["| model | params (M) | encoder | neck | mask dec. | caption dec. | train s/pair | "
             "infer s/pair b1 | infer s/pair b16 | peak RSS MB |", "|---" * 10 + "|"]
    rows: dict[str, dict[str, Any]] = {}
    for model in args.models:
        info, bench = _load(out, f"info_{model}"), _load(out, f"bench_{model}")
        if info is None or bench is None:
            lines.append(f"| {model} | (failed) |" + " |" * 8)
            continue
        rows[model] = {**bench, "params": info["params"]}
        p = {k: v / 1e6 for k, v in info["params"].items()}
        lines.append(
            f"| {model} | {p['total']:.1f} | {p['encoder']:.1f} | {p['neck']:.1f} | {p['mask_decoder']:.2f} | "
            f"{p['caption_decoder']:.2f} | {bench['train_s_per_pair']:.3f} | {bench['infer_s_per_pair_b1']:.3f} | "
            f"{bench['infer_s_per_pair_b16']:.3f} | {bench['peak_rss_mb']:.0f} |"
        )
    if "fast" in rows and "mci" in rows:
        f, m = rows["fast"], rows["mci"]
        ratios = [
            ("train speed per pair, fast vs mci", m["train_s_per_pair"] / f["train_s_per_pair"], ">= 5x"),
            ("parameters, mci / fast", m["params"]["total"] / f["params"]["total"], ">= 5x"),
            ("inference per pair, fast b16 vs mci b1", m["infer_s_per_pair_b1"] / f["infer_s_per_pair_b16"], ">= 20x"),
        ]
        targets = {">= 5x": 5.0, ">= 20x": 20.0}
        lines += ["", "| ratio | measured | target |", "|---|---|---|"]
        lines += [f"| {name} | {value:.1f}x | {t} {'(met)' if value >= targets[t] else '(NOT met)'} |"
                  for name, value, t in ratios]
    settings = (f"{args.size}x{args.size}, training batch {args.batch}, {args.threads} threads, "
                f"device {args.device}, median of {args.steps} steps after warm-up")
    return "\n".join([settings, "", *lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench", help="folder for the JSON results and table.md")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated configs/model names")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-inference", action="store_true",
                        help="skip the folder/scene inference benchmark (15-30 min on 2 CPU cores)")
    parser.add_argument("--scene-sizes", default="8192", help="scene-mode GeoTIFF sizes, comma-separated")
    parser.add_argument("--skip-app", action="store_true",
                        help="skip the MCP server latency benchmark (tools/bench_app.py, a few minutes)")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name, cmd in steps(args, out):
        print(f"== {name}: changeagent {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        if subprocess.run([sys.executable, "-m", "changeagent", *cmd]).returncode != 0:
            failed.append(name)
        print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    if not args.skip_inference:
        # folder-mode pairs/s and scene-mode MP/s + peak RSS (changeagent.inference.bench)
        print("== inference: folder mode (batch 16) and scene mode", flush=True)
        code = ("import sys; from changeagent.inference.bench import main; "
                "sys.exit(main(sys.argv[1:]))")
        cmd = [sys.executable, "-c", code, "--out", str(out / "inference"), "--scene-sizes", args.scene_sizes]
        if subprocess.run(cmd).returncode != 0:
            failed.append("inference")
    if not args.skip_app:
        # p50/p95 latency of `changeagent mcp` alone and under 20 concurrent requests (tools/bench_app.py)
        print("== app: MCP server latency, sequential and 20 concurrent", flush=True)
        bench_app = Path(__file__).with_name("bench_app.py")
        if subprocess.run([sys.executable, str(bench_app), "--out", str(out / "app"),
                           "--threads", str(args.threads)]).returncode != 0:
            failed.append("app")
    table = report(args, out)
    inf = out / "inference" / "inference_bench.json"
    if inf.is_file():
        table += "\n\ninference benchmark (inference_bench.json):\n" + inf.read_text()
    app = out / "app" / "app_bench.json"
    if app.is_file():
        table += "\n\nMCP server latency (app_bench.json):\n" + app.read_text()
    (out / "table.md").write_text(table + "\n")
    print("\n" + table)
    if failed:
        print(f"failed steps: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
