"""`changeagent predict`: pair mode, folder mode (--a-dir/--b-dir) and scene mode (--scene)."""

from __future__ import annotations

import argparse
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
    parser.add_argument("--checkpoint", "-k", required=True,
                        help="model folder (a run's best/), a run folder, or a last.pt")
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
    parser.add_argument("--method", choices=("greedy", "beam"), default="greedy", help="caption decoding")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--max-len", type=int, default=41, help="longest caption in tokens")
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--min-area", type=int, default=16, help="smallest object counted, in pixels")
    parser.add_argument("--bands", help="1-based bands to use, e.g. 3,2,1 (needed when the band count differs)")
    parser.add_argument("--scale", default="auto",
                        help="auto (uint8 /255, else percentile), percentile[:LO,HI], divide:N")
    parser.add_argument("--align", action="store_true",
                        help="warp B onto A's grid (GeoTIFF) / resize B to A's size (plain images)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (None: torch's choice)")
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
    predictor = Predictor.from_pretrained(
        args.checkpoint, device=args.device, head=args.head, tile=args.tile, overlap=args.overlap,
        batch_size=args.batch_size, method=args.method, beam_size=args.beam_size, max_len=args.max_len,
        length_penalty=args.length_penalty, min_area=args.min_area, scale=args.scale,
        bands=parse_bands(args.bands),
    )
    progress = not args.no_progress
    result: dict[str, Any]
    if mode == "pair":
        result = predict_pair(predictor, args.a, args.b, args.out, align=args.align, vis=not args.no_vis)
        _print_record(result)
    elif mode == "folder":
        result = predict_folder(predictor, args.a_dir, args.b_dir, args.out, align=args.align,
                                vis=not args.no_vis, progress=progress)
        rate = f", {result['pairs_per_s']} pairs/s" if result["pairs_per_s"] else ""
        print(f"{result['pairs']} pairs: {result['predicted']} predicted, {result['skipped']} already done"
              f"{rate}; summary in {Path(args.out) / 'summary.json'}")
    else:
        result = predict_scene(predictor, args.a, args.b, args.out, align=args.align, name=args.name,
                               progress=progress)
        print(f"scene {result['width']}x{result['height']}: {result['windows']} windows "
              f"({result['windows_skipped']} all nodata), change {100 * result['change_fraction']:.2f} %, "
              f"{result['megapixels_per_s']} MP/s")
        print(f"mask: {result['mask']}\ncaptions: {result['geojson']}")
    result = {"mode": mode, **result}
    if args.json:
        from changeagent.inference.outputs import write_json

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, result)
    return 0


def _print_record(rec: dict[str, Any]) -> None:
    print(f"caption: {rec['caption']}")
    frac = ", ".join(f"{k} {100 * v:.2f} %" for k, v in rec["changed_fraction"].items())
    counts = ", ".join(f"{k} {v}" for k, v in rec["object_counts"].items())
    print(f"changed: {frac}\nobjects: {counts}")
    print(f"mask: {rec['mask']}\nrecord: {Path(rec['mask']).parent / (rec['name'] + '.json')}")
