"""`make bench`: parameter counts and CPU timings of the model configs, side by side.

Each step is one `changeagent` command run in its own process (so peak RSS is per model) and writes
a JSON file into --out; the table and the ratios the model issue names are computed from those files.
To add a benchmark, append to the list `steps()` returns and, if it should be summarised, to `report()`.
`--vs REF_DIR` also times the reference MCI code from a local checkout of Change-Agent under the same
protocol (tools/bench_vs_reference.py): a `reference` row and the ratios ours / reference.
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


def _switches(args: argparse.Namespace) -> list[str]:
    """The optimisation switches every timed child gets (docs/models.md, "Inference speed")."""
    return [*(["--compile"] if args.compile else []), *(["model.channels_last=false"] if args.no_channels_last else [])]


def _tag(model: str) -> str:
    return Path(model).stem if model.endswith((".yaml", ".yml")) else model


def steps(args: argparse.Namespace, out: Path) -> list[tuple[str, list[str]]]:
    """(name, changeagent arguments) in execution order; step `name` writes `out/name.json`.

    One child process per configuration (model x {training, each inference batch}), so each
    JSON's peak RSS is that configuration's alone."""
    todo: list[tuple[str, list[str]]] = []
    for model in args.models:
        tag = _tag(model)
        todo.append((f"info_{tag}", ["model-info", f"model={model}", "--json", str(out / f"info_{tag}.json")]))
    common = ["--size", str(args.size), "--steps", str(args.steps), "--threads", str(args.threads),
              "--device", args.device, "--decode-len", str(args.decode_len)]
    for model in args.models:
        tag = _tag(model)
        if not args.skip_train:
            todo.append((f"train_{tag}", ["bench", f"model={model}", *_switches(args), "--batch", str(args.batch),
                                          "--infer-batches", "", *common, "--json", str(out / f"train_{tag}.json")]))
        for b in args.batches:
            todo.append((f"infer_{tag}_b{b}", ["bench", f"model={model}", *_switches(args), "--skip-train",
                                               "--infer-batches", str(b), *common,
                                               "--json", str(out / f"infer_{tag}_b{b}.json")]))
    return todo


def _vs_tool() -> Any:
    """tools/bench_vs_reference.py, the `--vs` half (imported when asked for: it imports changeagent)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_vs_reference

    return bench_vs_reference


def reference_steps(args: argparse.Namespace, out: Path) -> list[tuple[str, list[str]]]:
    """(name, argv) of the reference's children (`--vs`): its training step, its batch-1 inference."""
    if not args.vs:
        return []
    parts = ([] if args.skip_train else ["train"]) + ["infer"]
    return [(f"reference_{p}", _vs_tool().child_command(args, p, out / f"reference_{p}.json")) for p in parts]


def _ratio(ours: float | None, ref: float | None) -> float | None:
    return None if ours is None or not ref else round(ours / ref, 4)


def reference_row(args: argparse.Namespace, out: Path, models: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reference's row (as our models' rows: params, train, infer["1"]) and, per model of ours, the
    ratios ours / reference of training s/pair, batch-1 inference s/pair (every head of ours) and peak RSS."""
    train, infer = _load(out, "reference_train"), _load(out, "reference_infer")
    first = train or infer
    row: dict[str, Any] = {"params": first["params"] if first else None, "tasks": ["mask", "caption"],
                           "source": first["reference"] if first else str(args.vs),
                           "weights": first["weights"] if first else None, "train": None,
                           "infer": {"1": None}, "scene": None}
    if train:
        row["train"] = {"batch": train["batch"], "s_per_pair": train["train_s_per_pair"],
                        "peak_rss_mb": train["peak_rss_mb"]}
    if infer:
        row["infer"]["1"] = {"all_tasks_s_per_pair": infer["infer_s_per_pair_b1"], "tasks_s_per_pair": None,
                             "peak_rss_mb": infer["peak_rss_mb"], "tokens": infer["tokens"]}
    ratios: dict[str, Any] = {}
    rt, ri = row["train"] or {}, row["infer"]["1"] or {}
    for tag, ours in models.items():
        ot, oi = ours["train"] or {}, (ours["infer"].get("1") or {})
        ratios[tag] = {"train_s_per_pair": _ratio(ot.get("s_per_pair"), rt.get("s_per_pair")),
                       "train_peak_rss_mb": _ratio(ot.get("peak_rss_mb"), rt.get("peak_rss_mb")),
                       "infer_b1_s_per_pair": _ratio(oi.get("all_tasks_s_per_pair"), ri.get("all_tasks_s_per_pair")),
                       "infer_b1_peak_rss_mb": _ratio(oi.get("peak_rss_mb"), ri.get("peak_rss_mb"))}
    return row, ratios


def _load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def collect(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """bench.json: per model its parameters, training cost and, per inference batch, the cost per
    pair of every head together and of each task alone, with that configuration's peak RSS."""
    models: dict[str, Any] = {}
    for model in args.models:
        tag = _tag(model)
        info, train = _load(out, f"info_{tag}"), _load(out, f"train_{tag}")
        row: dict[str, Any] = {"params": info["params"] if info else None, "tasks": info["tasks"] if info else None,
                               "train": None, "infer": {}}
        if train:
            row["train"] = {"batch": train["batch"], "s_per_pair": train["train_s_per_pair"],
                            "peak_rss_mb": train["peak_rss_mb"]}
        for b in args.batches:
            r = _load(out, f"infer_{tag}_b{b}")
            row["infer"][str(b)] = None if r is None else {
                "all_tasks_s_per_pair": r[f"infer_s_per_pair_b{b}"], "tasks_s_per_pair": r.get(f"tasks_s_per_pair_b{b}"),
                "peak_rss_mb": r["peak_rss_mb"]}
        scene = _load(out / "inference" / tag, "inference_bench")
        row["scene"] = scene.get("scene") if scene else None
        models[tag] = row
    result = {"settings": {"size": args.size, "train_batch": args.batch, "threads": args.threads, "device": args.device,
                           "steps": args.steps, "decode_len": args.decode_len, "batches": args.batches,
                           "compile": args.compile, "channels_last": not args.no_channels_last,
                           "vs": str(args.vs) if args.vs else None},
              "models": models}
    if args.vs:
        result["reference"], result["ratios"] = reference_row(args, out, models)
    return result


def report(args: argparse.Namespace, result: dict[str, Any]) -> str:
    """One markdown table: a row per (model, configuration), a column per task (ms per pair)."""
    tasks: list[str] = []
    for row in result["models"].values():
        tasks += [t for t in row["tasks"] or [] if t not in tasks]
    head = ["model", "config", "params (M)", "all tasks ms/pair", *(f"{t} ms/pair" for t in tasks), "peak RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    rows = dict(result["models"])
    if result.get("reference"):
        rows["reference"] = result["reference"]
    for tag, row in rows.items():
        params = f"{row['params']['total'] / 1e6:.1f}" if row["params"] else "?"
        if row["train"]:
            t = row["train"]
            lines.append(f"| {tag} | train b{t['batch']} | {params} | {t['s_per_pair'] * 1e3:.1f} |"
                         + " |" * len(tasks) + f" {t['peak_rss_mb']:.0f} |")
        for b, r in row["infer"].items():
            if r is None:
                lines.append(f"| {tag} | predict b{b} | {params} | (failed) |" + " |" * (len(tasks) + 1))
                continue
            per = r["tasks_s_per_pair"] or {}
            cells = [f"{per[t] * 1e3:.1f}" if t in per else "-" for t in tasks]
            lines.append(f"| {tag} | predict b{b} | {params} | {r['all_tasks_s_per_pair'] * 1e3:.1f} |"
                         + "".join(f" {c} |" for c in cells) + f" {r['peak_rss_mb']:.0f} |")
        for sc in row["scene"] or []:
            lines.append(f"| {tag} | scene {sc['size']}x{sc['size']} | {params} | {sc['megapixels_per_s']} MP/s |"
                         + " |" * len(tasks) + f" {sc['peak_rss_gib'] * 1024:.0f} |")
    st = result["settings"]
    settings = (f"{st['size']}x{st['size']}, {st['threads']} threads, device {st['device']}, median of {st['steps']} "
                f"steps after warm-up, captions of {st['decode_len']} tokens; compile {st['compile']}, "
                f"channels-last {st['channels_last']}; a task's column: its head alone (own encoder pass)")
    if result.get("ratios"):
        lines += ["", f"ours / reference ({result['reference']['source']}, weights {result['reference']['weights']}; "
                      "inference: every head of ours against its masks + caption):", "",
                  "| model | train s/pair | train peak RSS | predict b1 s/pair | predict b1 peak RSS |",
                  "|---|---|---|---|---|"]
        for tag, r in result["ratios"].items():
            cells = [f"{r[k]:.2f}x" if r[k] is not None else "-" for k in
                     ("train_s_per_pair", "train_peak_rss_mb", "infer_b1_s_per_pair", "infer_b1_peak_rss_mb")]
            lines.append(f"| {tag} | " + " | ".join(cells) + " |")
    return "\n".join([settings, "", *lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench", help="folder for the JSON results and table.md")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated configs/model names")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="training batch")
    parser.add_argument("--batches", default="1,16", help="inference batch sizes, one child process each")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--decode-len", type=int, default=9, help="caption tokens generated (LEVIR-MCI median: 9)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile every part (switch for item 3)")
    parser.add_argument("--no-channels-last", action="store_true", help="model.channels_last=false")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--vs", metavar="REF_DIR", default=None,
                        help="also time the reference MCI code of a local Change-Agent checkout (never committed)")
    parser.add_argument("--vs-checkpoint", metavar="PTH", default=None,
                        help="its MCI_model.pth for --vs (default: random weights)")
    parser.add_argument("--skip-inference", action="store_true",
                        help="skip the folder/scene inference benchmark")
    parser.add_argument("--scene-sizes", default="2048", help="scene-mode GeoTIFF sizes, comma-separated")
    parser.add_argument("--skip-app", action="store_true",
                        help="skip the MCP server latency benchmark (tools/bench_app.py, a few minutes)")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    out = Path(args.out)
    if args.vs:  # a missing folder or one that is not the reference code: before anything runs
        vs = _vs_tool()
        try:
            args.vs = vs.find_reference(args.vs)
            if args.vs_checkpoint and not Path(args.vs_checkpoint).is_file():
                raise vs.ChangeAgentError(f"--vs-checkpoint {args.vs_checkpoint}: no such file")
        except vs.ChangeAgentError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    out.mkdir(parents=True, exist_ok=True)
    failed = []
    todo = [(n, [sys.executable, "-m", "changeagent", *c]) for n, c in steps(args, out)] + reference_steps(args, out)
    for name, cmd in todo:
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
        print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)
    if not args.skip_inference:
        for model in args.models:  # scene-mode MP/s + that child's peak RSS (changeagent.inference.bench)
            print(f"== scene: {model}", flush=True)
            code = "import sys; from changeagent.inference.bench import main; sys.exit(main(sys.argv[1:]))"
            cmd = [sys.executable, "-c", code, "--out", str(out / "inference" / _tag(model)), "--model", model,
                   "--skip-folder", "--scene-sizes", args.scene_sizes, "--max-len", str(args.decode_len),
                   "--threads", str(args.threads)]
            if subprocess.run(cmd).returncode != 0:
                failed.append(f"scene_{model}")
    if not args.skip_app:
        # p50/p95 latency of `changeagent mcp` alone and under 20 concurrent requests (tools/bench_app.py)
        print("== app: MCP server latency, sequential and 20 concurrent", flush=True)
        bench_app = Path(__file__).with_name("bench_app.py")
        if subprocess.run([sys.executable, str(bench_app), "--out", str(out / "app"),
                           "--threads", str(args.threads)]).returncode != 0:
            failed.append("app")
    result = collect(args, out)
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    table = report(args, result)
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
