"""Root confinement, the output folder and the request gate (no model needed)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from changeagent.app.limits import Busy, Deadline, Gate, Limits
from changeagent.app.paths import OutputFolder, Roots
from changeagent.errors import ChangeAgentError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "root" / "sub" / "a.png").write_bytes(b"x")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "secret.png").write_bytes(b"s")
    (tmp_path / "root" / "in_link.png").symlink_to(tmp_path / "root" / "sub" / "a.png")
    (tmp_path / "root" / "out_link.png").symlink_to(tmp_path / "other" / "secret.png")
    (tmp_path / "root" / "out_dir").symlink_to(tmp_path / "other", target_is_directory=True)
    (tmp_path / "root_sibling").mkdir()  # shares the prefix "root": must not count as inside
    (tmp_path / "root_sibling" / "x.png").write_bytes(b"x")
    return tmp_path


def test_inside_paths_resolve_to_real_files(tree: Path):
    roots = Roots([tree / "root"])
    real = (tree / "root" / "sub" / "a.png").resolve()
    assert roots.resolve("sub/a.png") == real
    assert roots.resolve(str(tree / "root" / "sub" / "a.png")) == real
    assert roots.resolve("in_link.png") == real  # a symlink that stays inside is fine


@pytest.mark.parametrize("raw, why", [
    ("../other/secret.png", "'..' is not allowed"),
    ("sub/../../other/secret.png", "'..' is not allowed"),
    ("out_link.png", "outside the allowed folders"),
    ("out_dir/secret.png", "outside the allowed folders"),
    ("sub/missing.png", "does not exist"),
    ("sub", "is not a file"),
    ("", "empty path"),
    ("a\x00b", "invalid path"),
])
def test_refused(tree: Path, raw: str, why: str):
    with pytest.raises(ChangeAgentError, match=why):
        Roots([tree / "root"]).resolve(raw)


def test_absolute_paths_outside_are_refused_whether_or_not_they_exist(tree: Path):
    roots = Roots([tree / "root"])
    for p in (tree / "other" / "secret.png", tree / "other" / "nothing.png", tree / "root_sibling" / "x.png",
              Path("/etc/passwd")):
        with pytest.raises(ChangeAgentError, match="outside the allowed folders"):
            roots.resolve(str(p))


def test_several_roots_and_no_roots(tree: Path):
    roots = Roots([tree / "root", tree / "other"])
    assert roots.resolve("secret.png") == (tree / "other" / "secret.png").resolve()
    with pytest.raises(ChangeAgentError, match="reads no files"):
        Roots([]).resolve("a.png")
    with pytest.raises(ChangeAgentError, match="is not a folder"):
        Roots([tree / "nope"])


def test_list_files_skips_links_that_leave(tree: Path):
    files = Roots([tree / "root"]).list_files((".png",))
    assert files == [str((tree / "root" / "sub" / "a.png").resolve())] * 2  # a.png and its inside link
    assert all("secret" not in f for f in files)


def test_output_folder_keeps_the_newest(tmp_path: Path):
    out = OutputFolder(tmp_path / "out", keep=2)
    made = [out.new_request() for _ in range(4)]
    assert [p.exists() for p in made] == [False, False, True, True]
    assert len({p.name for p in made}) == 4 and all(out.contains(p) for p in made)
    assert not out.contains(tmp_path / "elsewhere")


def test_gate_queues_then_answers_busy():
    gate = Gate(Limits(concurrency=1, queue=1, queue_timeout_s=5))
    release = threading.Event()
    entered = []

    def hold(tag: str) -> None:
        with gate.slot():
            entered.append(tag)
            release.wait(5)

    t1 = threading.Thread(target=hold, args=("first",))
    t1.start()
    while gate.running < 1:
        time.sleep(0.01)
    t2 = threading.Thread(target=hold, args=("queued",))
    t2.start()
    while gate.waiting < 1:
        time.sleep(0.01)
    with pytest.raises(Busy, match="busy"):  # one running, one waiting: the third is turned away
        with gate.slot():
            pass
    release.set()
    t1.join(5)
    t2.join(5)
    assert entered == ["first", "queued"] and gate.running == 0 and gate.waiting == 0


def test_gate_wait_is_bounded():
    gate = Gate(Limits(concurrency=1, queue=4, queue_timeout_s=0.2))
    with gate.slot():
        t0 = time.monotonic()
        with pytest.raises(Busy, match="no free slot"):
            with gate.slot():
                pass
        assert time.monotonic() - t0 < 2


def test_deadline():
    Deadline(60).check()
    d = Deadline(0.01)
    time.sleep(0.02)
    with pytest.raises(ChangeAgentError, match="time limit of 0.01 s"):
        d.check()


def test_fifo_is_not_opened_by_resolve(tree: Path):
    """Resolving (and refusing) never opens a file: a FIFO outside would block any open()."""
    fifo = tree / "other" / "pipe.png"
    os.mkfifo(fifo)
    (tree / "root" / "pipe_link.png").symlink_to(fifo)
    with pytest.raises(ChangeAgentError, match="outside"):
        Roots([tree / "root"]).resolve("pipe_link.png")


def test_remote_hosts_need_the_flag_and_a_token(run_cli, tmp_path, monkeypatch):
    from changeagent.app.cli import check_host

    check_host("127.0.0.1", False, None)
    check_host("localhost", False, None)
    check_host("::1", False, None)
    with pytest.raises(ChangeAgentError, match="--allow-remote"):
        check_host("0.0.0.0", False, "t")
    with pytest.raises(ChangeAgentError, match="access token"):
        check_host("192.0.2.1", True, None)
    check_host("0.0.0.0", True, "t")
    # through the commands: refused before any model is loaded (the checkpoint does not even exist)
    monkeypatch.delenv("CHANGEAGENT_TOKEN", raising=False)
    code, _, err = run_cli("serve", "-k", tmp_path / "none", "--host", "0.0.0.0")
    assert code == 2 and "--allow-remote" in err
    code, _, err = run_cli("mcp", "-k", tmp_path / "none", "--root", tmp_path, "--transport", "http",
                           "--host", "0.0.0.0", "--allow-remote")
    assert code == 2 and "needs an access token" in err
    (tmp_path / "empty").write_text("\n")
    code, _, err = run_cli("serve", "-k", tmp_path / "none", "--token-file", tmp_path / "empty")
    assert code == 2 and "is empty" in err
    code, _, err = run_cli("serve", "-k", tmp_path / "none", "--max-megapixels", "0")
    assert code == 2 and "max_megapixels" in err
