"""Synthetic bi-temporal benchmark written in the real LEVIR-MCI / SECOND-CC layouts (SPEC §6).

`generate("levir-mci", out, n_train, n_val, n_test, size=64, seed=0)` writes a dataset folder that the
real loaders read; `changeagent data synth ...` is the command-line form.
"""

from __future__ import annotations

from changeagent.lazy import lazy_getattr

# name -> module; imported on first use so that `changeagent <cmd> --help` never loads torch
_LAZY = {
    "FORMATS": "changeagent.data.synth.writer",
    "MASK_VARIANTS": "changeagent.data.synth.writer",
    "generate": "changeagent.data.synth.writer",
    "generate_with_summary": "changeagent.data.synth.writer",
}

__all__ = ["FORMATS", "MASK_VARIANTS", "generate", "generate_with_summary"]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
