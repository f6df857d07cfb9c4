"""`changeagent score-captions` (COCO caption metrics of a hypothesis file against a reference file) and
`changeagent score` (predicted masks against label images)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from changeagent.errors import ChangeAgentError
from changeagent.fileio import write_text_atomic


def add_score_captions_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hyp", required=True, type=Path, metavar="HYP.json",
                        help='hypotheses: {"id": "caption", ...} (exactly one per id)')
    parser.add_argument("--refs", required=True, type=Path, metavar="REFS.json",
                        help='references: {"id": ["caption", ...], ...} (all of them, e.g. 5 per pair)')
    parser.add_argument("--id-level", action="store_true",
                        help="score strings of vocabulary ids instead of words, as the reference code "
                             "does (needs --vocab); use it to compare with published tables")
    parser.add_argument("--vocab", type=Path, metavar="VOCAB.json",
                        help='vocabulary {"word": id, ...} for --id-level; unknown words map to <UNK>')
    parser.add_argument("--subsets", action="store_true",
                        help="also score the change / no-change subsets (a pair is no-change when all its "
                             "references are no-change sentences) and report the no-change accuracy")
    parser.add_argument("--no-meteor", action="store_true",
                        help="skip METEOR (no Java process); METEOR and S*m are then reported as missing")
    parser.add_argument("--json", type=Path, metavar="OUT", dest="json_out",
                        help="write the metrics as fractions to this JSON file")


def _load_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ChangeAgentError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise ChangeAgentError(f"{what} path is a directory, not a JSON file: {path}") from None
    except json.JSONDecodeError as e:
        raise ChangeAgentError(f"{path}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except (UnicodeDecodeError, OSError) as e:
        raise ChangeAgentError(f"{path}: cannot read {what} file ({e})") from None


def _load_hyps(path: Path) -> dict[str, str]:
    data = _load_json(path, "hypothesis")
    if not isinstance(data, dict):
        raise ChangeAgentError(f'{path}: expected a JSON object {{"id": "caption"}}, got {type(data).__name__}')
    out = {}
    for i, h in data.items():
        if isinstance(h, list) and len(h) == 1:  # COCO-style [caption] is accepted
            h = h[0]
        if not isinstance(h, str):
            raise ChangeAgentError(f"{path}: id {i!r} must map to exactly one caption string, got {h!r:.80}")
        out[i] = h
    return out


def _load_refs(path: Path) -> dict[str, list[str]]:
    data = _load_json(path, "reference")
    if not isinstance(data, dict):
        raise ChangeAgentError(f'{path}: expected a JSON object {{"id": ["caption", ...]}}, '
                               f"got {type(data).__name__}")
    return data  # per-id checks: validate_captions, in run_score_captions


def _load_vocab(path: Path) -> dict[str, int]:
    data = _load_json(path, "vocabulary")
    if not isinstance(data, dict) or not all(isinstance(k, str) and type(v) is int for k, v in data.items()):
        raise ChangeAgentError(f'{path}: a vocabulary must be a JSON object {{"word": id, ...}} with integer ids')
    if "<UNK>" not in data:
        raise ChangeAgentError(f"{path}: vocabulary has no <UNK> entry")
    return data


def _pct(value: float | None) -> str:
    return "missing" if value is None else f"{100 * value:.2f}"


def _table(rows: dict[str, dict | None], counts: dict[str, int], level: str) -> str:
    from changeagent.metrics.captions import METRIC_KEYS, METRIC_LABELS

    names = list(rows)
    head = f"caption metrics, {level} level, in percent (CIDEr-D x100)"
    lines = [head, "  " + f"{'':9}" + "".join(f"{n:>12}" for n in names),
             "  " + f"{'pairs':9}" + "".join(f"{counts[n]:>12}" for n in names)]
    for key in METRIC_KEYS:
        cells = "".join(f"{_pct(r[key]) if (r := rows[n]) is not None else '-':>12}" for n in names)
        lines.append(f"  {METRIC_LABELS[key]:9}{cells}")
    return "\n".join(lines)


def _write_json(path: Path, obj: Any) -> None:
    if not path.resolve().parent.is_dir():
        raise ChangeAgentError(f"--json: folder does not exist: {path.resolve().parent}")
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def run_score_captions(args: argparse.Namespace) -> int:
    # imported here, not at the top: pycocoevalcap/torch must not slow down `--help` and argument errors
    from changeagent.metrics.captions import SUBSETS, caption_report, score_captions, validate_captions

    if args.id_level and args.vocab is None:
        raise ChangeAgentError("--id-level needs --vocab VOCAB.json")
    if args.vocab is not None and not args.id_level:
        raise ChangeAgentError("--vocab is only used with --id-level")
    hyps, refs = _load_hyps(args.hyp), _load_refs(args.refs)
    vocab = _load_vocab(args.vocab) if args.id_level else None
    validate_captions(hyps, refs, hyp_name=str(args.hyp), ref_name=str(args.refs))
    level = "id" if args.id_level else "word"
    kwargs = dict(id_level=args.id_level, vocab=vocab, meteor=not args.no_meteor, progress=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if args.subsets:
                report = caption_report(hyps, refs, **kwargs)
            else:
                report = {"all": score_captions(hyps, refs, **kwargs), "counts": {"all": len(refs)}}
        except ChangeAgentError as e:
            raise ChangeAgentError(f"{args.hyp} / {args.refs}: {e}") from None
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    shown = SUBSETS if args.subsets else ("all",)
    print(_table({s: report[s] for s in shown}, report["counts"], level))
    if args.subsets:
        acc = report["no_change_accuracy"]
        print(f"  no-change accuracy: {'-' if acc is None else f'{100 * acc:.2f}'} "
              f"(no-change pairs captioned with a no-change sentence)")
    if args.json_out is not None:
        out: dict[str, Any] = dict(report["all"])
        if args.subsets:
            out.update(level=level, counts=report["counts"], no_change_accuracy=report["no_change_accuracy"],
                       subsets={s: report[s] for s in ("change", "no_change")})
        _write_json(args.json_out, out)
        print(f"wrote {args.json_out}")
    return 0


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    from changeagent.data.registry import dataset_ids  # cheap: ids only

    parser.add_argument("--pred", required=True, type=Path, metavar="PRED/",
                        help="a `changeagent predict` output folder, or a folder of <stem>_mask.png|tif / "
                             "<stem>.png|tif class-id masks")
    parser.add_argument("--labels", required=True, type=Path, metavar="LABELS/",
                        help="one label image per pair, <stem>.png|tif, in the dataset's published encoding")
    parser.add_argument("--format", choices=dataset_ids(), default=None,
                        help="how to read the labels (a dataset id): binary change 0/255 or 0/1 (levir_cd, "
                             "whu_cd, dsifn_cd), levir_mci's 3 classes, or custom with --classes. "
                             "Default: the head named by the predict records, else binary change")
    parser.add_argument("--classes", type=Path, metavar="DIR",
                        help="--format custom: the folder holding its classes.yaml")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write the scores (fractions) as JSON here")


def run_score(args: argparse.Namespace) -> int:
    from changeagent.metrics.score import score_folder

    result = score_folder(args.pred, args.labels, args.format, args.classes)
    pooled = result["pooled"]
    print(f"{result['files']} file(s), {result['pixels']:,} scored pixels, labels read as {result['format']}")
    keys: tuple[tuple[str, str], ...]
    if len(result["classes"]) == 2:
        keys = (("precision", "P"), ("recall", "R"), ("f1", "F1"), ("iou", "IoU"), ("oa", "OA"))
    else:
        keys = (("miou", "MIoU"), *((f"iou_{c}", f"IoU {c}") for c in result["classes"]), ("change_f1", "change F1"),
                ("oa", "OA"))
    width = max(len(r["name"]) for r in result["per_file"])
    print(f"  {'file':<{width}}" + "".join(f"{h:>12}" for _, h in keys))
    for row in [*result["per_file"], {"name": "pooled", **pooled}]:
        print(f"  {row['name']:<{width}}" + "".join(f"{_pct(row.get(k)):>12}" for k, _ in keys))
    print("(percent; pooled = one confusion matrix over every file's pixels; missing = undefined, "
          "e.g. no change in a file and none predicted)")
    if result["predictions_without_label"]:
        print(f"note: {len(result['predictions_without_label'])} prediction(s) without a label were not scored",
              file=sys.stderr)
    if args.json is not None:
        _write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
