"""`make real-tiles`: real imagery as the referee. Train from scratch on some real source images, test on
held-out ones, under a fixed CPU budget, for `fast` and the smp baseline, and report change F1/IoU/P/R.

The tiles are the read-only LEVIR-CD, WHU-CD and DSIFN-CD samples in shared/data/real_tiles (see its
README). The protocol (docs/training.md, "Real-tile protocol"):

1. Every image is cut into non-overlapping `--crop` windows (256: the papers' crop size). A crop's
   *parent* is the source image it was cut from: a LEVIR-CD-1024 image, a LEVIR-CD 256 tile's
   `<split>_<id>` (tiles whose 1024 parent is present are dropped: they are windows of it), a WHU-CD
   tile, a DSIFN-CD tile's `<image>` of `<image>_<crop>`.
2. Splits are by parent (`HELD_OUT`): no crop of a test or validation parent is trained on, and no
   two splits hold identical pixels (`check_leakage`, run every time).
3. `changeagent train -c configs/real_tiles.yaml model=M train.max_minutes=MIN` on the train split
   (validation once at the end, on its own parents: nothing is selected on the test split), then
   `changeagent eval --split test` on all held-out crops (pooled, one confusion matrix over every
   pixel, SPEC §1.5) and on each source's held-out crops.
4. `OUT/real_tiles.json` and `OUT/real_tiles.md`: P/R/F1/IoU/OA per model, pooled and per source,
   the share of pixels predicted as change next to the labelled share, and `all_change` when the
   model marks (nearly) everything as changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "real_tiles.yaml"
MODELS = ("fast", "smp_unet")
# folder of shared/data/real_tiles -> the source's short name; LEVIR-CD-1024 first so its crops win
SOURCES = (("LEVIR-CD-1024", "levir"), ("LEVIR-CD", "levir"), ("WHU-CD", "whu"), ("DSIFN-CD", "dsifn"))
# held-out parents: one 1024-px LEVIR-CD and one WHU-CD image (16 crops of 256 each), two LEVIR-CD and
# two DSIFN-CD source images; validation: one LEVIR-CD and one DSIFN-CD source image. All else trains.
HELD_OUT = {
    "test": ("levir_test_7", "levir_test_77", "levir_val_27", "whu_000241", "dsifn_8", "dsifn_9"),
    "val": ("levir_test_55", "dsifn_7"),
}
SPLITS = ("train", "val", "test")
ALL_CHANGE = 0.98  # predicted change share of the labelled-negative pixels above which a model "marks everything"


@dataclass
class Crop:
    source: str                     # levir | whu | dsifn
    parent: str                     # e.g. levir_test_7
    name: str                       # file name in the split folder
    arrays: dict[str, np.ndarray]   # A, B uint8 [c, c, 3]; label uint8 [c, c] 0/255


def find_tiles(path: str | None) -> Path:
    """The real_tiles folder: `path`, else shared/ beside the repository, else /work/shared."""
    cands = [Path(path)] if path else [REPO.parent / "shared" / "data" / "real_tiles",
                                       Path("/work/shared/data/real_tiles")]
    for c in cands:
        if (c / "LEVIR-CD").is_dir():
            return c
    raise SystemExit(f"error: no real_tiles folder (with LEVIR-CD/) at {' or '.join(map(str, cands))}; "
                     "pass --tiles")


def parent_of(folder: str, stem: str) -> str:
    """The source image a file of `folder` was cut from, as `<source>_<id>`."""
    source = dict(SOURCES)[folder]
    if folder == "LEVIR-CD":  # <split>_<id>_<row>_<col>: a window of the 1024-px <split>_<id>
        return f"{source}_{'_'.join(stem.split('_')[:2])}"
    if folder == "DSIFN-CD":  # <image>_<c>: ChangeFormer's DSIFN-CD-256 cuts each 512-px image into a 2x2 grid, c = 1..4
        return f"{source}_{stem.split('_')[0]}"
    return f"{source}_{stem}"  # a whole source image (LEVIR-CD-1024, WHU-CD)


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L") if path.parent.name == "label" else im.convert("RGB"))


def cut_crops(tiles: Path, crop: int) -> list[Crop]:
    """Every non-overlapping `crop` window of every image, with its parent; no duplicate windows."""
    out: list[Crop] = []
    whole = set()  # parents present as whole images: their 256-px tiles are windows of them
    for folder, source in SOURCES:
        base = tiles / folder
        if not (base / "A").is_dir():
            continue
        for a in sorted((base / "A").glob("*.png")):
            parent = parent_of(folder, a.stem)
            if folder == "LEVIR-CD-1024":
                whole.add(parent)
            elif parent in whole:
                continue
            arrays = {k: _read(base / k / a.name) for k in ("A", "B", "label")}
            h, w = arrays["label"].shape
            if any(v.shape[:2] != (h, w) for v in arrays.values()):
                raise SystemExit(f"error: {base}/*/{a.name}: A, B and label differ in size")
            for r in range(0, h - crop + 1, crop):
                for c in range(0, w - crop + 1, crop):
                    cut = {k: np.ascontiguousarray(v[r : r + crop, c : c + crop]) for k, v in arrays.items()}
                    out.append(Crop(source, parent, f"{source}_{a.stem}_{r:04d}_{c:04d}.png", cut))
    return out


def split_of(parent: str) -> str:
    return next((s for s, ps in HELD_OUT.items() if parent in ps), "train")


def _pick(items: list[Crop], n: int | None) -> list[Crop]:
    if n is None or len(items) <= n:
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def _write_folder(root: Path, crops: dict[str, list[Crop]]) -> None:
    """Crop layout (A/ B/ label/ list/<split>.txt) of `crops` {split: [Crop]}."""
    for split, items in crops.items():
        for item in items:
            for k, v in item.arrays.items():
                (root / k).mkdir(parents=True, exist_ok=True)
                Image.fromarray(v).save(root / k / item.name, compress_level=1)  # lossless; fast to write
        (root / "list").mkdir(parents=True, exist_ok=True)
        (root / "list" / f"{split}.txt").write_text("".join(f"{i.name}\n" for i in items), encoding="utf-8")


def build_split(tiles: Path, out: Path, crop: int = 256, limit: int | None = None) -> dict[str, Any]:
    """Write `out/all` (train / val / test of every source) and `out/<source>` (its test crops only).

    `limit` keeps at most that many crops per split, evenly spread (tests). Returns what `split.json` holds.
    """
    if out.exists():
        shutil.rmtree(out)
    crops = cut_crops(tiles, crop)
    by_split = {s: _pick([c for c in crops if split_of(c.parent) == s], limit) for s in SPLITS}
    missing = sorted(set(HELD_OUT["test"]) - {c.parent for c in crops})
    if missing:
        raise SystemExit(f"error: held-out parents {missing} are not in {tiles}")
    _write_folder(out / "all", by_split)
    sources = sorted({c.source for c in by_split["test"]})
    for source in sources:
        _write_folder(out / source, {"test": [c for c in by_split["test"] if c.source == source]})
    info = {
        "tiles": str(tiles), "crop": crop, "limit": limit,
        "parents": {s: sorted({c.parent for c in by_split[s]}) for s in SPLITS},
        "crops": {s: [c.name for c in by_split[s]] for s in SPLITS},
        "parent_of": {c.name: c.parent for s in SPLITS for c in by_split[s]},
        "label_change_share": {s: _share(by_split[s]) for s in SPLITS},
        "test_sources": {src: {"crops": sum(c.source == src for c in by_split["test"]),
                               "label_change_share": _share([c for c in by_split["test"] if c.source == src])}
                         for src in sources},
    }
    (out / "split.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    problems = check_leakage(out / "all", info["parent_of"])
    if problems:
        raise SystemExit("error: the real-tile split leaks:\n  " + "\n  ".join(problems))
    return info


def _share(items: list[Crop]) -> float | None:
    if not items:
        return None
    return float(np.mean([float((c.arrays["label"] > 0).mean()) for c in items]))


def check_leakage(root: Path, parent_of_crop: dict[str, str]) -> list[str]:
    """Problems of a crop-layout split folder: a parent in two splits, or identical pixels in two splits."""
    problems: list[str] = []
    seen_parent: dict[str, str] = {}
    seen_pixels: dict[str, tuple[str, str]] = {}
    for split in SPLITS:
        lst = root / "list" / f"{split}.txt"
        if not lst.is_file():
            continue
        for name in lst.read_text(encoding="utf-8").split():
            parent = parent_of_crop.get(name)
            if parent is None:
                problems.append(f"{split}/{name}: no parent recorded")
                continue
            if seen_parent.setdefault(parent, split) != split:
                problems.append(f"parent {parent} is in {seen_parent[parent]} and {split} ({name})")
            digest = hashlib.sha256(np.asarray(Image.open(root / "A" / name)).tobytes()
                                    + np.asarray(Image.open(root / "B" / name)).tobytes()).hexdigest()
            other = seen_pixels.setdefault(digest, (split, name))
            if other[0] != split:
                problems.append(f"{split}/{name} has the same pixels as {other[0]}/{other[1]}")
    return problems


def _changeagent(argv: list[str]) -> int:
    """One changeagent command in this process (torch is imported once for all of them)."""
    from changeagent.cli import main as ca_main

    print(f"== changeagent {' '.join(argv)}", flush=True)
    return ca_main(argv)


def _scores(path: Path, key: str = "levir_cd") -> dict[str, Any] | None:
    if not path.is_file():
        return None
    m = json.loads(path.read_text())[key]
    return {k: m.get(k) for k in ("precision", "recall", "f1", "iou", "oa", "n_pairs")}


def predicted_share(scores: dict[str, Any], label_share: float | None) -> float | None:
    """Share of pixels predicted as change: TP / precision over all pixels = recall * positives / precision."""
    p, r = scores.get("precision"), scores.get("recall")
    if label_share is None or p is None or r is None:
        return None
    if p == 0:
        return None if r == 0 else 1.0
    return r * label_share / p


def all_change(scores: dict[str, Any], label_share: float | None) -> bool:
    """True when the model marks (nearly) every pixel as changed: the trivial all-change answer."""
    share = predicted_share(scores, label_share)
    if share is None or label_share is None or label_share >= 1:
        return False
    false_pos = (share - (scores["recall"] or 0) * label_share) / (1 - label_share)
    return (scores["recall"] or 0) > 0.99 and false_pos > ALL_CHANGE


def run_model(model: str, args: argparse.Namespace, data: Path, info: dict[str, Any]) -> dict[str, Any]:
    out = Path(args.out) / model
    window = min(args.window, args.crop) if args.window else None
    common = [f"model={model}", f"run.seed={args.seed}", *([f"run.threads={args.threads}"] if args.threads else []),
              f"data.augment.crop={window if window else 'null'}", *args.set]
    t0 = time.monotonic()
    rc = _changeagent(["train", "-c", str(CONFIG), f"data.levir_cd.root={data / 'all'}", f"run.out_dir={out}",
                       f"train.max_minutes={args.minutes}", *common, "--json", str(out / "train.json")])
    result: dict[str, Any] = {"model": model, "train_rc": rc, "train_minutes": (time.monotonic() - t0) / 60}
    if rc != 0:
        return result
    train = json.loads((out / "train.json").read_text())
    result.update(steps=train["step"], stop_reason=train["stop_reason"])
    evals = {"pooled": (data / "all", info["label_change_share"]["test"])}
    evals.update({src: (data / src, v["label_change_share"]) for src, v in info["test_sources"].items()})
    for key, (root, share) in evals.items():
        dest = out / f"test_{key}"
        rc = _changeagent(["eval", "-c", str(CONFIG), "--checkpoint", str(out / "best"), "--split", "test",
                           f"data.levir_cd.root={root}", *common, "--out", str(dest)])
        scores = _scores(dest / "metrics.json") if rc == 0 else None
        if scores is not None:
            scores["predicted_change_share"] = predicted_share(scores, share)
            scores["label_change_share"] = share
            scores["all_change"] = all_change(scores, share)
        result[key] = scores
    return result


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}" if isinstance(v, float) else str(v)


def report(results: dict[str, Any]) -> str:
    """Markdown table: one row per model and test set (percent)."""
    p = results["protocol"]
    lines = [f"real-tile protocol: train from scratch {p['minutes']} min ({p['threads'] or 'all'} threads), "
             f"{p['crop']}-px crops (training windows {p['window'] or p['crop']} px); train / val / test crops {p['crops']['train']} / {p['crops']['val']} / "
             f"{p['crops']['test']} from {p['parents']['train']} / {p['parents']['val']} / {p['parents']['test']} "
             "source images (split by parent image)", "",
             "| model | test set | steps | F1 | IoU | P | R | OA | predicted / labelled change % | all-change |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model, r in results["models"].items():
        for key in ("pooled", *sorted(k for k in r if k in results["protocol"]["test_sources"])):
            s = r.get(key)
            if s is None:
                lines.append(f"| {model} | {key} | {r.get('steps', '-')} | (failed) |" + " |" * 6)
                continue
            lines.append(f"| {model} | {key} | {r.get('steps', '-')} | {_fmt(s['f1'])} | {_fmt(s['iou'])} | "
                         f"{_fmt(s['precision'])} | {_fmt(s['recall'])} | {_fmt(s['oa'])} | "
                         f"{_fmt(s['predicted_change_share'])} / {_fmt(s['label_change_share'])} | "
                         f"{'YES' if s['all_change'] else 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/real_tiles", help="folder for data, runs, real_tiles.json/.md")
    parser.add_argument("--tiles", default=None, help="shared/data/real_tiles (default: found beside the repo)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated configs/model names")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per model (wall minutes)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--crop", type=int, default=256, help="crop size (a multiple of 32)")
    parser.add_argument("--window", type=int, default=128,
                        help="training window: a random crop of each training crop (0: whole crops); evaluation "
                             "always sees whole crops")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="at most N crops per split (quick checks)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra config override for train and eval of every model (repeatable)")
    args = parser.parse_args(argv)
    if args.crop % 32 or args.crop < 32:
        parser.error("--crop must be a positive multiple of 32")
    if args.window % 32 or args.window < 0:
        parser.error("--window must be 0 or a positive multiple of 32")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    info = build_split(find_tiles(args.tiles), data, args.crop, args.limit)
    models = [m for m in args.models.split(",") if m]
    results: dict[str, Any] = {
        "protocol": {"minutes": args.minutes, "threads": args.threads, "crop": args.crop,
                     "window": min(args.window, args.crop) if args.window else None, "seed": args.seed,
                     "limit": args.limit, "config": str(CONFIG.relative_to(REPO)), "overrides": args.set,
                     "crops": {s: len(v) for s, v in info["crops"].items()},
                     "parents": {s: len(v) for s, v in info["parents"].items()}, "held_out": info["parents"],
                     "test_sources": info["test_sources"]},
        "models": {},
    }
    for model in models:
        results["models"][model] = run_model(model, args, data, info)
    table = report(results)
    (out / "real_tiles.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "real_tiles.md").write_text(table + "\n", encoding="utf-8")
    print("\n" + table)
    failed = [m for m, r in results["models"].items() if r.get("train_rc") != 0 or r.get("pooled") is None]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
