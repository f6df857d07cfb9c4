"""`changeagent data qa ROOT --format second-cc|levir-mci|second -o OUT/`: derive questions, CDVQA schema.

Reads every split of a dataset with label maps through its registry reader's file layout, derives the
question groups of each tile (`derive.derive`: seeded by --seed and the tile's split/name) and writes
`OUT/{Train,Val,Test}_{images,questions,answers}.json` (CDVQA's schema, changeagent.data.cdvqa) plus
`OUT/qa_summary.json`. `--link-images` also links `OUT/im1/`, `OUT/im2/` (and, for two land-cover maps,
`OUT/label1/`, `OUT/label2/`) to the source files, so OUT is a CDVQA root `--format cdvqa` reads.
OUT appears complete or not at all.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

SOURCES = ("levir_mci", "second_cc", "second")  # datasets with label maps the rules read


def add_qa_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="dataset folder in its published layout")
    parser.add_argument("--format", required=True, choices=sorted({*SOURCES, *(s.replace("_", "-") for s in SOURCES)}),
                        help="the dataset's layout ('-' and '_' are the same)")
    parser.add_argument("-o", "--out", required=True, help="output folder (created; must be empty or absent)")
    parser.add_argument("--splits", nargs="+", default=None, help="splits to derive (default: all of the layout)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    parser.add_argument("--with-from-what", action="store_true",
                        help="two land-cover maps: add QAG-360K's change_from_what group to CDVQA's eight types")
    parser.add_argument("--link-images", action="store_true",
                        help="link im1/ im2/ (label1/ label2/) into OUT so it is a CDVQA root")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the summary to FILE")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _maps(name: str, files: dict[str, Path]) -> Any:
    import numpy as np

    from changeagent.data.images import read_label
    from changeagent.data.labels import decode_levir_mask, decode_second_sem

    if name == "levir_mci":
        return decode_levir_mask(read_label(files["label"]), files["label"])[None]
    keys = ("sem_a", "sem_b") if name == "second_cc" else ("label1", "label2")
    return np.stack([decode_second_sem(read_label(files[k]), files[k]) for k in keys])


def _image_keys(name: str) -> dict[str, str]:
    if name == "levir_mci":
        return {"im1": "A", "im2": "B"}
    if name == "second_cc":
        return {"im1": "A", "im2": "B", "label1": "sem_a", "label2": "sem_b"}
    return {"im1": "im1", "im2": "im2", "label1": "label1", "label2": "label2"}


def derive_root(root: str | Path, name: str, out: str | Path, splits: list[str] | None = None, seed: int = 0,
                with_from_what: bool = False, link_images: bool = False, overwrite: bool = False,
                progress: bool = True) -> dict[str, Any]:
    """Write the derived questions of dataset `name` at `root` to `out` (see the module docstring)."""
    from tqdm import tqdm

    from changeagent.data.cdvqa import SPLIT_FILES, write_split
    from changeagent.data.lexicon import lexicon_for
    from changeagent.data.qa.derive import as_rows, derive, tally
    from changeagent.data.qa.rules import CDVQA_TYPES
    from changeagent.data.registry import get_spec
    from changeagent.errors import ChangeAgentError
    from changeagent.fileio import atomic_dir, write_text_atomic

    if name not in SOURCES:
        raise ChangeAgentError(f"data qa: --format must be one of {', '.join(SOURCES)}, got {name!r}")
    spec, lexicon = get_spec(name), lexicon_for(name)
    splits = splits or list(spec.splits)
    bad = [s for s in splits if s not in spec.splits or s not in SPLIT_FILES]
    if bad:
        raise ChangeAgentError(f"data qa: {spec.title} has splits {list(spec.splits)}, got {bad}")
    out = Path(out).expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ChangeAgentError(f"output folder {out} is not empty (use --overwrite to replace it)")
    types = (*CDVQA_TYPES, "change_from_what") if with_from_what else CDVQA_TYPES
    summary: dict[str, Any] = {"source": str(Path(root).absolute()), "format": name, "seed": seed,
                               "types": list(types) if spec.dates == 2 else "levir", "splits": {}}
    with atomic_dir(out) as work:
        linked: dict[str, str] = {}
        for split in splits:
            ds = spec.reader(root, split=split)
            tiles, all_groups = [], []
            for i in tqdm(range(len(ds)), desc=f"qa {split}", unit="pair", disable=not progress, leave=False):
                files = ds.files(i)
                file_name = Path(files["label" if name == "levir_mci" else next(iter(files))]).name
                groups = derive(_maps(name, files), lexicon, seed, f"{split}/{file_name}", types)
                tiles.append((file_name, as_rows(groups)))
                all_groups.append(groups)
                if link_images:
                    for folder, key in _image_keys(name).items():
                        dst = work / folder / file_name
                        if str(dst) in linked:
                            raise ChangeAgentError(f"data qa --link-images: {file_name} occurs in two splits "
                                                   f"({linked[str(dst)]} and {split}); CDVQA's im1/ holds one file per name")
                        linked[str(dst)] = split
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        os.symlink(Path(files[key]).absolute(), dst)
            counts = write_split(work, split, tiles)
            summary["splits"][split] = {**tally(all_groups), "image_entries": counts["image_entries"]}
        write_text_atomic(work / "qa_summary.json", json.dumps(summary, indent=2) + "\n")
    summary["out"] = str(out)
    return summary


def run_qa(args: argparse.Namespace) -> int:
    from changeagent.fileio import write_text_atomic

    name = args.format.replace("-", "_")
    summary = derive_root(args.root, name, args.out, args.splits, args.seed, args.with_from_what, args.link_images,
                          args.overwrite, progress=not args.no_progress)
    lines = [f"derived questions of {name} at {args.root} -> {summary['out']} (seed {args.seed})"]
    for split, s in summary["splits"].items():
        lines.append(f"  {split}: {s['pairs']} pairs, {s['image_entries']} image entries, {s['questions']} questions")
        lines.append("    per type: " + ", ".join(f"{t} {n}" for t, n in s["per_type"].items()))
    print("\n".join(lines))
    if args.json:
        write_text_atomic(args.json, json.dumps(summary, indent=2) + "\n")
    return 0
