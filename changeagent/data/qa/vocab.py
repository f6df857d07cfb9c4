"""The question vocabulary of the QA head: a closed word list built from the templates and a dataset's questions.

`tokenize_question(text)`: lower case, words of letters/digits joined by `-` or `_` kept whole
("non-vegetated", "pre-change", "nvg_surface"), every other character a separator (`?` dropped).
`QuestionVocab.build(texts, lexicons=...)` = `<pad>` (0), `<unk>` (1), then the sorted words of
every template rendering (`templates.all_texts`) of the given label spaces plus the words of `texts`
(counted more than `min_count` times; 0 keeps all). `encode(text, max_len)` -> ids (unknown words ->
`<unk>`, cut at max_len). Saved with a model as `to_json()` (`{"words": [...]}`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from changeagent.data.lexicon import lexicon_for
from changeagent.errors import ChangeAgentError
from changeagent.fileio import write_text_atomic

PAD, UNK = 0, 1
Q_SPECIALS = ("<pad>", "<unk>")
_WORD = re.compile(r"[a-z0-9]+(?:[-_'][a-z0-9]+)*")


def tokenize_question(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class QuestionVocab:
    words: tuple[str, ...]  # index = id; Q_SPECIALS first

    def __post_init__(self) -> None:
        if tuple(self.words[:2]) != Q_SPECIALS or len(set(self.words)) != len(self.words):
            raise ChangeAgentError(f"question vocabulary must start with {Q_SPECIALS} and hold distinct words")

    @classmethod
    def build(cls, texts: Iterable[str] = (), lexicons: Sequence[str] = ("second", "levir", "qag360k"),
              min_count: int = 0) -> QuestionVocab:
        from changeagent.data.qa.templates import all_texts

        words = {w for lex in lexicons for t in all_texts(lexicon_for(lex)) for w in tokenize_question(t)}
        counts = Counter(w for t in texts for w in tokenize_question(t))
        words |= {w for w, n in counts.items() if n > min_count}
        return cls((*Q_SPECIALS, *sorted(words - set(Q_SPECIALS))))

    def __len__(self) -> int:
        return len(self.words)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """Ids of the words of `text` (at least one id: an empty text is [<unk>])."""
        idx = self._index
        ids = [idx.get(w, UNK) for w in tokenize_question(text)] or [UNK]
        return ids[:max_len] if max_len else ids

    def unknown_rate(self, texts: Iterable[str]) -> float:
        idx = self._index
        words = [w for t in texts for w in tokenize_question(t)]
        return sum(w not in idx for w in words) / len(words) if words else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"words": list(self.words)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> QuestionVocab:
        d = json.loads(data) if isinstance(data, str) else data
        if not isinstance(d, dict) or not isinstance(d.get("words"), list) or \
                not all(isinstance(w, str) for w in d["words"]):
            raise ChangeAgentError("question vocabulary JSON must be {\"words\": [str, ...]}")
        return cls(tuple(d["words"]))

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_json()) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> QuestionVocab:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ChangeAgentError(f"cannot read question vocabulary {path}: {e.strerror}") from None
        try:
            return cls.from_json(text)
        except (json.JSONDecodeError, ChangeAgentError) as e:
            raise ChangeAgentError(f"question vocabulary {path}: {e}") from None
