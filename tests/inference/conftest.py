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

