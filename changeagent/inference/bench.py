"""Inference benchmark (`make bench` calls `main`): folder-mode pairs/s and scene-mode MP/s + peak RSS.

- folder: N real 256x256 LEVIR-CD tiles (cycled, renamed) through `changeagent predict --a-dir` in a
  child process, the `fast` model, batch 16; pairs/s as the command reports it (reading, model, all outputs).
- scene: a generated S x S 3-band uint8 GeoTIFF pair (tiled, DEFLATE, written window by window)
  through `changeagent predict --scene` in a child process; MP/s and the child's peak RSS.
The model has untrained weights, so every caption runs to `--max-len` tokens: a trained model, whose
captions end after ~8-11 tokens, decodes faster. Results go to `<out>/inference_bench.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from changeagent.fileio import atomic_path, write_json_atomic
from changeagent.models.decode_cfg import DECODE

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def make_model(out: Path, name: str = "fast") -> Path:
    """Model config `name` (configs/model/ or a yaml path) with untrained weights and the real LEVIR-MCI
    vocabulary when present."""
    from changeagent.config import load_model_config
    from changeagent.data.registry import get_spec
    from changeagent.data.vocab import Vocabulary
    from changeagent.models import create_model, save_pretrained

    ref = SHARED / "levir_mci_captions" / "vocab.json"
    vocab = Vocabulary.load(ref) if ref.is_file() else Vocabulary.build(
        [["a", "building", "road", "is", "built", "the", "scene", "same", "as", "before"]], min_count=0)
    model = create_model(load_model_config(name), len(vocab))
    # an untrained stand-in for a model trained on its heads' datasets, recorded as such (predict needs it)
    save_pretrained(model, out, vocab=vocab, datasets=model.datasets,
                    norm={n: get_spec(n).norm for n in model.datasets})
    return out


def make_tiles(folder: Path, n: int) -> None:
    tiles = sorted((SHARED / "real_tiles" / "LEVIR-CD" / "A").glob("*.png"))
    if not tiles:
        raise SystemExit(f"no LEVIR-CD tiles under {SHARED}/real_tiles")
    for d in ("A", "B"):
        (folder / d).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            src = tiles[i % len(tiles)]
            shutil.copy(src.parent.parent / d / src.name, folder / d / f"p{i:05d}.png")


def make_scene(path_a: Path, path_b: Path, size: int, seed: int = 0) -> None:
    """A textured 3-band uint8 scene and a copy with painted rectangles, 512 rows at a time."""
    rng = np.random.default_rng(seed)
    prof = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32618",
                transform=rasterio.transform.from_origin(400000, 4200000, 0.5, 0.5), tiled=True,
                blockxsize=512, blockysize=512, compress="deflate", BIGTIFF="IF_SAFER")
    x = np.arange(size, dtype=np.float32)
    base = (np.sin(x / 37.0)[None, :] * 40).astype(np.float32)
    with rasterio.open(path_a, "w", **prof) as da, rasterio.open(path_b, "w", **prof) as db:
        for r in range(0, size, 512):
            h = min(512, size - r)
            y = np.arange(r, r + h, dtype=np.float32)[:, None]
            field = 110 + base + np.cos(y / 53.0) * 40 + rng.normal(0, 12, (h, size))
            img = np.clip(np.stack([field, field * 0.95 + 10, field * 0.8]), 0, 255).astype(np.uint8)
            da.write(img, window=Window(0, r, size, h))
            for _ in range(max(1, size // 256)):  # "new buildings"
                rr, cc = rng.integers(0, h - 20), rng.integers(0, size - 40)
                img[:, rr : rr + rng.integers(8, 20), cc : cc + rng.integers(10, 40)] = np.array([200, 80, 60], np.uint8)[:, None, None]
            db.write(img, window=Window(0, r, size, h))


def bench_folder(ckpt: Path, work: Path, pairs: int, batch: int, extra: Sequence[str]) -> dict[str, Any]:
    make_tiles(work / "tiles", pairs)
    out = work / "folder_out"
    shutil.rmtree(out, ignore_errors=True)
    result = work / "folder.json"
    # the command in a child process, as the scene benchmark runs it: this layer never imports the
    # command line; pairs/s is the command's own figure, so the child's start-up is not in it
    cmd = [sys.executable, "-m", "changeagent", "predict", "-k", str(ckpt), "--a-dir", str(work / "tiles/A"),
           "--b-dir", str(work / "tiles/B"), "-o", str(out), "--batch-size", str(batch), "--json", str(result),
           *extra]
    code = subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode
    if code:
        raise SystemExit(f"folder benchmark failed (exit {code})")
    r = json.loads(result.read_text())
    return {"pairs": r["pairs"], "batch_size": batch, "elapsed_s": r["elapsed_s"], "pairs_per_s": r["pairs_per_s"]}


def bench_scene(ckpt: Path, work: Path, size: int, batch: int, extra: Sequence[str]) -> dict[str, Any]:
    a, b = work / f"scene{size}_a.tif", work / f"scene{size}_b.tif"
    t0 = time.perf_counter()
    if not (a.is_file() and b.is_file()):  # generated under temp names: a killed run leaves no half scene
        with atomic_path(a) as ta, atomic_path(b) as tb:
            make_scene(ta, tb, size)
    t_gen = time.perf_counter() - t0
    result = work / f"scene{size}.json"
    cmd = [sys.executable, "-m", "changeagent", "predict", "-k", str(ckpt), "--scene", str(a), str(b),
           "-o", str(work / f"scene{size}_out"), "--batch-size", str(batch), "--json", str(result), *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (peak RSS in KiB on Linux)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"scene benchmark failed (exit {proc.returncode})")
    peak = usage.ru_maxrss * 1024
    r = json.loads(result.read_text())
    return {"size": size, "megapixels": size * size / 1e6, "windows": r["windows"],
            "predict_s": r["timings"]["total_s"], "megapixels_per_s": r["megapixels_per_s"],
            "process_wall_s": round(wall, 2), "generate_s": round(t_gen, 2),
            "peak_rss_gib": round(peak / 2**30, 3), "timings": r["timings"]}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="inference-bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench", help="work folder (model, data, results)")
    ap.add_argument("--pairs", type=int, default=128, help="tile pairs in the folder benchmark")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--scene-sizes", default="8192",
                    help="comma-separated scene sizes; several show that peak RSS does not grow with size")
    ap.add_argument("--max-len", type=int, default=DECODE.max_len, help="caption length cap passed to predict")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--model", default="fast", help="model config (configs/model/NAME or a yaml path)")
    ap.add_argument("--skip-folder", action="store_true")
    ap.add_argument("--skip-scene", action="store_true")
    args = ap.parse_args(argv)
    work = Path(args.out) / "inference"
    work.mkdir(parents=True, exist_ok=True)
    ckpt = make_model(work / "model", args.model)
    extra = ["--max-len", str(args.max_len), "--no-progress"]
    if args.threads:
        extra += ["--threads", str(args.threads)]
    import torch

    res: dict[str, Any] = {"model": f"{args.model} (untrained weights)", "max_len": args.max_len,
                           "torch_threads": args.threads or torch.get_num_threads()}
    if not args.skip_folder:
        res["folder"] = bench_folder(ckpt, work, args.pairs, args.batch_size, extra)
        f = res["folder"]
        print(f"folder mode: {f['pairs']} pairs of 256x256, batch {f['batch_size']}: {f['pairs_per_s']} pairs/s")
    if not args.skip_scene:
        res["scene"] = []
        for size in (int(s) for s in args.scene_sizes.split(",")):
            s = bench_scene(ckpt, work, size, args.batch_size, extra)
            res["scene"].append(s)
            print(f"scene mode: {size}x{size} ({s['megapixels']:.1f} MP, {s['windows']} windows): "
                  f"{s['megapixels_per_s']} MP/s, peak RSS {s['peak_rss_gib']} GiB")
    write_json_atomic(Path(args.out) / "inference_bench.json", res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
