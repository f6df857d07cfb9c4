"""Helpers of the app tests: constants, the FIFO trap, starting and stopping `python -m changeagent` servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))

from infer_helpers import TILES  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RETR = {"enabled": True, "dim": 16, "text_dim": 16, "text_layers": 1, "heads": 2}
LEVIR = TILES / "LEVIR-CD"
PAIRS = 20   # 64 px crops, each a distinct input (the load test sends all of them at once)
OPTIONS = {"max_len": 6}  # random weights: keep caption decoding short
SMALL_MP = 0.05  # the servers' pixel limit in these tests: a 256x256 tile (0.066 MP) is "oversized"


class Trap:
    """A FIFO outside the root: a writer thread blocks until some process opens it for reading, so
    `opened` proves whether the server read it. `close()` releases the writer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self.opened = threading.Event()
        self._t = threading.Thread(target=self._wait, daemon=True)
        self._t.start()

    def _wait(self) -> None:
        with open(self.path, "wb") as f:  # returns only once a reader has opened the FIFO
            self.opened.set()
            f.write(b"\x89PNG secret")

    def close(self) -> None:
        if not self.opened.is_set():
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            self._t.join(timeout=5)
            os.close(fd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env() -> dict[str, str]:
    """The environment for a `python -m changeagent` child: this tree first on the path, one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    return env


def start(args: list[str], port: int, log: Path, env: dict[str, str] | None = None,
          timeout: float = 120) -> subprocess.Popen:
    """Start `python -m changeagent ARGS` and wait until it listens on 127.0.0.1:port."""
    f = open(log, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "changeagent", *args], stdout=f, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env or cli_env(), cwd=str(REPO))
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"server did not listen on {port} within {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MiB (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    val = {ln.split(":")[0]: ln.split()[1] for ln in status.splitlines() if ln.startswith(("VmRSS", "VmHWM"))}
    return int(val["VmRSS"]) / 1024, int(val["VmHWM"]) / 1024
