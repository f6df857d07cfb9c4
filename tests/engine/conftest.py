"""Fixtures of the engine tests: tiny synthetic datasets, one CPU thread per process.

Every test trains on 32 px synthetic pairs with a ~0.6M-parameter model (engine_helpers.TINY_MODEL).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from changeagent.data.synth import generate


@pytest.fixture(scope="session")
def synth_roots(tmp_path_factory) -> dict[str, Path]:
    """Tiny LEVIR-MCI and SECOND-CC folders in the published layouts (generated once per session)."""
    base = tmp_path_factory.mktemp("synth")
    return {
        "levir_mci": generate("levir-mci", base / "levir_mci", n_train=12, n_val=5, n_test=5, size=32, seed=1),
        "second_cc": generate("second-cc", base / "second_cc", n_train=12, n_val=5, n_test=5, size=32, seed=2),
    }
