"""Checks of output paths given by the user, before any work is done.

An output folder that names an existing file (or sits below one), or an output file that names an
existing folder, is a `ChangeAgentError` naming the option, so the CLI prints one `error:` line and
exits 2 instead of failing with a traceback after minutes of work. `changeagent.cli` runs these
checks on every command's `--out` / `--json`-style options (`OUTPUT_FOLDERS`, `OUTPUT_FILES`).
"""

from __future__ import annotations

from pathlib import Path

from changeagent.errors import ChangeAgentError


def _file_above(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` when it is not a folder (nothing can be created below it)."""
    for parent in path.absolute().parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def check_output_folder(path: str | Path, what: str) -> Path:
    """`path` may be used as an output folder: absent (creatable) or an existing folder."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ChangeAgentError(f"{what} {p} exists and is a file, not a folder; give a folder "
                               "(it is created when missing)")
    above = _file_above(p)
    if above is not None:
        raise ChangeAgentError(f"{what} {p}: {above} is a file, so no folder can be created below it")
    return p


def check_output_file(path: str | Path, what: str) -> Path:
    """`path` may be written as a file: not an existing folder, and not below an existing file."""
    p = Path(path)
    if p.is_dir():
        raise ChangeAgentError(f"{what} {p} is a folder; give a file name, e.g. {p / 'result.json'}")
    above = _file_above(p)
    if above is not None:
        raise ChangeAgentError(f"{what} {p}: {above} is a file, so {p} cannot be created")
    return p
