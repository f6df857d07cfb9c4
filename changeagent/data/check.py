"""`data check`: validate a dataset folder without stopping at the first problem.

LEVIR-MCI and SECOND-CC get the detailed caption/label report below; every other registered dataset
(`changeagent.data.registry`) is checked by reading each pair of each split through its own reader
(`check_layout`), so the errors are exactly those training would hit, all listed at once.

Missing root or caption file raise `ChangeAgentError`; every other problem (bad caption entry,
missing split folder or file, unreadable image, size mismatch, illegal label value) is collected in
`errors`. Changeflag/mask disagreements are expected in the real data (~5 % of LEVIR-MCI train) and
are reported, not counted as errors.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from changeagent.data.constants import NO_CHANGE_SENTENCES
from changeagent.data.levir_mci import CaptionPairDataset, LevirMCI
from changeagent.data.registry import get_spec
from changeagent.data.second_cc import SecondCC
from changeagent.data.vocab import SPLITS, PairInfo, Vocabulary, read_karpathy
from changeagent.errors import ChangeAgentError

FORMATS: dict[str, type[CaptionPairDataset]] = {"levir-mci": LevirMCI, "second-cc": SecondCC}
MAX_EXAMPLES = 10  # names listed per kind of finding


def _decode_pair(fmt: str, files: dict[str, Path], mask_mode: str) -> tuple[dict[str, np.ndarray], str]:
    """Read and decode one pair; returns (class maps by key, label encoding or '')."""
    return FORMATS[fmt].decode_files(files, mask_mode)


def _caption_stats(pairs: list[PairInfo], vocab: Vocabulary | None) -> dict[str, Any]:
    lengths = [len(t) for p in pairs for t in p.tokens]
    tokens = [w for p in pairs for t in p.tokens for w in t]
    out: dict[str, Any] = {
        "captions": len(lengths),
        "tokens_min": min(lengths, default=0),
        "tokens_mean": round(float(np.mean(lengths)), 3) if lengths else 0.0,
        "tokens_max": max(lengths, default=0),
        "distinct_words": len(set(tokens)),
        "no_change_pairs": sum(all(c in NO_CHANGE_SENTENCES for c in p.captions) for p in pairs),
        "changeflag_0_pairs": sum(p.changeflag == 0 for p in pairs),
        "changeflag_absent_pairs": sum(p.changeflag is None for p in pairs),
    }
    if vocab is not None and tokens:
        out["oov_rate"] = round(sum(w not in vocab for w in tokens) / len(tokens), 6)
    return out


def _check_split(
    fmt: str, root: Path, split: str, pairs: list[PairInfo], mask_mode: str, errors: list[str], progress: bool
) -> dict[str, Any]:
    cls = FORMATS[fmt]
    classes = get_spec(cls.dataset_id).classes
    stats: dict[str, Any] = {"pairs": len(pairs), "missing_files": 0, "unreadable_files": 0,
                             "size_mismatches": 0, "label_errors": 0, "flag_mask_disagreements": 0,
                             "disagreement_examples": []}
    missing_folders = [f for f in cls.split_folders(root, split) if not f.is_dir()]
    if missing_folders:
        errors.append(f"split folder {missing_folders[0]} does not exist ({len(pairs)} {split} pairs listed)")
        stats["missing_files"] = len(pairs)
        return stats
    pixels = np.zeros(len(classes), dtype=np.int64)
    encodings: Counter[str] = Counter()
    for info in tqdm(pairs, desc=f"check {split}", unit="pair", disable=not progress, leave=False):
        files = cls.pair_files(root, info)
        absent = [p for p in files.values() if not p.is_file()]
        if absent:
            stats["missing_files"] += len(absent)
            errors.extend(f"missing file {p}" for p in absent)
            continue
        try:
            maps, encoding = _decode_pair(fmt, files, mask_mode)
        except ChangeAgentError as e:
            msg = str(e)
            key = ("size_mismatches" if "differ in size" in msg else
                   "label_errors" if "illegal" in msg or "mixes" in msg or "single-channel" in msg else
                   "unreadable_files")
            stats[key] += 1
            errors.append(msg)
            continue
        if encoding:
            encodings[encoding] += 1
        for m in maps.values():
            pixels += np.bincount(m.ravel(), minlength=len(classes))[: len(classes)]
        changed = int(any(bool((m > 0).any()) for m in maps.values()))
        if info.changeflag is not None and info.changeflag != changed:
            stats["flag_mask_disagreements"] += 1
            if len(stats["disagreement_examples"]) < MAX_EXAMPLES:
                stats["disagreement_examples"].append(info.name)
    total = int(pixels.sum())
    stats["class_fractions"] = {c: round(int(n) / total, 6) if total else 0.0 for c, n in zip(classes, pixels)}
    if encodings:
        stats["mask_encodings"] = dict(encodings)
    return stats


def check_dataset(
    root: str | Path,
    fmt: str,
    captions_file: str | Path | None = None,
    mask_mode: str = "auto",
    min_count: int = 5,
    progress: bool = True,
) -> dict[str, Any]:
    """Validate a dataset folder; returns the report dict (see docs/data.md for the schema)."""
    if fmt not in FORMATS:
        raise ChangeAgentError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    root = Path(root)
    if not root.is_dir():
        raise ChangeAgentError(f"dataset root {root} does not exist or is not a folder")
    cls = FORMATS[fmt]
    caption_path = root / (captions_file or cls.default_captions_file)
    if not caption_path.is_file():
        raise ChangeAgentError(f"caption file {caption_path} does not exist")
    errors: list[str] = []
    all_pairs = read_karpathy(caption_path, errors)
    by_split = {s: [p for p in all_pairs if p.split == s] for s in SPLITS}
    train_tokens = [t for p in by_split["train"] for t in p.tokens]
    vocab = Vocabulary.build(train_tokens, min_count=min_count) if train_tokens else None
    report: dict[str, Any] = {"format": fmt, "root": str(root), "captions_file": str(caption_path),
                              "splits": {}, "flag_mask_disagreements": 0, "disagreement_examples": []}
    for split in SPLITS:
        if not by_split[split]:
            report["splits"][split] = {"pairs": 0}
            continue
        stats = _check_split(fmt, root, split, by_split[split], mask_mode, errors, progress)
        stats.update(_caption_stats(by_split[split], vocab))
        report["splits"][split] = stats
        report["flag_mask_disagreements"] += stats["flag_mask_disagreements"]
        report["disagreement_examples"] += [f"{split}/{n}" for n in stats["disagreement_examples"]]
    report["disagreement_examples"] = report["disagreement_examples"][:MAX_EXAMPLES]
    report["vocabulary"] = {"rule": f"train captions, count > {min_count}", "size": len(vocab) if vocab else 0}
    if not all_pairs:
        errors.append(f"caption file {caption_path} lists no usable pairs")
    report["errors"] = errors
    return report


def check_layout(root: str | Path, name: str, options: dict[str, Any] | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Read every pair of every split of dataset `name` at `root` through its registry reader."""
    from changeagent.data.registry import bind_spec

    root = Path(root)
    if not root.is_dir():
        raise ChangeAgentError(f"dataset root {root} does not exist or is not a folder")
    errors: list[str] = []
    try:
        spec = bind_spec(name, root)
    except ChangeAgentError as e:
        return {"format": name, "root": str(root), "splits": {}, "errors": [str(e)]}
    report: dict[str, Any] = {"format": name, "root": str(root), "layout": spec.layout,
                              "targets": list(spec.targets), "classes": list(spec.classes), "splits": {}}
    for split in spec.splits:
        try:
            ds = spec.reader(root, split=split, **(options or {}))
        except ChangeAgentError as e:
            errors.append(f"{split}: {e}")
            report["splits"][split] = {"pairs": 0}
            continue
        k = max(len(spec.classes), 2)
        pixels = np.zeros(k, np.int64)
        stats: dict[str, Any] = {"pairs": len(ds), "bad_pairs": 0, "change_pairs": 0, "with_captions": 0}
        for i in tqdm(range(len(ds)), desc=f"check {split}", unit="pair", disable=not progress, leave=False):
            try:
                item = ds[i]
            except ChangeAgentError as e:
                stats["bad_pairs"] += 1
                errors.append(str(e))
                continue
            stats["change_pairs"] += int(item.get("changeflag", 0) == 1)
            stats["with_captions"] += int(bool(item.get("captions")))
            target = item.get("mask", item.get("sem", item.get("change")))
            if target is not None:
                t = np.asarray(target).ravel()
                pixels += np.bincount(t[t < k], minlength=k)[:k]
        total = int(pixels.sum())
        if total:
            names = spec.classes if len(spec.classes) == k else ("no_change", "change")
            stats["class_fractions"] = {c: round(int(n) / total, 6) for c, n in zip(names, pixels)}
        report["splits"][split] = stats
    report["errors"] = errors
    return report


def format_layout_report(report: dict[str, Any], max_errors: int = 20) -> str:
    """Human-readable text of a `check_layout` report."""
    lines = [f"{report['format']} dataset at {report['root']}"]
    if "layout" in report:
        lines.append(f"  layout: {report['layout']}; targets: {', '.join(report['targets'])}")
    for split, s in report["splits"].items():
        extra = f", {s['bad_pairs']} unreadable, {s['change_pairs']} with change, {s['with_captions']} with " \
                f"captions" if "bad_pairs" in s else ""
        lines.append(f"  {split}: {s['pairs']} pairs{extra}")
        if "class_fractions" in s:
            lines.append("    pixels: " + ", ".join(f"{c} {100 * v:.2f}%" for c, v in s["class_fractions"].items()))
    return "\n".join(lines + _problem_lines(report["errors"], max_errors))


def _problem_lines(errors: list[str], max_errors: int) -> list[str]:
    """The report's closing lines: the problem count and the first `max_errors` problems."""
    lines = [f"  problems: {len(errors)}", *(f"    - {e}" for e in errors[:max_errors])]
    if len(errors) > max_errors:
        lines.append(f"    ... and {len(errors) - max_errors} more (all listed in --json output)")
    return lines


def format_report(report: dict[str, Any], max_errors: int = 20) -> str:
    """Human-readable text of a `check_dataset` report."""
    if "captions_file" not in report:
        return format_layout_report(report, max_errors)
    lines = [f"{report['format']} dataset at {report['root']} (captions: {report['captions_file']})"]
    for split, s in report["splits"].items():
        lines.append(f"  {split}: {s['pairs']} pairs")
        if not s["pairs"] or "captions" not in s:
            continue
        lines.append(f"    files: {s['missing_files']} missing, {s['unreadable_files']} unreadable, "
                     f"{s['size_mismatches']} size mismatches, {s['label_errors']} bad labels")
        lines.append(f"    changeflag/mask disagreements: {s['flag_mask_disagreements']}"
                     + (f" (e.g. {', '.join(s['disagreement_examples'][:3])})" if s["disagreement_examples"] else ""))
        oov = f", OOV vs train vocab {100 * s['oov_rate']:.2f}%" if "oov_rate" in s else ""
        lines.append(f"    captions: {s['captions']}, tokens {s['tokens_min']}-{s['tokens_max']} "
                     f"(mean {s['tokens_mean']}), {s['distinct_words']} distinct words{oov}, "
                     f"{s['no_change_pairs']} with the no-change sentences, changeflag 0: "
                     f"{s['changeflag_0_pairs']}, absent: {s['changeflag_absent_pairs']}")
        if "class_fractions" in s:
            fr = ", ".join(f"{c} {100 * v:.2f}%" for c, v in s["class_fractions"].items())
            lines.append(f"    pixels: {fr}")
        if s.get("mask_encodings"):
            lines.append(f"    mask encodings: {s['mask_encodings']}")
    lines.append(f"  vocabulary ({report['vocabulary']['rule']}): {report['vocabulary']['size']} entries")
    return "\n".join(lines + _problem_lines(report["errors"], max_errors))
