"""Caption tokenisation, the vocabulary, and reading Karpathy-style caption JSON.

Vocabulary rule (the reference's): count tokens, keep a word when its count is *greater than*
`min_count`, ids 0..3 for `<NULL> <UNK> <START> <END>`, then the kept words in Python `sorted()`
order. Our default counts the training split only; counting train + val + test with `min_count=5`
reproduces the reference LEVIR-MCI `vocab.json` byte for byte.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from changeagent.data.constants import END, NULL, SPECIALS, START, UNK
from changeagent.errors import ChangeAgentError
from changeagent.fileio import write_text_atomic

SPLITS = ("train", "val", "test")
REFERENCE_SPLITS = SPLITS  # the reference vocabulary counts every split (test included)
NUM_CAPTIONS = 5


def tokenize(raw: str) -> list[str]:
    """SPEC §1.1: lower-case; `,` and `;` become tokens; `.` and `?` are deleted; split on whitespace."""
    s = raw.lower().replace(",", " , ").replace(";", " ; ").replace(".", "").replace("?", "")
    return s.split()


def normalize_split(split: str) -> str:
    """Karpathy `restval` is training data."""
    return "train" if split == "restval" else split


class Vocabulary:
    """Word <-> id mapping with the four specials at ids 0..3 (`changeagent.data.constants`)."""

    def __init__(self, word_to_id: dict[str, int]):
        for i, special in enumerate(SPECIALS):
            if word_to_id.get(special) != i:
                raise ChangeAgentError(f"vocabulary must map {special} to {i}, got {word_to_id.get(special)!r}")
        ids = sorted(word_to_id.values())
        if ids != list(range(len(ids))):
            raise ChangeAgentError("vocabulary ids must be 0..N-1 without gaps or duplicates")
        self.word_to_id = dict(word_to_id)
        self.id_to_word = {i: w for w, i in self.word_to_id.items()}

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], min_count: int = 5) -> Vocabulary:
        """Keep words counted more than `min_count` times, in `sorted()` order after the specials."""
        counts = Counter(t for tokens in token_lists for t in tokens)
        word_to_id = {s: i for i, s in enumerate(SPECIALS)}
        for word in sorted(counts):
            if counts[word] > min_count and word not in word_to_id:
                word_to_id[word] = len(word_to_id)
        return cls(word_to_id)

    def __len__(self) -> int:
        return len(self.word_to_id)

    def __contains__(self, word: object) -> bool:
        return word in self.word_to_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.word_to_id == other.word_to_id

    def encode(self, tokens: Sequence[str] | str, max_len: int | None = None) -> list[int]:
        """`<START> w... <END>`; with `max_len`, cut to fit (keeping `<END>`) and pad with `<NULL>`."""
        if isinstance(tokens, str):
            tokens = tokenize(tokens)
        ids = [START] + [self.word_to_id.get(t, UNK) for t in tokens] + [END]
        if max_len is not None:
            if max_len < 2:
                raise ChangeAgentError(f"max_len must be at least 2 (<START> and <END>), got {max_len}")
            if len(ids) > max_len:
                ids = ids[: max_len - 1] + [END]
            ids += [NULL] * (max_len - len(ids))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Words up to the first `<END>`, specials dropped, joined by single spaces."""
        words = []
        for i in ids:
            i = int(i)
            if i == END:
                break
            if i < len(SPECIALS):
                continue
            words.append(self.id_to_word.get(i, SPECIALS[UNK]))
        return " ".join(words)

    def dumps(self) -> str:
        """The reference byte format: `json.dump(dict)` with default separators, id order."""
        return json.dumps(dict(sorted(self.word_to_id.items(), key=lambda kv: kv[1])))

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, self.dumps())

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        data = _read_json(path, "vocabulary")
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in data.items()
        ):
            raise ChangeAgentError(f"vocabulary {path} must be a JSON object mapping words to integer ids")
        try:
            return cls(data)
        except ChangeAgentError as e:
            raise ChangeAgentError(f"vocabulary {path}: {e}") from None


@dataclass(frozen=True)
class PairInfo:
    """One pair of a Karpathy caption file, known without decoding any image."""

    name: str  # file name, e.g. train_000001.png
    split: str  # train / val / test (`restval` read as train)
    tokens: tuple[tuple[str, ...], ...]  # 5 token lists
    changeflag: int | None  # None when the JSON has no `changeflag`

    @property
    def captions(self) -> list[str]:
        return [" ".join(t) for t in self.tokens]


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ChangeAgentError(f"{what} file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ChangeAgentError(f"{what} file {path} is not valid JSON: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ChangeAgentError(f"cannot read {what} file {path}: {e}") from None


def _parse_entry(entry: Any) -> PairInfo:
    """One `images[]` item -> PairInfo; raises ValueError with what is wrong."""
    if not isinstance(entry, dict):
        raise ValueError("is not an object")
    name, split = entry.get("filename"), entry.get("split")
    if not isinstance(name, str) or not name:
        raise ValueError("has no 'filename'")
    if split not in (*SPLITS, "restval"):
        raise ValueError(f"has split {split!r}; expected train, val, test or restval")
    sentences = entry.get("sentences")
    if not isinstance(sentences, list) or not sentences:
        raise ValueError("has no sentences")
    if len(sentences) != NUM_CAPTIONS:
        raise ValueError(f"has {len(sentences)} sentences; expected {NUM_CAPTIONS}")
    token_lists = []
    for j, sent in enumerate(sentences):
        toks = sent.get("tokens") if isinstance(sent, dict) else None
        if isinstance(toks, list) and toks and all(isinstance(t, str) for t in toks):
            toks = [t.lower() for t in toks if t.strip()]
        elif isinstance(sent, dict) and isinstance(sent.get("raw"), str):
            toks = tokenize(sent["raw"])
        else:
            raise ValueError(f"sentence {j} has neither 'tokens' nor 'raw'")
        if not toks:
            raise ValueError(f"sentence {j} is empty")
        token_lists.append(tuple(toks))
    flag = entry.get("changeflag")
    if flag is not None:
        if flag not in (0, 1):
            raise ValueError(f"has changeflag {flag!r}; expected 0 or 1")
        flag = int(flag)
    return PairInfo(name=name, split=normalize_split(split), tokens=tuple(token_lists), changeflag=flag)


def read_karpathy(path: str | Path, errors: list[str] | None = None) -> list[PairInfo]:
    """Parse a Karpathy-style caption JSON (`{"images": [...]}`) into PairInfo, in file order.

    A bad entry raises `ChangeAgentError` naming the file, entry and problem; when `errors` is a
    list, the message is appended there instead and the entry is skipped (what `data check` wants).
    """
    data = _read_json(path, "caption")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise ChangeAgentError(f"caption file {path} has no 'images' list (expected Karpathy format)")
    pairs: list[PairInfo] = []
    seen: set[tuple[str, str]] = set()
    for i, entry in enumerate(images):
        try:
            info = _parse_entry(entry)
            if (info.split, info.name) in seen:
                raise ValueError(f"repeats {info.name} in split {info.split}")
        except ValueError as e:
            name = entry.get("filename") if isinstance(entry, dict) else None
            msg = f"caption file {path}: entry {i}" + (f" ({name})" if name else "") + f" {e}"
            if errors is None:
                raise ChangeAgentError(msg) from None
            errors.append(msg)
            continue
        seen.add((info.split, info.name))
        pairs.append(info)
    return pairs


def iter_split_tokens(paths: Iterable[str | Path], splits: Sequence[str] = ("train",)) -> Iterator[tuple[str, ...]]:
    """Every caption's tokens of the pairs in `splits` (`restval` counts as train), file by file."""
    wanted = {normalize_split(s) for s in splits}
    for path in paths:
        for info in read_karpathy(path):
            if info.split in wanted:
                yield from info.tokens


def build_vocab_from_files(
    paths: Iterable[str | Path], splits: Sequence[str] = ("train",), min_count: int = 5
) -> Vocabulary:
    """Default: training captions only. `splits=REFERENCE_SPLITS` reproduces the reference file."""
    return Vocabulary.build(iter_split_tokens(paths, splits), min_count=min_count)
