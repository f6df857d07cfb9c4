"""Writing files so that a failure leaves nothing partial (temp file or folder, then rename)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from changeagent.errors import ChangeAgentError


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same folder, so a failure leaves nothing partial."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise ChangeAgentError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the rename must not land before the data (power loss mid-run)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs should read like any other
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise ChangeAgentError(f"cannot write {path}: {e.strerror}") from None


def swap_dir_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished folder `tmp` to `final`, replacing an old `final` only once `tmp` is complete.

    The old folder is moved aside first (rename cannot replace a non-empty folder), then removed,
    so at every moment `final` is either the old or the new complete folder.
    """
    old = None
    if final.is_dir() and any(final.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
