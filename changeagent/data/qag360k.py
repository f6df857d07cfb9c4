"""QAG-360K (VisTA, "Show me what and where has changed?"): questions, answers and answer masks (SPEC §8).

Layout (one folder per split; a root may hold only some)::

    ROOT/train/json/Train.json     {"question": [{id, img_id, type, question, answer}]}
    ROOT/val/json/Val.json  ROOT/test/json/Test.json
    ROOT/<split>/image/im1/<img_id>  ROOT/<split>/image/im2/<img_id>     512x512 RGB
    ROOT/<split>/mask/<id>.png     the answer's region, 0/255 (empty when the answer has no region)

`img_id` is the image *file name*. Types: CDVQA's plus `change_from_what`; answers add `green_house`,
`road`, `bridge`, `others`. The public sample has a question without a mask file: the reader refuses
such a split unless `data.qag360k.missing_masks: skip` (those questions are then left out, and counted).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from changeagent.data.lexicon import lexicon_for
from changeagent.data.qa.answers import AnswerVocab
from changeagent.data.qa.reader import Problem, QARecord, QuestionPairDataset, check_records, raise_problems
from changeagent.data.second_cc import SECOND_MEAN, SECOND_STD
from changeagent.data.spec import DatasetCfg, DatasetSpec
from changeagent.errors import ChangeAgentError
from changeagent.typed import opt

SPLITS = ("train", "val", "test")
SPLIT_FILES = {"train": "Train", "val": "Val", "test": "Test"}
MISSING_MASKS = ("error", "skip")


def json_path(root: Path, split: str) -> Path:
    return root / split / "json" / f"{SPLIT_FILES[split]}.json"


def read_split(root: Path, split: str) -> tuple[list[QARecord], list[Problem]]:
    """The questions of `split` and the structural problems of its JSON."""
    path = json_path(root, split)
    if not path.is_file():
        raise ChangeAgentError(f"QAG-360K split {split}: missing {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ChangeAgentError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ChangeAgentError(f"{path} is not valid JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(data, dict) or not isinstance(data.get("question"), list):
        raise ChangeAgentError(f"{path} must be a JSON object with a 'question' list")
    records, problems, seen = [], [], set()
    for i, q in enumerate(data["question"]):
        if not isinstance(q, dict) or any(k not in q for k in ("id", "img_id", "type", "question")):
            problems.append(Problem("bad_json", f"{path.name} entry {i} lacks one of id, img_id, type, question"))
            continue
        if q["id"] in seen:
            problems.append(Problem("duplicate_id", f"{path.name} has question id {q['id']} twice"))
            continue
        seen.add(q["id"])
        ans = q.get("answer")
        records.append(QARecord(int(q["id"]), str(q["img_id"]), str(q["type"]), str(q["question"]),
                                None if ans is None or ans == "" else str(ans)))
    return records, problems


def pair_files(root: Path, split: str, r: QARecord) -> dict[str, Path]:
    base = root / split
    return {"A": base / "image" / "im1" / r.name, "B": base / "image" / "im2" / r.name,
            "mask": base / "mask" / f"{r.qid}.png"}


def file_problems(root: Path, split: str, records: Sequence[QARecord]) -> list[Problem]:
    """Missing im1/im2 files (once per image) and missing answer masks (per question)."""
    out, seen = [], set()
    for r in records:
        for key, p in pair_files(root, split, r).items():
            if key == "mask":
                if not p.is_file():
                    out.append(Problem("missing_mask", f"question {r.qid} of {split} ({r.name}): {p} does not exist",
                                       r.qid))
            elif p not in seen:
                seen.add(p)
                if not p.is_file():
                    out.append(Problem("missing_image", f"{p} does not exist"))
    return out


@dataclass
class Qag360kCfg(DatasetCfg):
    missing_masks: str = opt("error", "a question whose answer mask file is absent: error, or skip the question",
                             choices=MISSING_MASKS)


class QAG360K(QuestionPairDataset):
    """One QAG-360K split, one item per question with its answer mask (samples: changeagent.data.qa.reader)."""

    dataset_id = "qag360k"

    def __init__(self, root: str | Path, split: str = "train", vocab: Any = None, max_len: int = 41,
                 mean: Sequence[float] = SECOND_MEAN, std: Sequence[float] = SECOND_STD, transforms: Any = None,
                 canonical_no_change: bool = False, captions_file: str | None = None,
                 answers: AnswerVocab | None = None, missing_masks: str = "error") -> None:
        root = Path(root)
        if not root.is_dir():
            raise ChangeAgentError(f"dataset root {root} does not exist or is not a folder")
        if split not in SPLITS:
            raise ChangeAgentError(f"QAG-360K has splits {SPLITS}, got {split!r}")
        if captions_file:
            raise ChangeAgentError(f"QAG-360K has no captions; remove captions_file={captions_file!r}")
        if missing_masks not in MISSING_MASKS:
            raise ChangeAgentError(f"missing_masks must be one of {MISSING_MASKS}, got {missing_masks!r}")
        records, problems = read_split(root, split)
        answers = answers or AnswerVocab.default()
        problems += check_records(records, lexicon_for("qag360k"), answers, json_path(root, split).name)
        files = file_problems(root, split, records)
        self.skipped: list[int] = []
        if missing_masks == "skip":
            gone = {p.qid for p in files if p.kind == "missing_mask"}
            self.skipped = sorted(r.qid for r in records if r.qid in gone)
            records = [r for r in records if r.qid not in gone]
            files = [p for p in files if p.kind != "missing_mask"]
        raise_problems(problems + files, f"QAG-360K {split} at {root}", "qag360k", root)
        if not records:
            raise ChangeAgentError(f"QAG-360K {split} at {root} has no questions")
        super().__init__(root, records, lambda r: pair_files(root, split, r), mean, std, transforms, answers)
        self.split = split


SPEC = DatasetSpec(
    id="qag360k",
    title="QAG-360K",
    reader=QAG360K,
    targets=("questions", "answer_masks"),
    dates=0,
    mean=SECOND_MEAN,
    std=SECOND_STD,
    splits=SPLITS,
    layout="{train,val,test}/json/{Train,Val,Test}.json + <split>/image/{im1,im2}/ + <split>/mask/<id>.png",
    config=Qag360kCfg,
)
