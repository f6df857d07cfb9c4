"""`changeagent data synth`: write the synthetic benchmark in a real dataset layout."""

from __future__ import annotations

import argparse
import json

from changeagent.data.synth.writer import DIFFICULTIES, MASK_VARIANTS


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    from changeagent.data.cli import format_choices

    parser.add_argument("--format", required=True, choices=format_choices(),
                        help="dataset layout to write (a registered dataset id; '-' and '_' are the same)")
    parser.add_argument("--layout", choices=("crop", "official"), default="crop",
                        help="binary change datasets: 256-px crop layout with list/, or LEVIR-CD's release")
    parser.add_argument("--out", required=True, help="output folder (created; must be empty or absent)")
    parser.add_argument("--n-train", type=int, default=100, help="training pairs")
    parser.add_argument("--n-val", type=int, default=20, help="validation pairs")
    parser.add_argument("--n-test", type=int, default=20, help="test pairs")
    parser.add_argument("--size", type=int, default=256, help="tile side in pixels (32..2048)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed gives identical files")
    parser.add_argument("--mask-variant", choices=MASK_VARIANTS, default="grey",
                        help="LEVIR-MCI label encoding: grey 0/128/255 or colour black/yellow/red")
    parser.add_argument("--difficulty", choices=DIFFICULTIES, default="default",
                        help="default: the demo's benchmark; hard: radiometry, haze, seasons, misregistration, "
                             "moving shadows, many layouts, small objects, label/caption noise (docs/synthetic.md)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", metavar="OUT", help="also write the summary as JSON to this file")


def run_synth(args: argparse.Namespace) -> int:
    from changeagent.data.registry import get_spec
    from changeagent.data.synth import mark_synthetic
    from changeagent.errors import ChangeAgentError

    spec = get_spec(args.format.replace("-", "_"))
    if spec.synth is None:
        raise ChangeAgentError(f"{spec.title} has no synthetic form")
    summary = spec.synth(args.out, args.n_train, args.n_val, args.n_test, size=args.size, seed=args.seed,
                         mask_variant=args.mask_variant, overwrite=args.overwrite, progress=not args.no_progress,
                         layout=args.layout, difficulty=args.difficulty)
    # the engine's own form of the parameters (engine.roots.ensure_synthetic), so `data.synth.dir` can reuse
    # the folder, and the mark that it is synthetic (a model trained on it records so)
    mark_synthetic(summary["out"], {"format": spec.id, "n_train": args.n_train, "n_val": args.n_val,
                                    "n_test": args.n_test, "size": args.size, "seed": args.seed,
                                    "mask_variant": args.mask_variant,
                                    **({"layout": args.layout} if args.layout != "crop" else {}),
                                    **({"difficulty": args.difficulty} if args.difficulty != "default" else {})})
    p, c = summary["pairs"], summary["change_pairs"]
    print(
        f"wrote {summary['total_pairs']} {args.difficulty} {args.format} pairs of {args.size}x{args.size} to "
        f"{summary['out']} "
        f"in {summary['seconds']:.1f} s\n"
        + "".join(f"  {s:5s}: {p[s]:6d} pairs, {c[s]:6d} with change\n" for s in p)
        + f"  change fraction {summary['change_fraction']:.2f}, {summary['distinct_words']} distinct caption words"
    )
    if args.json:
        from changeagent.fileio import write_text_atomic

        write_text_atomic(args.json, json.dumps(summary, indent=2) + "\n")
    return 0
