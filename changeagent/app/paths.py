"""Where a request may read and write: input paths confined to the `--root` folders, outputs under one
output folder, one fresh sub-folder per request named by the server (never by an uploaded name).

Confinement is decided on the path's real location (`os.path.realpath`: every symlink followed, `..`
collapsed) *before* anything is opened, and the answer for a path outside every root is the same
whether it exists or not, so a caller learns nothing about files outside the roots. `..` components
are refused outright (they are never needed to name a file under a root), absolute paths are
accepted only when their real location is under a root, and relative paths are looked up under each
root in order. What stays open: a process that can write inside a root could swap a checked folder
for a symlink between the check and the read; the roots are meant to be data folders that requests
cannot modify (no tool writes there).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from changeagent.errors import ChangeAgentError


class Roots:
    """The folders requests may read from (each resolved once, at start-up)."""

    def __init__(self, roots: Sequence[str | Path]) -> None:
        resolved = []
        for r in roots:
            p = Path(os.path.realpath(os.path.expanduser(str(r))))
            if not p.is_dir():
                raise ChangeAgentError(f"--root {r} is not a folder")
            resolved.append(p)
        self.roots: list[Path] = list(dict.fromkeys(resolved))

    def __bool__(self) -> bool:
        return bool(self.roots)

    def __iter__(self) -> Iterator[Path]:
        return iter(self.roots)

    def contains(self, real: Path) -> bool:
        """True when the real (symlink-free) path `real` lies inside one of the roots."""
        return any(real == r or real.is_relative_to(r) for r in self.roots)

    def resolve(self, raw: str | os.PathLike[str], what: str = "input") -> Path:
        """The real path of an existing file named by `raw`, which must be under a root.

        Refused, each with a message and without opening anything: no roots configured, an empty
        name, a NUL byte, a `..` component, a path (absolute, relative, or via a symlink) whose real
        location is outside every root; then a missing file or a folder.
        """
        text = os.fspath(raw) if not isinstance(raw, str) else raw
        if not self.roots:
            raise ChangeAgentError(f"{what} {text!r}: this server reads no files (start it with --root DIR)")
        if not text or not text.strip():
            raise ChangeAgentError(f"{what}: empty path")
        if "\x00" in text:
            raise ChangeAgentError(f"{what} {text!r}: invalid path")
        p = Path(os.path.expanduser(text)) if text.startswith("~") else Path(text)
        if ".." in p.parts:
            raise ChangeAgentError(f"{what} {text!r}: '..' is not allowed in paths; name the file under a root")
        candidates = [p] if p.is_absolute() else [r / p for r in self.roots]
        inside = []
        for c in candidates:
            real = Path(os.path.realpath(c))  # follows symlinks; opens no file
            if self.contains(real):
                inside.append(real)
        if not inside:
            raise ChangeAgentError(f"{what} {text!r} is outside the allowed folders ({self.describe()})")
        for real in inside:
            if real.is_file():
                return real
        if any(real.exists() for real in inside):
            raise ChangeAgentError(f"{what} {text!r} is not a file")
        raise ChangeAgentError(f"{what} {text!r} does not exist under {self.describe()}")

    def describe(self) -> str:
        return ", ".join(str(r) for r in self.roots) or "no folders"

    def list_files(self, suffixes: Sequence[str], limit: int = 2000) -> list[str]:
        """Up to `limit` files with one of `suffixes` under the roots (symlinks leaving a root skipped),
        as absolute real paths, sorted per root; for the web app's file choosers."""
        found: list[str] = []
        for root in self.roots:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(filenames):
                    if Path(name).suffix.lower() in suffixes:
                        real = Path(os.path.realpath(Path(dirpath) / name))
                        if self.contains(real) and real.is_file():
                            found.append(str(real))
                            if len(found) >= limit:
                                return found
        return found


class OutputFolder:
    """One output folder; each request writes into a new sub-folder `r<seq>-<random>` of it.

    Only the newest `keep` request folders are kept (older ones are deleted as new ones are made),
    so a long-running server's disk use is bounded.
    """

    def __init__(self, path: str | Path, keep: int = 200) -> None:
        self.path = Path(os.path.realpath(os.path.expanduser(str(path))))
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ChangeAgentError(f"--out {path}: cannot create the output folder: {e}") from None
        self.keep = max(1, int(keep))
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self._made: list[Path] = []

    def new_request(self) -> Path:
        """A fresh, empty folder for one request's files."""
        with self._lock:
            name = f"r{next(self._seq):05d}-{uuid.uuid4().hex[:8]}"
            folder = self.path / name
            folder.mkdir()
            self._made.append(folder)
            old, self._made = self._made[: -self.keep], self._made[-self.keep :]
        for f in old:
            with contextlib.suppress(OSError):
                shutil.rmtree(f)
        return folder

    def contains(self, p: str | Path) -> bool:
        real = Path(os.path.realpath(p))
        return real.is_relative_to(self.path)
