"""The one way changeagent writes a file or a folder: nothing partial under a final name, ever.

The contract (tests/test_fileio.py), for every writer here:

1. the content goes to a *unique* temporary file in the target's own folder (same file system, so the
   rename below is atomic); its name is `.<final name>.<random>.<pid>.tmp<suffix>`: hidden, keeps the
   final suffix (rasterio and PIL pick a format by it) and names the writing process, so
   `clean_stale_temps` can tell a dead run's leftovers from a live writer's;
2. the file is flushed and fsynced, then given the usual umask permissions (mkstemp makes 0600 files);
3. it is renamed over the final name with `os.replace`, and the folder is fsynced, so the rename itself
   survives a power loss;
4. on any error (or KeyboardInterrupt) the temporary file is deleted and the old final file, if there
   was one, is untouched; an `OSError` reaches the user as `ChangeAgentError("cannot write <path>: ...")`.

Folders (a model folder, an export) follow the same steps with `atomic_dir`: the whole folder is built
under a temporary name beside the final one, and swapped in only once complete.

This module sits at the package's root, below every layer, because every layer writes files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from changeagent.errors import ChangeAgentError

__all__ = [
    "atomic_dir", "atomic_path", "clean_stale_temps", "fsync_dir", "json_safe", "staged_files", "swap_dir_into_place",
    "write_bytes_atomic", "write_json_atomic", "write_text_atomic",
]


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def fsync_dir(folder: str | Path) -> None:
    """fsync a folder so that a rename inside it is durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened; the rename is as durable as it gets
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink()
    # GDAL writes `<name>.aux.xml` side-cars next to a raster it statistics; never wanted here
    with contextlib.suppress(OSError):
        tmp.with_name(tmp.name + ".aux.xml").unlink()


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a unique temporary path beside `final` for a writer (torch.save, rasterio, PIL...) to fill.

    On success the file is fsynced and renamed to `final` (then the folder is fsynced); on error it is
    deleted and `final` is untouched. The yielded file exists (empty): writers that refuse an existing
    file must be given `overwrite`-style options.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".{os.getpid()}.tmp{final.suffix}",
                                    dir=final.parent)
        os.close(fd)
    except OSError as e:
        raise ChangeAgentError(f"cannot write {final}: {e.strerror or e}") from None
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, final)
    except OSError as e:
        _discard(tmp)
        raise ChangeAgentError(f"cannot write {final}: {e.strerror or e}") from None
    except BaseException:
        _discard(tmp)
        raise
    _discard(tmp)  # only the side-car can be left at this point
    fsync_dir(final.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (the module's contract)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None and tensors/numpy values -> Python numbers, so the file is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):
        return json_safe(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """Write `obj` as strict JSON (NaN -> null) to `path` atomically."""
    write_text_atomic(path, json.dumps(json_safe(obj), indent=indent, allow_nan=False) + "\n")


def swap_dir_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished folder `tmp` to `final`, replacing an old `final` only once `tmp` is complete.

    The old folder is moved aside first (rename cannot replace a non-empty folder), then removed, so at
    every moment `final` is either the old or the new complete folder.
    """
    tmp, final = Path(tmp), Path(final)
    for p in tmp.rglob("*"):  # the files' data must be on disk before the folder's rename is
        if p.is_file() and not p.is_symlink():
            _fsync_file(p)
    old = None
    if final.is_dir() and any(final.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=f".{os.getpid()}.old", dir=final.parent))
        os.replace(final, old / final.name)
    elif final.is_dir():
        final.rmdir()
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _temp_dir(final: Path) -> Path:
    """An empty temporary folder beside `final`, named as `clean_stale_temps` parses it."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=f".{os.getpid()}.tmp", dir=final.parent))
    except OSError as e:
        raise ChangeAgentError(f"cannot write {final}: {e.strerror or e}") from None


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `final`; on success it replaces `final` whole, on error
    it is deleted and `final` (old or absent) is untouched."""
    final = Path(final)
    tmp = _temp_dir(final)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        swap_dir_into_place(tmp, final)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ChangeAgentError(f"cannot write {final}: {e.strerror or e}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_files(final: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside the folder `final`; on success each file in it is fsynced
    and renamed into `final` (created if absent; other files there are kept), on error it is deleted.

    For a set of outputs added to a shared folder (one `ground` answer among others): no file of the
    set appears under its final name before all of them are complete."""
    final = Path(final)
    tmp = _temp_dir(final)
    try:
        yield tmp
        files = [p for p in tmp.iterdir() if p.is_file()]
        for p in files:
            _fsync_file(p)
            os.chmod(p, 0o666 & ~_umask())
        final.mkdir(exist_ok=True)
        for p in files:
            os.replace(p, final / p.name)
        fsync_dir(final)
    except OSError as e:
        raise ChangeAgentError(f"cannot write {final}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_temps(folder: str | Path) -> int:
    """Delete temporary files and folders left in `folder` by runs that no longer exist; returns how many."""
    removed = 0
    for p in Path(folder).glob(".*.tmp*"):
        parts = p.name.rsplit(".tmp", 1)[0].rsplit(".", 1)
        if len(parts) != 2 or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid != os.getpid() and not _alive(pid):
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed += 1
    return removed
