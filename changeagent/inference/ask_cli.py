"""`changeagent ask`: a question about a pair (or a scene window) answered by the qa head and measured on
the model's own maps (inference/ask.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from changeagent.errors import ChangeAgentError


def add_ask_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ('pair:  changeagent ask --checkpoint CK A.png B.png "how many buildings were built?"\n'
                     'scene: changeagent ask --checkpoint CK --scene A.tif B.tif --window 0,0,256,256 "..."')
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("a", help="image of date A (a GeoTIFF with --scene)")
    parser.add_argument("b", help="image of date B")
    parser.add_argument("question", help="the question, e.g. \"how many buildings were built?\"")
    parser.add_argument("--checkpoint", "-k", required=True, help="model folder, run folder or last.pt")
    from changeagent.data.registry import dataset_ids

    parser.add_argument("--head", choices=dataset_ids(), default=None,
                        help="dataset whose head decodes the maps and whose label space the question is in")
    parser.add_argument("--scene", action="store_true", help="A and B are rasters: ask about --window or --point")
    parser.add_argument("--window", help="scene: x,y,width,height in pixels")
    parser.add_argument("--point", help="scene: x,y in pixels (a window of --tile px around it)")
    parser.add_argument("--tile", type=int, default=256, help="scene --point: window size")
    parser.add_argument("--json", help="also write the answer as JSON here")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")


def _ints(text: str, n: int, flag: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != n:
        raise ChangeAgentError(f"{flag} must be {n} comma-separated integers, got {text!r}")
    return vals


def run_ask(args: argparse.Namespace) -> int:
    from changeagent.inference.ask import ask, point_window, read_window
    from changeagent.inference.predictor import Predictor

    if not args.question.strip():
        from changeagent.data.lexicon import lexicon_for
        from changeagent.data.qa.parse import parse_question  # its message lists the types it answers

        parse_question("", lexicon_for("second"))
    a: Any
    b: Any
    if args.scene:
        if bool(args.window) == bool(args.point):
            raise ChangeAgentError("--scene needs one of --window x,y,w,h or --point x,y")
        if args.window:
            win = _ints(args.window, 4, "--window")
        else:
            px, py = _ints(args.point, 2, "--point")
            win = point_window(args.a, px, py, args.tile)
        a, b = read_window(args.a, args.b, win)  # type: ignore[arg-type]
    elif args.window or args.point:
        raise ChangeAgentError("--window / --point need --scene")
    else:
        a, b = args.a, args.b
    predictor = Predictor.from_pretrained(args.checkpoint, device=args.device, head=args.head)
    result = ask(predictor, a, b, args.question)
    if args.scene:
        result["window"] = list(win)
    print(f"question type: {result['type']}")
    print(f"answer (learned): {result['answer']} (p = {result['probability']:.2f})")
    m = result["measured"]
    if m is None:
        print("measured: - (the model has no map of this label space)")
    else:
        print(f"measured (rules on the predicted maps): {m['answer']}")
        print(f"evidence: {m['evidence']}")
    if args.json:
        from changeagent.inference.outputs import write_json

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, result)
    return 0
