"""The one file-writing contract (changeagent.fileio): unique temp beside the target, fsync, rename,
fsync of the folder, nothing left behind and the old file kept on error."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from changeagent import fileio
from changeagent.errors import ChangeAgentError


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def synced(monkeypatch):
    """Records what was fsynced, in order: ('file', path) or ('dir', path)."""
    log: list[tuple[str, str]] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        log.append(("dir" if os.path.isdir(path) else "file", path))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return log


def test_write_goes_through_a_unique_temp_beside_the_target_and_is_synced(tmp_path, synced, monkeypatch):
    seen: list[str] = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append(str(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    fileio.write_text_atomic(tmp_path / "sub" / "out.json", "{}")
    fileio.write_text_atomic(tmp_path / "sub" / "out.json", "[]")
    assert (tmp_path / "sub" / "out.json").read_text() == "[]"
    assert names(tmp_path / "sub") == ["out.json"]
    # two writes, two different temp names, both in the target's folder, hidden, keeping the suffix
    assert len(set(seen)) == 2
    for t in seen:
        p = Path(t)
        assert p.parent == tmp_path / "sub" and p.name.startswith(".out.json.") and p.suffix == ".json"
        assert f".{os.getpid()}.tmp" in p.name
    # the data is synced before the rename, and the folder after it
    kinds = [k for k, _ in synced]
    assert kinds == ["file", "dir", "file", "dir"]
    assert Path(synced[1][1]) == tmp_path / "sub"


def test_final_files_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        fileio.write_bytes_atomic(tmp_path / "a.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644  # not mkstemp's 0600


def test_error_leaves_nothing_and_keeps_the_old_file(tmp_path):
    final = tmp_path / "x.json"
    final.write_text("old")
    with pytest.raises(RuntimeError), fileio.atomic_path(final) as tmp:
        tmp.write_text("half")
        (tmp.with_name(tmp.name + ".aux.xml")).write_text("gdal")  # a side-car is discarded too
        raise RuntimeError("killed")
    assert names(tmp_path) == ["x.json"] and final.read_text() == "old"
    with pytest.raises(KeyboardInterrupt), fileio.atomic_path(final) as tmp:
        raise KeyboardInterrupt
    assert names(tmp_path) == ["x.json"]


def test_os_errors_name_the_target(tmp_path):
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(ChangeAgentError, match=r"cannot write .*dir\.json"):
        fileio.write_text_atomic(tmp_path / "dir.json", "{}")
    assert names(tmp_path) == ["dir.json"]
    (tmp_path / "file").write_text("")
    with pytest.raises(ChangeAgentError, match=r"cannot write .*file/x\.json"):
        fileio.write_text_atomic(tmp_path / "file" / "x.json", "{}")


def test_json_is_strict(tmp_path):
    import numpy as np

    fileio.write_json_atomic(tmp_path / "m.json", {"a": float("nan"), "b": np.float32(0.5), 3: [np.int64(2)]})
    assert (tmp_path / "m.json").read_text() == '{\n  "a": null,\n  "b": 0.5,\n  "3": [\n    2\n  ]\n}\n'


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path, synced):
    final = tmp_path / "best"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), fileio.atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError
    assert names(tmp_path) == ["best"] and names(final) == ["old.txt"]
    synced.clear()
    with fileio.atomic_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "deep.txt").write_text("d")
    assert names(tmp_path) == ["best"] and names(final) == ["new.txt", "sub"]
    assert ("dir", str(tmp_path)) in synced  # the swap itself is made durable
    assert sum(k == "file" for k, _ in synced) == 2  # both files' data before the swap


def test_staged_files_add_a_complete_set_or_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "other.json").write_text("keep")
    with pytest.raises(RuntimeError), fileio.staged_files(out) as tmp:
        (tmp / "a.png").write_bytes(b"1")
        raise RuntimeError
    assert names(out) == ["other.json"] and names(tmp_path) == ["out"]
    with fileio.staged_files(out) as tmp:
        (tmp / "a.png").write_bytes(b"1")
        (tmp / "a.json").write_text("{}")
    assert names(out) == ["a.json", "a.png", "other.json"] and names(tmp_path) == ["out"]


def test_clean_stale_temps_removes_dead_runs_only(tmp_path):
    dead = tmp_path / ".y.json.abc123.999999999.tmp.json"
    live = tmp_path / f".z.json.abc123.{os.getpid()}.tmp.json"
    dead_dir = tmp_path / ".best.xyz.999999999.tmp"
    dead.write_text("")
    live.write_text("")
    dead_dir.mkdir()
    (dead_dir / "f").write_text("")
    (tmp_path / ".hidden").write_text("")  # not a temp name: kept
    assert fileio.clean_stale_temps(tmp_path) == 2
    assert names(tmp_path) == [".hidden", live.name]


def test_a_temp_left_by_a_killed_writer_is_recognised(tmp_path):
    """The names `atomic_path` makes are the names `clean_stale_temps` parses."""
    with fileio.atomic_path(tmp_path / "m.tif") as tmp:
        left = tmp.with_name(tmp.name.replace(f".{os.getpid()}.", ".999999999."))
        left.write_text("")
    assert fileio.clean_stale_temps(tmp_path) == 1 and names(tmp_path) == ["m.tif"]


def test_no_other_module_renames_files_itself():
    """One owner: every os.replace / mkstemp / mkdtemp for outputs lives in changeagent.fileio."""
    root = Path(fileio.__file__).parent
    offenders = []
    for f in sorted(root.rglob("*.py")):
        if f.name == "fileio.py":
            continue
        text = f.read_text()
        for needle in re.findall(r"os\.replace\(|os\.rename\(|tempfile\.mkstemp\(|\.rename\(|tmp\w*\.replace\(", text):
            offenders.append(f"{f.relative_to(root)}: {needle}")
    assert offenders == []
