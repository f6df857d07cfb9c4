"""Synthetic bi-temporal benchmark written in the real LEVIR-MCI / SECOND-CC layouts (SPEC §6).

`generate("levir-mci", out, n_train, n_val, n_test, size=64, seed=0)` writes a dataset folder that the
real loaders read; `changeagent data synth ...` is the command-line form.
"""

from changeagent.data.synth.writer import FORMATS, MASK_VARIANTS, generate, generate_with_summary

__all__ = ["FORMATS", "MASK_VARIANTS", "generate", "generate_with_summary"]
