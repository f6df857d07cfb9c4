"""`data check`: validate a LEVIR-MCI or SECOND-CC folder without stopping at the first problem.

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

from changeagent.data.constants import LEVIR_CLASSES, NO_CHANGE_SENTENCES, SECOND_CLASSES
from changeagent.data.io import (
    check_same_size,
    decode_levir_mask,
    decode_second_sem,
    levir_mask_encoding,
    read_image,
    read_label,
)
from changeagent.data.levir_mci import CaptionPairDataset, LevirMCI
from changeagent.data.second_cc import SecondCC
from changeagent.data.vocab import SPLITS, PairInfo, Vocabulary, read_karpathy
from changeagent.errors import ChangeAgentError

FORMATS: dict[str, type[CaptionPairDataset]] = {"levir-mci": LevirMCI, "second-cc": SecondCC}
MAX_EXAMPLES = 10  # names listed per kind of finding


def _decode_pair(fmt: str, files: dict[str, Path], mask_mode: str) -> tuple[dict[str, np.ndarray], str]:
    """Read and decode one pair; returns (class maps by key, LEVIR label encoding or '')."""
    arrays = {"A": read_image(files["A"]), "B": read_image(files["B"])}
    label_keys = ["label"] if fmt == "levir-mci" else ["sem_a", "sem_b"]
    for k in label_keys:
        arrays[k] = read_label(files[k])
    check_same_size(arrays, files)
    if fmt == "levir-mci":
        return {"label": decode_levir_mask(arrays["label"], files["label"], mask_mode)}, levir_mask_encoding(
            arrays["label"]
        )
    return {k: decode_second_sem(arrays[k], files[k]) for k in label_keys}, ""


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
    classes = LEVIR_CLASSES if fmt == "levir-mci" else SECOND_CLASSES
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
    if fmt == "levir-mci":
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


def format_report(report: dict[str, Any], max_errors: int = 20) -> str:
    """Human-readable text of a `check_dataset` report."""
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
    errors = report["errors"]
    lines.append(f"  problems: {len(errors)}")
    lines += [f"    - {e}" for e in errors[:max_errors]]
    if len(errors) > max_errors:
        lines.append(f"    ... and {len(errors) - max_errors} more (all listed in --json output)")
    return "\n".join(lines)
