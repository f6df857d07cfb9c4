"""Fixtures for inference tests (helpers in infer_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from infer_helpers import save_tiny

from changeagent.cli import main


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Run `changeagent ...` in process; returns (exit code, stdout, stderr)."""
    def run(*argv: object) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    return run


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread: on the shared 2-core machine, spinning OpenMP threads make tiny models
    several times slower. Restored after each test so other test folders are unaffected."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
