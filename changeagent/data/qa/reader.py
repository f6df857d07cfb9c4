"""What the QA readers (`data/cdvqa.py`, `data/qag360k.py`) share: question records, the consistency
checks `data check` reports by name, and the per-question map-style dataset.

A sample (one per question; docs/data.md "QA samples"):

| key | type / shape | notes |
|---|---|---|
| `image` | float32 `[2, 3, H, W]` | date A (im1) then date B (im2), normalised |
| `question` | `str` | the question text as published |
| `question_type` | `str` | the dataset's type, e.g. `change_ratio_types` (rules.QUESTION_TYPES) |
| `answer` | `str` | the answer string, e.g. `NVG_surface`, `0_to_10` |
| `answer_id` | `int` | its index in the answer vocabulary (`answers.AnswerVocab`, default `ANSWERS`) |
| `question_id` | `int` | the question's id in the dataset |
| `answer_mask` | int64 `[H, W]` 0/1 | QAG-360K only: the answer's region (all 0 when it has none) |
| `sem` | int64 `[2, H, W]` | CDVQA with `label1/` `label2/`: SECOND land cover per date (0 unchanged) |
| `change` | int64 `[H, W]` | with `sem`: 0/1 (sem A != unchanged) |
| `dataset`, `name` | `str` | registry id; the image file name |

Transforms: flips, rotations and photometric jitter keep every stored answer right (the CDVQA and
QAG-360K types count pixels, positions are not asked); a crop or an affine warp would not, so a
transform with either is refused.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from changeagent.data.images import check_same_size, read_image, read_label
from changeagent.data.labels import decode_second_sem
from changeagent.data.lexicon import ClassLexicon
from changeagent.data.qa.answers import TYPE_ANSWERS, AnswerVocab
from changeagent.data.qa.parse import try_parse
from changeagent.data.qa.rules import QUESTION_TYPES
from changeagent.errors import ChangeAgentError

# problem kinds `data check` reports, by name
PROBLEMS = ("bad_json", "duplicate_id", "unknown_image_entry", "question_without_answer", "answer_without_question",
            "empty_question", "unknown_type", "unknown_answer", "answer_not_of_type", "unknown_class",
            "unparsed_question", "type_mismatch", "missing_image", "missing_label", "missing_mask", "bad_mask")


@dataclass(frozen=True)
class Problem:
    kind: str  # one of PROBLEMS
    message: str  # "<what, where>"
    qid: int | None = None  # the question it concerns, if one

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass(frozen=True)
class QARecord:
    """One active question: id, its image file, type, text, answer (None: none found), image entry id."""

    qid: int
    name: str
    type: str
    question: str
    answer: str | None
    entry: int | None = None


def check_records(records: Sequence[QARecord], lexicon: ClassLexicon, answers: AnswerVocab, where: str,
                  parse: bool = True) -> list[Problem]:
    """Per-question consistency: empty text, unknown type, missing/unknown answer, an answer the type
    cannot have, a class the lexicon does not know, a text the parser cannot read or reads as another type."""
    out: list[Problem] = []
    for r in records:
        at = f"question {r.qid} of {where} ({r.name})"
        if not r.question.strip():
            out.append(Problem("empty_question", f"{at} has an empty text"))
            continue
        if r.type not in QUESTION_TYPES:
            out.append(Problem("unknown_type", f"{at} has type {r.type!r}; known: {', '.join(QUESTION_TYPES)}"))
        if r.answer is None:
            out.append(Problem("question_without_answer", f"{at} has no answer"))
        elif r.answer not in answers:
            out.append(Problem("unknown_answer", f"{at} has answer {r.answer!r}, not in the answer set"))
        elif r.type in TYPE_ANSWERS and r.answer not in TYPE_ANSWERS[r.type]:
            out.append(Problem("answer_not_of_type", f"{at}: answer {r.answer!r} is not a {r.type} answer"))
        if not parse:
            continue
        parsed = try_parse(r.question, lexicon)
        if isinstance(parsed, Exception):
            kind = "unknown_class" if getattr(parsed, "kind", "") in ("unknown_class", "no_class") else "unparsed_question"
            out.append(Problem(kind, f"{at}: {parsed}"))
        elif r.type in QUESTION_TYPES and parsed.type != r.type:
            out.append(Problem("type_mismatch", f"{at}: {r.question!r} reads as {parsed.type}, listed as {r.type}"))
    return out


def tallies(records: Sequence[QARecord]) -> dict[str, Any]:
    """Questions per type and per answer (and per type and answer), image files."""
    per_type = Counter(r.type for r in records)
    per_answer = Counter(r.answer for r in records if r.answer is not None)
    per_type_answer: dict[str, dict[str, int]] = {}
    for r in records:
        if r.answer is not None:
            d = per_type_answer.setdefault(r.type, {})
            d[r.answer] = d.get(r.answer, 0) + 1
    return {"pairs": len({r.name for r in records}), "questions": len(records),
            "per_type": dict(sorted(per_type.items())), "per_answer": dict(per_answer.most_common()),
            "per_type_answer": {t: dict(sorted(d.items(), key=lambda kv: -kv[1])) for t, d in sorted(per_type_answer.items())}}


def raise_problems(problems: Sequence[Problem], what: str, fmt: str, root: Path) -> None:
    """A reader's refusal: the count, the first few by name, and the command listing them all."""
    if not problems:
        return
    kinds = Counter(p.kind for p in problems)
    first = "; ".join(str(p) for p in problems[:3])
    raise ChangeAgentError(f"{what}: {len(problems)} problem(s) ({', '.join(f'{k} {n}' for k, n in kinds.items())}), "
                           f"e.g. {first}; `changeagent data check {root} --format {fmt}` lists them all")


def refuse_answer_changing(transforms: Any, dataset: str) -> None:
    """Crops and affine warps change pixel counts, so the stored answers would be wrong."""
    if transforms is None:
        return
    if getattr(transforms, "crop", None) is not None or getattr(transforms, "geometric", None) is not None:
        raise ChangeAgentError(f"{dataset}: data.augment.crop / affine change the areas its stored answers count; "
                               "use flips, rotations and colour jitter only")


class QuestionPairDataset(Dataset):
    """One item per question: the image pair, the question and its answer (the table above)."""

    dataset_id = ""

    def __init__(self, root: Path, records: list[QARecord], files: Callable[[QARecord], dict[str, Path]],
                 mean: Sequence[float], std: Sequence[float], transforms: Any, answers: AnswerVocab | None) -> None:
        self.root = root
        self.records = records
        self._files = files
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ChangeAgentError(f"mean {tuple(mean)} and std {tuple(std)} must have equal length, std > 0")
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        refuse_answer_changing(transforms, self.dataset_id)
        self.transforms = transforms
        self.answers = answers or AnswerVocab.default()

    def __len__(self) -> int:
        return len(self.records)

    def files(self, index: int) -> dict[str, Path]:
        """Paths of question `index`: `A`, `B`, and `label1`/`label2` or `mask` where the layout has them."""
        return self._files(self.records[index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        r = self.records[index]
        f = self.files(index)
        arrays = {"A": read_image(f["A"]), "B": read_image(f["B"])}
        masks: dict[str, np.ndarray] = {}
        if "label1" in f:
            arrays.update(label1=read_label(f["label1"]), label2=read_label(f["label2"]))
        if "mask" in f:
            arrays["mask"] = read_label(f["mask"])
        check_same_size(arrays, f)
        if "label1" in f:
            masks = {k: decode_second_sem(arrays[k], f[k]) for k in ("label1", "label2")}
        if "mask" in f:
            masks["mask"] = decode_answer_mask(arrays["mask"], f["mask"])
        a, b = arrays["A"], arrays["B"]
        if self.transforms is not None:
            out = self.transforms({"image_a": a, "image_b": b, "masks": masks, "captions": []})
            a, b, masks = out["image_a"], out["image_b"], out["masks"]
        img = np.stack([a, b]).transpose(0, 3, 1, 2).astype(np.float32)
        img = (img / 255.0 - self.mean.reshape(1, -1, 1, 1)) / self.std.reshape(1, -1, 1, 1)
        sample: dict[str, Any] = {
            "image": torch.from_numpy(img.astype(np.float32)), "question": r.question, "question_type": r.type,
            "answer": r.answer, "answer_id": self.answers.index(r.answer, f"question {r.qid}"),  # type: ignore[arg-type]
            "question_id": r.qid, "dataset": self.dataset_id, "name": r.name}
        if "label1" in masks:
            sem = np.stack([masks["label1"], masks["label2"]]).astype(np.int64)
            sample["sem"] = torch.from_numpy(sem)
            sample["change"] = torch.from_numpy((sem[0] > 0).astype(np.int64))
        if "mask" in masks:
            sample["answer_mask"] = torch.from_numpy(np.asarray(masks["mask"]).astype(np.int64))
        return sample


def decode_answer_mask(label: np.ndarray, path: Path | str) -> np.ndarray:
    """QAG-360K answer mask (0/255; 0/1 accepted; grey or equal channels) -> int64 [H, W] 0/1."""
    m = label
    if m.ndim == 3:
        if not (m == m[..., :1]).all():
            raise ChangeAgentError(f"answer mask {path} is a colour image; expected grey 0/255")
        m = m[..., 0]
    values = set(np.unique(m).tolist())
    if not values <= {0, 255} and not values <= {0, 1}:
        raise ChangeAgentError(f"answer mask {path} holds values {sorted(values)[:6]}; expected 0/255 (or 0/1)")
    return (m > 0).astype(np.int64)
