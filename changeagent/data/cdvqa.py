"""CDVQA (Yuan et al., TGRS 2022): change questions on SECOND pairs (SPEC §8). Layout::

    ROOT/{Split}_images.json      {"images": [{id, file_name, questions_ids, res_x, res_y, active}]}
    ROOT/{Split}_questions.json   {"questions": [{id, img_id, type, question, answers_ids, active}]}
    ROOT/{Split}_answers.json     {"answers": [{id, question_id, answer, active}]}
    ROOT/im1/<file_name>  ROOT/im2/<file_name>          the SECOND pair
    ROOT/label1/<file_name>  ROOT/label2/<file_name>    optional: SECOND's land-cover maps

Splits: train -> `Train`, val -> `Val`, test -> `Test` (= Test1), test2 -> `Test2`. `img_id` is an
*entry* id of the images file (16 entries per image file, one per question group). Only `active`
entries count. With `label1/` `label2/` at ROOT the spec (`bind`) adds the SECOND maps (`sem`,
`change`) to the samples. `write_split` writes this schema (used by `data qa`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from changeagent.data.constants import SECOND_CLASSES
from changeagent.data.lexicon import lexicon_for
from changeagent.data.qa.answers import AnswerVocab
from changeagent.data.qa.reader import Problem, QARecord, QuestionPairDataset, check_records, raise_problems
from changeagent.data.second_cc import SECOND_COLOURS, SECOND_MEAN, SECOND_STD
from changeagent.data.spec import DatasetCfg, DatasetSpec
from changeagent.errors import ChangeAgentError
from changeagent.fileio import write_text_atomic
from changeagent.typed import opt

SPLITS = ("train", "val", "test", "test2")
SPLIT_FILES = {"train": "Train", "val": "Val", "test": "Test", "test2": "Test2"}
KINDS = ("images", "questions", "answers")


def split_paths(root: Path, split: str) -> dict[str, Path]:
    return {k: root / f"{SPLIT_FILES[split]}_{k}.json" for k in KINDS}


def _load(path: Path, key: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ChangeAgentError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ChangeAgentError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ChangeAgentError(f"{path} must be a JSON object with a {key!r} list")
    return data[key]


@dataclass
class CdvqaSplit:
    """A split's JSONs joined: active records, structural problems, image entry count."""

    records: list[QARecord]
    problems: list[Problem]
    entries: int
    inactive: int


def read_split(root: Path, split: str) -> CdvqaSplit:
    """Join the three JSONs of `split` by ids; every broken link is a named Problem (no exception)."""
    paths = split_paths(root, split)
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ChangeAgentError(f"CDVQA split {split}: missing {', '.join(missing)}")
    images, questions, answers = (_load(paths[k], k) for k in KINDS)
    problems: list[Problem] = []
    where = f"{paths['questions'].name}"

    def index(rows: list[dict[str, Any]], kind: str, fields: Sequence[str]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or any(f not in row for f in fields):
                problems.append(Problem("bad_json", f"{paths[kind].name} entry {i} lacks one of {list(fields)}"))
                continue
            if row["id"] in out:
                problems.append(Problem("duplicate_id", f"{paths[kind].name} has id {row['id']} twice"))
                continue
            out[row["id"]] = row
        return out

    img = index(images, "images", ("id", "file_name"))
    qs = index(questions, "questions", ("id", "img_id", "type", "question"))
    ans = index(answers, "answers", ("id", "question_id", "answer"))
    for a in ans.values():
        if a.get("active", True) is False:
            continue
        if a["question_id"] not in qs:
            problems.append(Problem("answer_without_question", f"answer {a['id']} of {paths['answers'].name} "
                                                               f"names question {a['question_id']}, which is not listed"))
    records: list[QARecord] = []
    inactive = 0
    for q in qs.values():
        if q.get("active", True) is False:
            inactive += 1
            continue
        entry = img.get(q["img_id"])
        if entry is None:
            problems.append(Problem("unknown_image_entry", f"question {q['id']} of {where} names image entry "
                                                           f"{q['img_id']}, which {paths['images'].name} lacks"))
            continue
        text = None
        for aid in q.get("answers_ids") or []:
            hit = ans.get(aid)
            if hit is not None and hit.get("active", True) is not False and hit["question_id"] == q["id"]:
                text = str(hit["answer"])
                break
        records.append(QARecord(int(q["id"]), str(entry["file_name"]), str(q["type"]), str(q["question"]), text,
                                int(entry["id"])))
    n_entries = sum(1 for e in img.values() if e.get("active", True) is not False)
    return CdvqaSplit(records, problems, n_entries, inactive)


def pair_files(root: Path, name: str, labels: bool) -> dict[str, Path]:
    f = {"A": root / "im1" / name, "B": root / "im2" / name}
    if labels:
        f.update(label1=root / "label1" / name, label2=root / "label2" / name)
    return f


def has_labels(root: Path) -> bool:
    return (root / "label1").is_dir() and (root / "label2").is_dir()


def file_problems(root: Path, records: Sequence[QARecord], labels: bool) -> list[Problem]:
    """A missing im1/im2 (or label1/label2) file, once per image file."""
    out = []
    for name in sorted({r.name for r in records}):
        for key, p in pair_files(root, name, labels).items():
            if not p.is_file():
                out.append(Problem("missing_label" if key.startswith("label") else "missing_image",
                                   f"{p} does not exist"))
    return out


@dataclass
class CdvqaCfg(DatasetCfg):
    train_split: str = opt("train", "split used for training (train, val, test = Test1, test2)")
    val_split: str = opt("val", "split used for validation")


class CDVQA(QuestionPairDataset):
    """One CDVQA split, one item per active question (samples: changeagent.data.qa.reader)."""

    dataset_id = "cdvqa"

    def __init__(self, root: str | Path, split: str = "train", vocab: Any = None, max_len: int = 41,
                 mean: Sequence[float] = SECOND_MEAN, std: Sequence[float] = SECOND_STD, transforms: Any = None,
                 canonical_no_change: bool = False, captions_file: str | None = None,
                 answers: AnswerVocab | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise ChangeAgentError(f"dataset root {root} does not exist or is not a folder")
        if split not in SPLITS:
            raise ChangeAgentError(f"CDVQA has splits {SPLITS}, got {split!r}")
        if captions_file:
            raise ChangeAgentError(f"CDVQA has no captions; remove captions_file={captions_file!r}")
        s = read_split(root, split)
        labels = has_labels(root)
        answers = answers or AnswerVocab.default()
        problems = s.problems + check_records(s.records, lexicon_for("cdvqa"), answers, split_paths(root, split)
                                              ["questions"].name) + file_problems(root, s.records, labels)
        raise_problems(problems, f"CDVQA {split} at {root}", "cdvqa", root)
        if not s.records:
            raise ChangeAgentError(f"CDVQA {split} at {root} has no active questions")
        super().__init__(root, s.records, lambda r: pair_files(root, r.name, labels), mean, std, transforms, answers)
        self.split = split


def write_split(out: Path, split: str, tiles: Iterable[tuple[str, list[list[tuple[str, str, str]]]]],
                res: str | None = None) -> dict[str, int]:
    """Write `{Split}_{images,questions,answers}.json` for tiles of (file name, groups of (type, question,
    answer)): one image entry per group, ids counted from 0 in order. Returns counts."""
    images: list[dict[str, Any]] = []
    questions: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    for name, groups in tiles:
        for group in groups:
            ids = []
            for qtype, text, ans in group:
                qid = len(questions)
                ids.append(qid)
                questions.append({"id": qid, "img_id": len(images), "type": qtype, "question": text,
                                  "answers_ids": [qid], "active": True})
                answers.append({"id": qid, "question_id": qid, "answer": ans, "active": True})
            images.append({"id": len(images), "file_name": name, "questions_ids": ids, "res_x": res, "res_y": res,
                           "active": True})
    paths = split_paths(out, split)
    for kind, rows in (("images", images), ("questions", questions), ("answers", answers)):
        write_text_atomic(paths[kind], json.dumps({kind: rows}) + "\n")
    return {"image_entries": len(images), "questions": len(questions)}


def _write_synth(root: Path, pairs: list[dict[str, Any]], seed: int) -> None:
    """SECOND-style synthetic pairs -> a CDVQA root: im1/ im2/ label1/ label2/ and derived questions."""
    import numpy as np

    from changeagent.data.qa.derive import as_rows, derive
    from changeagent.data.synth.layouts import save_png

    lut = np.asarray(SECOND_COLOURS, np.uint8)
    by_split: dict[str, list[tuple[str, list[list[tuple[str, str, str]]]]]] = {}
    for i, p in enumerate(pairs):
        split = "train" if p["split"] in ("train", "restval") else p["split"]
        name = f"{i + 1:05d}.png"
        save_png(root / "im1" / name, p["a"])
        save_png(root / "im2" / name, p["b"])
        save_png(root / "label1" / name, lut[p["sem"][0]])
        save_png(root / "label2" / name, lut[p["sem"][1]])
        groups = derive(p["sem"], lexicon_for("cdvqa"), seed, f"{split}/{name}")
        by_split.setdefault(split, []).append((name, as_rows(groups)))
    for split, tiles in by_split.items():
        write_split(root, split, tiles)


def _synth(out: Path, n_train: int, n_val: int, n_test: int, size: int, seed: int, overwrite: bool = False,
           progress: bool = True, **_: Any) -> dict[str, Any]:
    from changeagent.data.synth.layouts import relayout

    return relayout("second-cc", out, lambda root, pairs: _write_synth(root, pairs, seed), n_train, n_val, n_test,
                    size, seed, overwrite, progress)


def _bind(spec: DatasetSpec, root: Path) -> DatasetSpec:
    """With label1/ label2/ at root: the SECOND maps are targets too (dates 2, SECOND protocol)."""
    if not has_labels(root):
        return spec
    return replace(spec, targets=(*spec.targets, "change", "sem"), dates=2, metrics=("scd",))


SPEC = DatasetSpec(
    id="cdvqa",
    title="CDVQA",
    reader=CDVQA,
    targets=("questions",),
    classes=SECOND_CLASSES,
    palette=SECOND_COLOURS,
    dates=0,
    mean=SECOND_MEAN,
    std=SECOND_STD,
    splits=SPLITS,
    layout="{Train,Val,Test,Test2}_{images,questions,answers}.json + im1/ im2/ [label1/ label2/] (SECOND pairs)",
    config=CdvqaCfg,
    synth=_synth,
    bind=_bind,
)
