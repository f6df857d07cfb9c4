"""`changeagent data check` and `changeagent data vocab` (sub-command convention of docs/design.md)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from changeagent.data.labels import MASK_MODES
from changeagent.data.qa import QA_FORMATS
from changeagent.data.registry import dataset_ids
from changeagent.data.vocab import REFERENCE_SPLITS, SPLITS, Vocabulary, iter_split_tokens
from changeagent.errors import ChangeAgentError
from changeagent.fileio import write_text_atomic


def _write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="dataset folder (the one holding the caption JSON or A/ B/ ...)")
    parser.add_argument("--format", required=True, choices=format_choices(),
                        help="dataset id (docs/data.md describes each layout); '-' and '_' are the same")
    parser.add_argument("--captions-file", default=None,
                        help="caption JSON relative to ROOT (default: the layout's standard name)")
    parser.add_argument("--mask-mode", default="auto", choices=MASK_MODES,
                        help="LEVIR-MCI label reading: auto-detect the encoding, or binary 0/255")
    parser.add_argument("--min-count", type=int, default=5,
                        help="vocabulary rule for the OOV statistics: train words counted more often")
    parser.add_argument("--skip-images", action="store_true",
                        help="QA formats (cdvqa, qag360k): check the question/answer JSONs only, not the files")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def format_choices() -> list[str]:
    """Registered dataset ids, plus the dashed spelling (levir-mci) older commands used."""
    ids = dataset_ids()
    return sorted({*ids, *(i.replace("_", "-") for i in ids)})


def run_check(args: argparse.Namespace) -> int:
    from changeagent.data.check import FORMATS, check_dataset, check_layout, format_report

    name = args.format.replace("-", "_")
    if args.skip_images and name not in QA_FORMATS:
        raise ChangeAgentError(f"--skip-images is for the QA formats ({', '.join(QA_FORMATS)}), not {name}")
    if name in QA_FORMATS:
        from changeagent.data.qa.check import check_qa, format_qa_report

        report = check_qa(args.root, name, skip_images=args.skip_images, progress=not args.no_progress)
        print(format_qa_report(report))
    elif name.replace("_", "-") in FORMATS:  # caption datasets with the detailed caption/label report
        report = check_dataset(args.root, name.replace("_", "-"), captions_file=args.captions_file,
                               mask_mode=args.mask_mode, min_count=args.min_count, progress=not args.no_progress)
    else:
        report = check_layout(args.root, name, {"captions_file": args.captions_file} if args.captions_file else {},
                              progress=not args.no_progress)
    if name not in QA_FORMATS:
        print(format_report(report))
    _write_json(args.json, report)
    if report["errors"]:
        print(f"error: dataset check found {len(report['errors'])} problem(s) in {args.root}", file=sys.stderr)
        return 1
    print("ok: no problems found")
    return 0


def add_vocab_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("captions", nargs="+", metavar="JSON", help="Karpathy-style caption JSON file(s)")
    parser.add_argument("--splits", nargs="+", default=None, choices=[*SPLITS, "restval"],
                        help="splits whose captions are counted (default: train; restval counts as train)")
    parser.add_argument("--min-count", type=int, default=None,
                        help="keep words counted MORE than this many times (default: 5)")
    parser.add_argument("--reference", action="store_true",
                        help="the reference LEVIR-MCI rule: train+val+test, count > 5")
    parser.add_argument("-o", "--output", required=True, help="vocabulary JSON to write")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write a summary as JSON")


def run_vocab(args: argparse.Namespace) -> int:
    if args.reference and (args.splits is not None or args.min_count is not None):
        raise ChangeAgentError("--reference fixes the splits and min count; drop --splits/--min-count")
    splits = list(REFERENCE_SPLITS) if args.reference else (args.splits or ["train"])
    min_count = 5 if args.min_count is None else args.min_count
    token_lists = list(iter_split_tokens(args.captions, splits))
    if not token_lists:
        raise ChangeAgentError(f"no captions of splits {splits} in {', '.join(args.captions)}")
    vocab = Vocabulary.build(token_lists, min_count=min_count)
    vocab.save(args.output)
    summary = {"output": args.output, "size": len(vocab), "words": len(vocab) - 4, "splits": splits,
               "min_count": min_count, "captions": len(token_lists), "files": list(args.captions)}
    print(f"vocabulary: {len(vocab)} entries (4 specials + {len(vocab) - 4} words counted > {min_count} times "
          f"in {len(token_lists)} captions of {'+'.join(splits)}) -> {args.output}")
    _write_json(args.json, summary)
    return 0
