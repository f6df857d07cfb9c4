"""`data check --format cdvqa|qag360k`: pairs, questions per type and per answer, every problem by name.

Report (JSON with `--json`)::

    {"format", "root", "skip_images": bool,
     "splits": {split: {"present": bool, "pairs" (image files questions use), "image_files" (on disk), "questions", "image_entries" (CDVQA), "inactive" (CDVQA),
                        "labels" (CDVQA: label1/ label2/ present), "per_type": {type: n},
                        "per_answer": {answer: n}, "per_type_answer": {type: {answer: n}},
                        "problems": {kind: n}}},
     "problems": {kind: n}, "errors": ["<kind>: <what, where>", ...]}

Problem kinds (reader.PROBLEMS): a question without an answer, an answer naming no listed question,
a question naming an unknown image entry, a missing image / label / answer mask file, an unreadable
answer mask, an empty question, an unknown type, an answer string outside the answer set or not of
its type, a question naming a class outside the dataset's classes, one the parser cannot read or reads
as another type, duplicate ids, malformed JSON entries. A split whose JSON is absent is reported as
absent (a root may hold only some splits); a root with none is an error.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from changeagent.data import cdvqa, qag360k
from changeagent.data.images import read_label
from changeagent.data.lexicon import lexicon_for
from changeagent.data.qa import QA_FORMATS
from changeagent.data.qa.answers import AnswerVocab
from changeagent.data.qa.reader import Problem, check_records, decode_answer_mask, tallies
from changeagent.errors import ChangeAgentError


def _split_report(fmt: str, root: Path, split: str, skip_images: bool, progress: bool) -> tuple[dict[str, Any],
                                                                                                list[Problem]]:
    answers = AnswerVocab.default()
    stats: dict[str, Any] = {"present": True}
    if fmt == "cdvqa":
        s = cdvqa.read_split(root, split)
        records, problems = s.records, list(s.problems)
        stats.update(image_entries=s.entries, inactive=s.inactive, labels=cdvqa.has_labels(root))
        where = cdvqa.split_paths(root, split)["questions"].name
    else:
        records, problems = qag360k.read_split(root, split)
        where = qag360k.json_path(root, split).name
    problems += check_records(records, lexicon_for(fmt), answers, where)
    if not skip_images:
        if fmt == "cdvqa":
            problems += cdvqa.file_problems(root, records, stats["labels"])
        else:
            files = qag360k.file_problems(root, split, records)
            problems += files
            absent = {p.qid for p in files if p.kind == "missing_mask"}
            for r in tqdm([r for r in records if r.qid not in absent], desc=f"masks {split}", unit="mask",
                          disable=not progress, leave=False):
                path = qag360k.pair_files(root, split, r)["mask"]
                try:
                    decode_answer_mask(read_label(path), path)
                except ChangeAgentError as e:
                    problems.append(Problem("bad_mask", str(e), r.qid))
    stats.update(tallies(records))
    folder = root / "im1" if fmt == "cdvqa" else root / split / "image" / "im1"
    if folder.is_dir():  # pairs on disk (questions may use only some)
        stats["image_files"] = sum(1 for p in folder.iterdir() if p.is_file())
    stats["problems"] = dict(Counter(p.kind for p in problems))
    return stats, problems


def check_qa(root: str | Path, fmt: str, skip_images: bool = False, progress: bool = True) -> dict[str, Any]:
    """Validate a CDVQA or QAG-360K root (see the module docstring for the report)."""
    if fmt not in QA_FORMATS:
        raise ChangeAgentError(f"QA format must be one of {QA_FORMATS}, got {fmt!r}")
    root = Path(root)
    if not root.is_dir():
        raise ChangeAgentError(f"dataset root {root} does not exist or is not a folder")
    splits = cdvqa.SPLITS if fmt == "cdvqa" else qag360k.SPLITS

    def present(split: str) -> bool:
        if fmt == "cdvqa":
            return any(p.is_file() for p in cdvqa.split_paths(root, split).values())
        return qag360k.json_path(root, split).is_file()

    report: dict[str, Any] = {"format": fmt, "root": str(root), "skip_images": skip_images, "splits": {}}
    errors: list[str] = []
    total: Counter[str] = Counter()
    for split in splits:
        if not present(split):
            report["splits"][split] = {"present": False}
            continue
        try:
            stats, problems = _split_report(fmt, root, split, skip_images, progress)
        except ChangeAgentError as e:  # a split file missing or unreadable: named, the others still checked
            report["splits"][split] = {"present": True, "problems": {"bad_json": 1}}
            errors.append(f"bad_json: {e}")
            total["bad_json"] += 1
            continue
        report["splits"][split] = stats
        errors += [str(p) for p in problems]
        total.update(p.kind for p in problems)
    if not any(s["present"] for s in report["splits"].values()):
        layout = "{Split}_{images,questions,answers}.json" if fmt == "cdvqa" else "<split>/json/<Split>.json"
        raise ChangeAgentError(f"{root} holds no {fmt} split ({layout})")
    report["problems"] = dict(total)
    report["errors"] = errors
    return report


def format_qa_report(report: dict[str, Any], max_errors: int = 20) -> str:
    """Human-readable text of a `check_qa` report."""
    from changeagent.data.check import _problem_lines

    skip = " (JSON only: image files not checked)" if report["skip_images"] else ""
    lines = [f"{report['format']} dataset at {report['root']}{skip}"]
    for split, s in report["splits"].items():
        if not s["present"]:
            lines.append(f"  {split}: absent")
            continue
        if "questions" not in s:
            lines.append(f"  {split}: unreadable")
            continue
        entries = f", {s['image_entries']} image entries" if "image_entries" in s else ""
        labels = ", with label1/label2" if s.get("labels") else ""
        disk = f" ({s['image_files']} image files on disk)" if "image_files" in s else ""
        lines.append(f"  {split}: {s['pairs']} pairs{disk}{entries}, {s['questions']} questions{labels}")
        lines.append("    per type: " + ", ".join(f"{t} {n}" for t, n in s["per_type"].items()))
        lines.append("    per answer: " + ", ".join(f"{a} {n}" for a, n in s["per_answer"].items()))
        if s["problems"]:
            lines.append("    problems: " + ", ".join(f"{k} {n}" for k, n in s["problems"].items()))
    return "\n".join(lines + _problem_lines(report["errors"], max_errors))
