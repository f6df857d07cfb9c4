"""`changeagent ground`: the mask of the change a sentence describes (pair or GeoTIFF scene)."""

from __future__ import annotations

import argparse
from typing import Any

from changeagent.errors import ChangeAgentError
from changeagent.inference.cli import _floats, _Formatter, _threads

ROUTES = ("auto", "learned", "program")  # = inference.ground.ROUTES (kept here: --help imports no torch)


def add_ground_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _Formatter
    parser.epilog = (
        'pair:  changeagent ground --checkpoint CK A.png B.png "new buildings in the top left" -o OUT/\n'
        'scene: changeagent ground --checkpoint CK --scene A.tif B.tif "vegetation that became ground" -o OUT/\n'
        "Writes <name>_ground.png (.tif + .geojson with --scene), <name>_ground_overlay.png, <name>_ground.json."
    )
    parser.add_argument("a", help="image of date A")
    parser.add_argument("b", help="image of date B")
    parser.add_argument("expression", help="the change to segment, e.g. 'new buildings in the top left'")
    parser.add_argument("--checkpoint", "-k", required=True,
                        help="model folder (a run's best/), a run folder, or a last.pt")
    parser.add_argument("--out", "-o", required=True, help="output folder (nothing is written on an error)")
    parser.add_argument("--route", choices=ROUTES, default="auto",
                        help="learned: the grounding head; program: parse the expression and cut it from the "
                             "model's predicted class maps; auto: learned when the model has the head")
    parser.add_argument("--scene", action="store_true",
                        help="GeoTIFF in and out: the mask as a GeoTIFF with A's CRS and transform, plus a "
                             "GeoJSON of its polygons")
    from changeagent.data.registry import dataset_ids  # cheap: ids only

    parser.add_argument("--head", choices=dataset_ids(), default=None,
                        help="dataset whose label space reads the expression and whose maps the program route "
                             "cuts; must be one the model was trained on. Default: as predict")
    parser.add_argument("--tile", type=int, default=None, help="window size, a multiple of 32 (None: 256)")
    parser.add_argument("--overlap", type=int, default=32, help="window overlap in pixels (blended logits)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per model call")
    parser.add_argument("--bands", help="1-based bands to use, e.g. 3,2,1")
    parser.add_argument("--scale", default="auto", help="auto, percentile[:LO,HI], divide:N (as predict)")
    parser.add_argument("--mean", help="normalisation mean per band (default: the model folder's, as predict)")
    parser.add_argument("--std", help="normalisation std per band, with --mean")
    parser.add_argument("--align", action="store_true", help="warp / resize B onto A's grid (as predict)")
    parser.add_argument("--name", help="output name (None: stem of A)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (None: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_ground(args: argparse.Namespace) -> int:
    if not args.expression.strip():
        raise ChangeAgentError("the expression is empty; say what to segment, e.g. 'new buildings'")
    from changeagent.inference.ground import write_ground
    from changeagent.inference.predictor import Predictor
    from changeagent.inference.raster import is_raster, parse_bands

    if args.scene and not (is_raster(args.a) and is_raster(args.b)):
        raise ChangeAgentError(f"--scene takes two GeoTIFFs, got {args.a} and {args.b}")
    _threads(args.threads)
    pred = Predictor.from_pretrained(args.checkpoint, device=args.device, head=args.head, tile=args.tile,
                                     overlap=args.overlap, batch_size=args.batch_size, scale=args.scale,
                                     bands=parse_bands(args.bands), mean=_floats(args.mean, "--mean"),
                                     std=_floats(args.std, "--std"))
    g = pred.ground(args.a, args.b, args.expression, route=args.route, align=args.align,
                    progress=not args.no_progress)
    rec: dict[str, Any] = write_ground(pred, g, args.out, name=args.name, scene=args.scene)
    area = rec["area"]
    print(f"{rec['expression']!r} answered by the {rec['route']} route: {area['pixels']} px "
          f"({100 * area['fraction']:.2f} %), {rec['components']} object(s)")
    for box in rec["boxes"][:10]:
        print(f"  box y {box['y0']}..{box['y1']}  x {box['x0']}..{box['x1']}  ({box['area']} px)")
    print(f"mask: {rec['mask']}\noverlay: {rec['overlay']}\nrecord: {rec['record']}"
          + (f"\npolygons: {rec['geojson']} ({rec['polygons']})" if "geojson" in rec else ""))
    return 0
