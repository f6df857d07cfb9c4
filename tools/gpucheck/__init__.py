"""Helpers of `tools/gpu_check.py`: every check that needs a GPU, also runnable as a CPU dry run.

- `report`: the check record, the JSON document and the human-readable table.
- `env`: the machine (torch, CUDA, GPU) and whether mamba-ssm's kernel imports, with the reason if not.
- `sizes`: the full (GPU) and tiny (dry-run) sizes of every check.
- `context`: device, sizes, work folder and model configs shared by every section.
- `equivalence`, `training` (+ `multiproc`: DDP and resume after a kill), `throughput`: the sections.
- `killed_train`: a `changeagent train` process that kills itself mid-run (for the resume check).
"""
