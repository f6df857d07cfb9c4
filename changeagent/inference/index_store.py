"""The on-disk search index: append-only, memory-mappable, resumable after a kill.

    INDEX/index.json               header: format, version, kind (pairs | scene | dataset), dim, model
                                   (checkpoint path + sha256 of its weights), source, crs, count,
                                   complete, ann (approximate index file, if built)
    INDEX/embeddings.f32           float32 rows [count, dim], L2-normalised, appended batch by batch
    INDEX/items.jsonl              one JSON object per row (name, caption, changed fractions, footprint ...)
    INDEX/text_encoder.safetensors the model's caption encoder, so `search` embeds queries without
    INDEX/text_encoder.json        loading the image model (+ its config and vocab.json)
    INDEX/text_encoder.onnx        the same encoder as ONNX (input [1, max_len]): `search` embeds the
                                   query with onnxruntime and never imports torch (indexes without it: torch)
    INDEX/vocab.json
    INDEX/ann.faiss                optional FAISS HNSW / IVF index over the rows

Rows are raw float32 so the file is `np.memmap`-ed (archives larger than RAM are searched chunk by
chunk) and grows by appending. Per batch the rows are appended and fsync-ed first, then the items;
a row without its item line (a kill in between) is cut off on resume, so the two always agree.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from changeagent.errors import ChangeAgentError
from changeagent.fileio import write_json_atomic

FORMAT = "changeagent-retrieval-index"
VERSION = 1
HEADER, EMB, ITEMS = "index.json", "embeddings.f32", "items.jsonl"
TEXT_WEIGHTS, TEXT_CONFIG, VOCAB, ANN = "text_encoder.safetensors", "text_encoder.json", "vocab.json", "ann.faiss"
TEXT_ONNX = "text_encoder.onnx"  # the same encoder for onnxruntime: `search` starts without torch (optional)


def file_sha256(path: Path, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


class IndexStore:
    """One INDEX/ folder. `create_or_resume` to build, `open` to search."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path, self.header = Path(path), header
        self.dim = int(header["dim"])

    # ---- building ---------------------------------------------------------------------------
    @classmethod
    def create_or_resume(cls, path: str | Path, header: dict[str, Any], overwrite: bool = False) -> IndexStore:
        """A fresh index, or the unfinished/finished one at `path` when it was built from the same
        model and source (then `done_names()` says what to skip). Anything else is an error."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ChangeAgentError(f"index {path} exists and is not a folder")
        head_file = path / HEADER
        if head_file.is_file() and not overwrite:
            old = cls.open(path, require_complete=False)
            for key in ("kind", "dim", "model", "source"):
                if old.header.get(key) != header.get(key):
                    raise ChangeAgentError(
                        f"index {path} was built with another {key} ({old.header.get(key)!r}, now "
                        f"{header.get(key)!r}); use another folder or --overwrite")
            old.repair()
            return old
        if path.is_dir() and any(path.iterdir()) and not head_file.is_file() and not overwrite:
            raise ChangeAgentError(f"{path} is a non-empty folder that is not an index; use another folder or --overwrite")
        path.mkdir(parents=True, exist_ok=True)
        for name in (EMB, ITEMS, ANN):
            (path / name).unlink(missing_ok=True)
        (path / EMB).touch()
        (path / ITEMS).touch()
        header = {"format": FORMAT, "version": VERSION, **header, "count": 0, "complete": False, "ann": None}
        write_json_atomic(head_file, header)
        return cls(path, header)

    def repair(self) -> int:
        """Cut rows and item lines to the count both hold completely; returns that count."""
        items = self.path / ITEMS
        data = items.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]  # a line cut by a kill
        lines = data.count(b"\n")
        rows = (self.path / EMB).stat().st_size // (4 * self.dim)
        n = min(lines, rows)
        if lines > n:
            data = b"".join(data.splitlines(keepends=True)[:n])
        with open(items, "r+b") as f:
            f.truncate(0)
            f.write(data)
        with open(self.path / EMB, "r+b") as f:
            f.truncate(n * 4 * self.dim)
        if self.header.get("count") != n:  # rows went missing or were added after the last header write
            self.header.update(count=n, complete=False)
            write_json_atomic(self.path / HEADER, self.header)
        return n

    def done_names(self) -> set[str]:
        return {it["name"] for it in self.iter_items()}

    def append(self, emb: np.ndarray, items: Sequence[dict[str, Any]]) -> None:
        """Rows float32 [n, dim] and their n item records, durably (rows first, then items)."""
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        if emb.ndim != 2 or emb.shape != (len(items), self.dim):
            raise ChangeAgentError(f"index: {emb.shape} embeddings for {len(items)} items of dim {self.dim}")
        for name, payload in ((EMB, emb.tobytes()),
                              (ITEMS, "".join(json.dumps(it) + "\n" for it in items).encode())):
            with open(self.path / name, "ab") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
        self.header["count"] = int(self.header.get("count", 0)) + len(items)

    def finish(self, **extra: Any) -> None:
        self.header.update(count=self.rows(), complete=True, **extra)
        write_json_atomic(self.path / HEADER, self.header)

    def set_ann(self, ann: dict[str, Any] | None) -> None:
        self.header["ann"] = ann
        write_json_atomic(self.path / HEADER, self.header)

    # ---- reading ----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, require_complete: bool = True) -> IndexStore:
        path = Path(path)
        head_file = path / HEADER
        if not head_file.is_file():
            raise ChangeAgentError(f"{path} is not a search index (no {HEADER}); build one with `changeagent index`")
        try:
            header = json.loads(head_file.read_text())
        except (OSError, ValueError) as e:
            raise ChangeAgentError(f"index header {head_file} is not valid JSON: {e}") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ChangeAgentError(f"{head_file} is not a {FORMAT} header")
        if header.get("version") != VERSION:
            raise ChangeAgentError(f"index {path} has format version {header.get('version')}, this code reads {VERSION}")
        for name in (EMB, ITEMS, TEXT_WEIGHTS, TEXT_CONFIG, VOCAB):
            if not (path / name).is_file():
                raise ChangeAgentError(f"index {path} is incomplete: {name} is missing")
        store = cls(path, header)
        if require_complete:
            if not header.get("complete"):
                raise ChangeAgentError(f"index {path} is unfinished (interrupted?); run the same "
                                       "`changeagent index` command again to complete it")
            if store.rows() != header.get("count"):
                raise ChangeAgentError(f"index {path}: {EMB} holds {store.rows()} rows, the header says "
                                       f"{header.get('count')} (damaged index)")
            if header.get("count", 0) == 0:
                raise ChangeAgentError(f"index {path} is empty (nothing was indexed)")
        return store

    def rows(self) -> int:
        return (self.path / EMB).stat().st_size // (4 * self.dim)

    def embeddings(self) -> np.ndarray:
        """float32 [count, dim], memory-mapped (read-only)."""
        n = self.rows()
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        return np.memmap(self.path / EMB, dtype=np.float32, mode="r", shape=(n, self.dim))

    def iter_items(self) -> Iterator[dict[str, Any]]:
        with open(self.path / ITEMS) as f:
            for line in f:
                if line.endswith("\n"):
                    yield json.loads(line)

    def items(self) -> list[dict[str, Any]]:
        return list(self.iter_items())
