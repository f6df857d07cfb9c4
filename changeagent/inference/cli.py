"""`changeagent predict` (pair, folder and scene mode), `changeagent index` and `changeagent search`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from changeagent.errors import ChangeAgentError


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown, and the examples in the epilog kept on their own lines."""


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _Formatter
    parser.epilog = (
        "pair:   changeagent predict --checkpoint CK A.png B.png -o OUT/\n"
        "folder: changeagent predict --checkpoint CK --a-dir A/ --b-dir B/ -o OUT/\n"
        "scene:  changeagent predict --checkpoint CK --scene A.tif B.tif -o OUT/"
    )
    parser.add_argument("a", nargs="?", help="image of date A (pair or scene mode)")
    parser.add_argument("b", nargs="?", help="image of date B (pair or scene mode)")
    parser.add_argument("--checkpoint", "-k", default=None,
                        help="model folder (a run's best/), a run folder, or a last.pt (not with --runtime onnx)")
    parser.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                        help="torch: the model folder in PyTorch; onnx: an export folder (--onnx) in onnxruntime")
    parser.add_argument("--onnx", metavar="DIR", help="with --runtime onnx: a folder written by `changeagent export`")
    parser.add_argument("--onnx-skip-missing", action="store_true",
                        help="with --runtime onnx: run the exported tasks when the export lacks some of the model's")
    parser.add_argument("--out", "-o", required=True, help="output folder")
    parser.add_argument("--a-dir", help="folder mode: images of date A")
    parser.add_argument("--b-dir", help="folder mode: images of date B (same file names)")
    parser.add_argument("--scene", action="store_true",
                        help="scene mode: windowed GeoTIFF in and out, bounded memory, per-window captions")
    from changeagent.data.registry import dataset_ids  # cheap: ids only, no dataset code imported

    parser.add_argument("--head", choices=dataset_ids(), default=None,
                        help="dataset whose head decodes the masks (and whose caption token is used); "
                             "must be one the model was trained on. Default: its first trained dataset "
                             "with change masks")
    parser.add_argument("--tile", type=int, default=None,
                        help="window size, a multiple of 32 (None: 256)")
    parser.add_argument("--overlap", type=int, default=32, help="window overlap in pixels (blended logits)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows / pairs per model call")
    from changeagent.models.decode_cfg import DECODE  # no torch: the defaults shown by --help

    parser.add_argument("--method", choices=("greedy", "beam"), default=DECODE.method, help="caption decoding")
    parser.add_argument("--beam-size", type=int, default=DECODE.beam_size)
    parser.add_argument("--max-len", type=int, default=DECODE.max_len, help="longest caption in tokens")
    parser.add_argument("--length-penalty", type=float, default=DECODE.length_penalty)
    parser.add_argument("--min-area", type=int, default=16, help="smallest object counted, in pixels")
    parser.add_argument("--bands", help="1-based bands to use, e.g. 3,2,1 (needed when the band count differs)")
    parser.add_argument("--scale", default="auto",
                        help="auto (uint8 /255, else percentile), percentile[:LO,HI], divide:N")
    parser.add_argument("--mean", help="normalisation mean per band, comma-separated fractions of 255 (default: "
                                       "the statistics the model folder records for the --head dataset)")
    parser.add_argument("--std", help="normalisation std per band, with --mean")
    parser.add_argument("--align", action="store_true",
                        help="warp B onto A's grid (GeoTIFF) / resize B to A's size (plain images)")
    parser.add_argument("--device", default="auto", help="auto (a local GPU if any, else the CPU), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (None: torch's choice)")
    parser.add_argument("--overwrite", action="store_true",
                        help="folder mode: redo every pair instead of resuming (needed when the model or a "
                             "result-changing option differs from the run that wrote OUT/)")
    parser.add_argument("--name", help="scene mode: output name (None: stem of A)")
    parser.add_argument("--no-vis", action="store_true", help="skip the visualisation PNG")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", metavar="OUT", help="also write the machine-readable result here")


def _mode(args: argparse.Namespace) -> str:
    pair = args.a is not None or args.b is not None
    folder = args.a_dir is not None or args.b_dir is not None
    if pair and folder:
        raise ChangeAgentError("give either A B (pair/scene mode) or --a-dir/--b-dir (folder mode), not both")
    if folder:
        if args.a_dir is None or args.b_dir is None:
            raise ChangeAgentError("folder mode needs both --a-dir and --b-dir")
        if args.scene:
            raise ChangeAgentError("--scene takes two rasters A B, not folders")
        return "folder"
    if args.a is None or args.b is None:
        raise ChangeAgentError("give two images A B, or --a-dir and --b-dir")
    return "scene" if args.scene else "pair"


def run_predict(args: argparse.Namespace) -> int:
    from changeagent.inference.pairs import predict_folder, predict_pair
    from changeagent.inference.predictor import Predictor
    from changeagent.inference.raster import parse_bands
    from changeagent.inference.scene import predict_scene

    mode = _mode(args)
    if args.threads is not None:
        if args.threads < 1:
            raise ChangeAgentError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    options: dict[str, Any] = dict(
        head=args.head, tile=args.tile, overlap=args.overlap,
        batch_size=args.batch_size, method=args.method, beam_size=args.beam_size, max_len=args.max_len,
        length_penalty=args.length_penalty, min_area=args.min_area, scale=args.scale,
        bands=parse_bands(args.bands), mean=_floats(args.mean, "--mean"), std=_floats(args.std, "--std"),
    )
    if args.runtime == "onnx":
        if args.onnx is None or args.checkpoint is not None:
            raise ChangeAgentError("--runtime onnx takes the export folder as --onnx DIR (and no --checkpoint)")
        predictor = Predictor.from_onnx(args.onnx, device=args.device, threads=args.threads,
                                        skip_missing=args.onnx_skip_missing, **options)
    else:
        if args.checkpoint is None or args.onnx is not None:
            raise ChangeAgentError("give --checkpoint (the PyTorch runtime), or --runtime onnx --onnx DIR")
        warn_synthetic_only(args.checkpoint)
        predictor = Predictor.from_pretrained(args.checkpoint, device=args.device, **options)
    progress = not args.no_progress
    result: dict[str, Any]
    if mode == "pair":
        result = predict_pair(predictor, args.a, args.b, args.out, align=args.align, vis=not args.no_vis)
        _print_record(result, predictor.min_area)
    elif mode == "folder":
        result = predict_folder(predictor, args.a_dir, args.b_dir, args.out, align=args.align,
                                vis=not args.no_vis, progress=progress, overwrite=args.overwrite)
        rate = f", {result['pairs_per_s']} pairs/s" if result["pairs_per_s"] else ""
        print(f"{result['pairs']} pairs: {result['predicted']} predicted, {result['skipped']} already done"
              f"{rate}; summary in {Path(args.out).absolute() / 'summary.json'}")
    else:
        result = predict_scene(predictor, args.a, args.b, args.out, align=args.align, name=args.name,
                               progress=progress)
        print(f"scene {result['width']}x{result['height']}: {result['windows']} windows "
              f"({result['windows_skipped']} all nodata), {result['megapixels_per_s']} MP/s")
        print("\n".join(fraction_lines(result)))
        print(f"mask: {result['mask']}\ncaptions: {result['geojson']}")
    result = {"mode": mode, **result}
    if args.json:
        from changeagent.inference.outputs import write_json

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, result)
    return 0


def fraction_lines(rec: dict[str, Any]) -> list[str]:
    """The record's fractions, each saying what it is a share of and which head it comes from
    (docs/inference.md, "Fractions"): the binary change head's changed share, then the `--head`'s
    classes; a binary head's one class is the change head itself and is not repeated."""
    lines = [f"change head: {100 * rec['change_fraction']:.2f} % of valid pixels changed"]
    classes = rec.get("changed_fraction") or {}
    if list(classes) != ["change"]:
        into = " (changed pixels by their date-B class)" if "changed_fraction_from" in rec else ""
        parts = ", ".join(f"{k} {100 * v:.2f} %" for k, v in classes.items())
        lines.append(f"{rec['head']} head{into}: {parts} of valid pixels")
    return lines


def _print_record(rec: dict[str, Any], min_area: int) -> None:
    from changeagent.inference.pairs import NO_CAPTION_HEAD

    print(f"caption: {rec['caption'] if rec.get('caption') is not None else NO_CAPTION_HEAD}")
    print("\n".join(fraction_lines(rec)))
    counts = ", ".join(f"{k} {v}" for k, v in rec["object_counts"].items())
    print(f"objects (8-connected, >= {min_area} px): {counts}")
    print(f"mask: {rec['mask']}\nrecord: {Path(rec['mask']).parent / (rec['name'] + '.json')}")


def warn_synthetic_only(checkpoint: str) -> None:
    """Say once, on stderr, when the model was trained on synthetic data only (its training record)."""
    from changeagent.models.hub import training_record

    rec = training_record(checkpoint)
    if rec and rec.get("synthetic_only"):
        names = ", ".join(rec.get("datasets") or {})
        print(f"note: {checkpoint} was trained only on synthetic data ({names}); on real imagery its masks "
              "and captions mean little. Train on real data (docs/training.md, \"Real data\") or use a "
              "published model (README, \"Quick start\")", file=sys.stderr)


def add_index_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _Formatter
    parser.epilog = (
        "pairs:   changeagent index --checkpoint CK --a-dir A/ --b-dir B/ -o INDEX/\n"
        "scene:   changeagent index --checkpoint CK --scene A.tif B.tif -o INDEX/\n"
        "dataset: changeagent index --checkpoint CK -c CONFIG --split test -o INDEX/\n"
        "Run the same command again to resume an interrupted index. Search it with `changeagent search`."
    )
    parser.add_argument("--checkpoint", "-k", required=True, help="save_pretrained folder of a model with a retrieval head")
    parser.add_argument("--out", "-o", required=True, help="index folder (created, or resumed when it exists)")
    parser.add_argument("--a-dir", help="pairs: images of date A")
    parser.add_argument("--b-dir", help="pairs: images of date B (same file names)")
    parser.add_argument("--scene", nargs=2, metavar=("A", "B"), help="scene: two co-registered rasters, indexed by window")
    parser.add_argument("--config", "-c", help="dataset: a run config; indexes --split of its datasets")
    parser.add_argument("--split", default="test", help="dataset split with --config")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value (with --config)")
    from changeagent.data.registry import dataset_ids  # cheap: ids only, no dataset code imported

    parser.add_argument("--head", choices=dataset_ids(), default=None,
                        help="dataset whose head gives the stored changed fractions (and whose caption token is "
                             "used); must be one the model was trained on. Default: as predict")
    parser.add_argument("--tile", type=int, default=None, help="scene window size, a multiple of 32 (None: 256)")
    parser.add_argument("--overlap", type=int, default=32, help="scene window overlap in pixels")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs / windows per model call")
    from changeagent.models.decode_cfg import DECODE

    parser.add_argument("--max-len", type=int, default=DECODE.max_len, help="longest generated caption in tokens")
    parser.add_argument("--bands", help="1-based bands to use, e.g. 3,2,1")
    parser.add_argument("--scale", default="auto", help="auto, percentile[:LO,HI], divide:N (as predict)")
    parser.add_argument("--mean", help="normalisation mean per band, comma-separated fractions of 255 (default: "
                                       "the statistics the model folder records for the --head dataset)")
    parser.add_argument("--std", help="normalisation std per band, with --mean")
    parser.add_argument("--align", action="store_true", help="scene: warp B onto A's grid")
    parser.add_argument("--name", help="scene: name of the scene in item names (None: stem of A)")
    parser.add_argument("--ann", choices=("none", "hnsw", "ivf"), default="none",
                        help="also build an approximate FAISS index (for millions of rows; exact search otherwise)")
    parser.add_argument("--overwrite", action="store_true", help="start the index afresh instead of resuming")
    parser.add_argument("--device", default="auto", help="auto (a local GPU if any, else the CPU), cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (None: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", metavar="OUT", help="also write the summary here")


def run_index(args: argparse.Namespace) -> int:
    modes = [m for m, on in (("pairs", args.a_dir or args.b_dir), ("scene", args.scene), ("dataset", args.config)) if on]
    if len(modes) != 1:
        raise ChangeAgentError("give exactly one of --a-dir/--b-dir (pairs), --scene A B, or -c CONFIG (dataset)")
    mode = modes[0]
    if mode == "pairs" and not (args.a_dir and args.b_dir):
        raise ChangeAgentError("pairs mode needs both --a-dir and --b-dir")
    if args.overrides and mode != "dataset":
        raise ChangeAgentError(f"unexpected arguments {args.overrides} (key=value overrides go with -c CONFIG)")
    from changeagent.inference import index as ix
    from changeagent.inference.predictor import Predictor
    from changeagent.inference.raster import parse_bands

    _threads(args.threads)
    pred = Predictor.from_pretrained(args.checkpoint, device=args.device, head=args.head, tile=args.tile,
                                     overlap=args.overlap, batch_size=args.batch_size, max_len=args.max_len,
                                     scale=args.scale, bands=parse_bands(args.bands),
                                     mean=_floats(args.mean, "--mean"), std=_floats(args.std, "--std"))
    warn_synthetic_only(args.checkpoint)
    common: dict[str, Any] = dict(progress=not args.no_progress, overwrite=args.overwrite, ann=args.ann)
    if mode == "pairs":
        result = ix.index_pairs(pred, args.a_dir, args.b_dir, args.out, **common)
    elif mode == "scene":
        result = ix.index_scene(pred, args.scene[0], args.scene[1], args.out, align=args.align, name=args.name, **common)
    else:
        datasets, source, workers = _split_readers(pred, args.config, list(args.overrides), args.split)
        result = ix.index_dataset(pred, datasets, source, args.split, args.out, num_workers=workers, **common)
    rate = f", {result['items_per_s']} items/s" if result.get("items_per_s") else ""
    print(f"index {result['index']} ({result['kind']}): {result['count']} items, {result['indexed']} embedded now, "
          f"{result['already_done']} already done{rate}" + (f", approximate index {result['ann']}" if result["ann"] else ""))
    _write_json(args.json, result)
    return 0


def _split_readers(pred: Any, config: str, overrides: list[str],
                   split: str) -> tuple[dict[str, Any], dict[str, Any], int]:
    """`index -c CONFIG`: the readers of `split` for every dataset of a run config (real or synthetic),
    each read with the statistics of the head that decodes it (resolved before validation); the
    source the index header records; the config's loader workers. Composed here, at the command
    line: the run config, its dataset roots and readers are the engine's, which inference never imports."""
    from changeagent.engine.distributed import DistInfo
    from changeagent.engine.loaders import make_dataset
    from changeagent.engine.roots import dataset_roots
    from changeagent.engine.schema import load_run_config

    cfg = load_run_config(config, overrides, norm={"mean": [float(v) for v in pred.mean],
                                                   "std": [float(v) for v in pred.std]})
    roots = dataset_roots(cfg, DistInfo())
    datasets = {n: make_dataset(n, roots[n], split, cfg, pred.vocab, train=False) for n in roots}
    source = {"config": str(Path(config).resolve()), "overrides": list(overrides), "split": split,
              "roots": {n: str(Path(r).resolve()) for n, r in roots.items()}}
    return datasets, source, int(cfg.data.num_workers)


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _Formatter
    parser.epilog = ('changeagent search INDEX/ "new buildings along the road" --top-k 10 --json hits.json\n'
                     'changeagent search SCENE1/ SCENE2/ "a road is built" --geojson hits.geojson')
    parser.add_argument("items", nargs="+", metavar="INDEX... QUERY",
                        help="one or more index folders built with the same model, then the query text")
    # -n, not -k: `-k` is --checkpoint in every command that takes a model
    parser.add_argument("--top-k", "-n", type=int, default=10, help="results to return")
    parser.add_argument("--exact", action="store_true", help="exhaustive search even when an approximate index exists")
    parser.add_argument("--json", metavar="OUT", help="write {query, results: [{rank, name, score, caption, ...}]}")
    parser.add_argument("--geojson", metavar="OUT", help="write the results' window footprints (scene indexes)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (None: torch's choice)")


def run_search(args: argparse.Namespace) -> int:
    if len(args.items) < 2:
        raise ChangeAgentError("give one or more index folders and then the query text")
    *paths, query = args.items
    if not query.strip():
        raise ChangeAgentError("empty query: give some words describing the change")
    from changeagent.inference.search import Searcher, results_geojson

    _threads(args.threads)
    searcher = Searcher.from_index(paths, exact=args.exact)
    result = searcher.search(query, args.top_k)
    if result["unknown_words"]:
        print(f"warning: not in the model's vocabulary (encoded as <unk>): {', '.join(result['unknown_words'])}",
              file=sys.stderr)
    print(f"query: {query!r} over {len(searcher)} items in {len(paths)} index(es)")
    for hit in result["results"]:
        frac = hit.get("change_fraction")
        changed = f"  change head: {100 * frac:.1f} % of pixels" if isinstance(frac, (int, float)) else ""
        print(f"{hit['rank']:>3}  {hit['score']:.4f}  {hit['name']}  \"{hit['caption']}\"{changed}")
    _write_json(args.json, result)
    if args.geojson:
        _write_json(args.geojson, results_geojson(result, searcher))
    return 0


def _floats(text: str | None, flag: str) -> list[float] | None:
    """`0.4,0.39,0.33` -> [0.4, 0.39, 0.33]; None stays None."""
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ChangeAgentError(f"{flag} {text!r}: give comma-separated numbers, e.g. 0.39,0.386,0.33") from None
    if not values:
        raise ChangeAgentError(f"{flag} is empty: give one number per band")
    return values


def _threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ChangeAgentError(f"--threads must be at least 1, got {threads}")
        import torch

        torch.set_num_threads(threads)


def _write_json(path: str | None, obj: Any) -> None:
    if path:
        import json

        from changeagent.fileio import write_text_atomic  # not inference.outputs: rasterio slows `search`

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(obj, indent=2) + "\n")
