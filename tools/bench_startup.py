"""Start-up time of `changeagent search` and `changeagent predict`: where it goes, and how long.

    python tools/bench_startup.py --json runs/bench/startup.json              # this tree
    python tools/bench_startup.py --tree ../main --json main.json             # another checkout, same measurements

For each command it runs fresh processes (`--repeat` times, the median is kept) with the tree on
PYTHONPATH and reports wall and CPU seconds, plus a `python -X importtime` breakdown by top-level
package. `predict` start-up is the time until the model is ready to predict (imports + loading the
model folder), measured for random-weight `fast` and `mci` folders; the whole `predict` of one
256x256 pair is reported beside it. The models, pairs and index are generated in `--work` with the
tree being measured. Wall seconds need a quiet machine; on a shared one read the CPU seconds and
the import breakdown.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MAKE = """
import sys, torch
from pathlib import Path
from changeagent.config import load_model_config
from changeagent.data.vocab import Vocabulary
from changeagent.models import create_model, save_pretrained
torch.manual_seed(0)
vocab = Vocabulary.build([["a", "building", "road", "new", "is", "built", "the", "scene"]], min_count=0)
for name in sys.argv[1:]:
    model = create_model({**load_model_config(name), "datasets": ["levir_mci"]}, len(vocab))
    norm = {"levir_mci": {"mean": [0.39073, 0.38623, 0.32989], "std": [0.15329, 0.14628, 0.13648]}}
    save_pretrained(model, Path(sys.argv[0]).parent / name, vocab=vocab, datasets=["levir_mci"], norm=norm)
"""
READY = """
import time
t0, c0 = time.perf_counter(), time.process_time()
import changeagent
assert changeagent.__file__.startswith({tree!r}), changeagent.__file__  # the measured tree
from changeagent.inference.predictor import Predictor
import changeagent.inference.pairs, changeagent.models.hub  # everything predict imports (torch, smp, timm)
t1, c1 = time.perf_counter(), time.process_time()
Predictor.from_pretrained({ck!r}, device="cpu")
t2, c2 = time.perf_counter(), time.process_time()
print(t1 - t0, t2 - t1, c1 - c0, c2 - c1)
"""

def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, stdout) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=env["BENCH_CWD"])
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, r.stdout


def _median(cmd: list[str], env: dict[str, str], repeat: int) -> dict[str, float]:
    runs = [_timed(cmd, env) for _ in range(repeat)]
    return {"wall_s": round(statistics.median(r[0] for r in runs), 3),
            "cpu_s": round(statistics.median(r[1] for r in runs), 3)}


def import_breakdown(cmd: list[str], env: dict[str, str], top: int = 10) -> dict[str, float]:
    """Seconds of `-X importtime` self time per top-level package (the biggest `top`, and the total)."""
    r = subprocess.run([sys.executable, "-X", "importtime", *cmd], env=env, capture_output=True, text=True,
                       cwd=env["BENCH_CWD"])
    per: dict[str, int] = {}
    for line in r.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \| +(\S+)", line)
        if m:
            pkg = m.group(2).split(".")[0]
            per[pkg] = per.get(pkg, 0) + int(m.group(1))
    best = dict(sorted(per.items(), key=lambda kv: -kv[1])[:top])
    return {**{k: round(v / 1e6, 3) for k, v in best.items()}, "total": round(sum(per.values()) / 1e6, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", type=Path, default=ROOT, help="the checkout to measure (on PYTHONPATH)")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes per measurement (median)")
    ap.add_argument("--models", default="fast,mci", help="model configs whose predict start-up is measured")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    tree = args.tree.resolve()
    env = _env(tree)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_startup."))
    work.mkdir(parents=True, exist_ok=True)
    # `python -m` / `-c` put the working directory first on sys.path: run in `work`, so the tree on
    # PYTHONPATH is the one imported (not a checkout the command was started from)
    env["BENCH_CWD"] = str(work)
    py = sys.executable
    try:
        models = [m for m in args.models.split(",") if m]
        (work / "make.py").write_text(MAKE)
        subprocess.run([py, str(work / "make.py"), *models], env=env, check=True, cwd=work)
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(0)
        pairs = {}
        for d in ("A", "B"):  # start-up does not depend on the content: three 256x256 noise pairs
            (work / d).mkdir(exist_ok=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(work / d / f"p{i}.png")
            pairs[d] = work / d / "p0.png"
        ca = [py, "-m", "changeagent"]
        fast = work / models[0]
        _timed([*ca, "index", "-k", str(fast), "--a-dir", str(work / "A"), "--b-dir", str(work / "B"),
                "-o", str(work / "index"), "--no-progress", "--max-len", "8", "--device", "cpu"], env)
        search = [*ca, "search", str(work / "index"), "new buildings along the road", "--top-k", "3"]
        result: dict = {"tree": str(tree), "python": sys.version.split()[0], "cores": os.cpu_count(),
                        "load_average": os.getloadavg(), "repeat": args.repeat,
                        "search": {**_median(search, env, args.repeat),
                                   "imports_s": import_breakdown(search[1:], env)}}
        for name in models:
            ck = str(work / name)
            ready = [_timed([py, "-c", READY.format(ck=ck, tree=str(tree))], env) for _ in range(args.repeat)]
            parts = [[float(v) for v in r[2].split()] for r in ready]  # wall, wall, cpu, cpu
            predict = [*ca, "predict", "-k", ck, str(pairs["A"]), str(pairs["B"]), "-o", str(work / f"out_{name}"),
                       "--no-vis", "--max-len", "8", "--device", "cpu"]
            result[f"predict_{name}"] = {
                "ready_wall_s": round(statistics.median(r[0] for r in ready), 3),
                "ready_cpu_s": round(statistics.median(r[1] for r in ready), 3),
                "imports_s": round(statistics.median(p[0] for p in parts), 3),
                "model_load_s": round(statistics.median(p[1] for p in parts), 3),
                "imports_cpu_s": round(statistics.median(p[2] for p in parts), 3),
                "model_load_cpu_s": round(statistics.median(p[3] for p in parts), 3),
                "whole_command": _median(predict, env, args.repeat),
                "imports_breakdown_s": import_breakdown(["-c", READY.format(ck=ck, tree=str(tree))], env),
            }
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
