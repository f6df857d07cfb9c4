"""`changeagent data ground`: export derived referring expressions + masks in a QAG-360K-like layout."""

from __future__ import annotations

import argparse
import json

FORMATS = ("levir-mci", "levir_mci", "second-cc", "second_cc", "second")


def add_ground_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="dataset folder in its published layout (docs/data.md)")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="dataset layout with class maps; '-' and '_' are the same")
    parser.add_argument("-o", "--out", required=True,
                        help="output folder (created; must be empty or absent; layout in docs/data.md)")
    parser.add_argument("--splits", nargs="+", default=None, metavar="SPLIT",
                        help="splits to export (default: every split present under ROOT)")
    parser.add_argument("--per-pair", type=int, default=8, help="expressions per image pair")
    parser.add_argument("--empty-share", type=float, default=0.2,
                        help="share of expressions per pair whose target is empty (a class that did not change)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed gives identical files")
    parser.add_argument("--images", choices=("none", "copy"), default="none",
                        help="copy the pair images into <split>/image/im1|im2 (QAG-360K style) or only name them")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in OUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the summary to this JSON file")


def run_ground(args: argparse.Namespace) -> int:
    from changeagent.data.grounding.export import export_expressions
    from changeagent.fileio import write_text_atomic

    summary = export_expressions(args.root, args.format, args.out, splits=args.splits, per_pair=args.per_pair,
                                 empty_share=args.empty_share, seed=args.seed, images=args.images,
                                 overwrite=args.overwrite, progress=not args.no_progress)
    lines = [f"wrote {summary['total_expressions']} referring expressions ({summary['dataset']}) to "
             f"{summary['out']} in {summary['seconds']:.1f} s"]
    for split, s in summary["splits"].items():
        types = ", ".join(f"{t} {n}" for t, n in s["per_type"].items())
        lines.append(f"  {split:5s}: {s['pairs']:6d} pairs, {s['expressions']:7d} expressions ({types})")
    print("\n".join(lines))
    if args.json:
        write_text_atomic(args.json, json.dumps(summary, indent=2) + "\n")
    return 0
