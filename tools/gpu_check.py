"""`make gpu-check`: every check that needs a GPU, in one go, with one JSON and one table of results.

    python tools/gpu_check.py --json gpu.json            # on a CUDA machine: < 8 min on one H100
    python tools/gpu_check.py --dry-run --json dry.json  # the same code paths on the CPU, tiny sizes

Sections (docs/training.md, "GPU"): equivalence (mamba-ssm kernel vs PyTorch scan, the `mamba` model
with and without it, the faithful MCI on the shared fixture on CUDA and CPU), training (fast/mci/mamba in
fp32, bf16, fp16 + GradScaler, torch.compile, 1-process NCCL DDP, resume after a kill) and throughput
(pairs/s, peak memory, largest batch, scene MP/s). Exit 1 when an equivalence or training check fails;
without CUDA the script says so, runs the dry run and exits 0 unless that fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("equivalence", "training", "throughput")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", metavar="OUT", help="write every figure and verdict to this JSON file")
    ap.add_argument("--table", metavar="OUT", help="also write the human-readable table (Markdown) here")
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU, tiny sizes: exercise every code path (automatic when CUDA is absent)")
    ap.add_argument("--device", default="cuda", help="CUDA device for the full check (cuda, cuda:N)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ", ".join(SECTIONS))
    ap.add_argument("--models", help="comma-separated model configs (default: fast,mci,mamba)")
    ap.add_argument("--skip", default="", help="comma-separated check names to leave out, e.g. mci_fixture,scene_fast")
    ap.add_argument("--compile-models", help="models trained once more with torch.compile (default: fast)")
    ap.add_argument("--fixture", default=str(REPO.parent / "shared" / "fixtures" / "mci_reference"),
                    help="the MCI reference fixture folder (reference.json, inputs.npz, expected.npz)")
    ap.add_argument("--vocab", help="the reference 468-word vocab.json "
                    "(default: <fixture>/../../data/levir_mci_captions/vocab.json)")
    ap.add_argument("--work", help="folder for generated data and runs (default: a temporary folder, removed)")
    ap.add_argument("--quiet", action="store_true", help="no per-check progress lines")
    args = ap.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {bad}; choose from {list(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
        sys.path.insert(1, str(REPO))
    import dataclasses

    import torch
    from gpucheck import env, equivalence, throughput, training
    from gpucheck.context import Context
    from gpucheck.report import Report, table
    from gpucheck.sizes import DRY, FULL

    dry = args.dry_run or not torch.cuda.is_available()
    if dry and not args.dry_run:
        print("CUDA is not available on this machine: running the CPU dry run instead "
              "(tiny sizes, CUDA-only parts skipped).", flush=True)
    sizes = DRY if dry else FULL
    if dry:
        torch.set_num_threads(1)  # tiny sizes; and forked children (DDP, resume) need no thread pool
    if args.models:
        sizes = dataclasses.replace(sizes, models=tuple(m for m in args.models.split(",") if m))
    if args.compile_models is not None:
        sizes = dataclasses.replace(sizes, compile_models=tuple(m for m in args.compile_models.split(",") if m))
    if not dry:  # before cuBLAS starts: the resume check's run.deterministic needs it (engine/seeding.py)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    device = torch.device("cpu") if dry else torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    fixture = Path(args.fixture)
    vocab = Path(args.vocab) if args.vocab else fixture.parent.parent / "data" / "levir_mci_captions" / "vocab.json"
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check."))
    work.mkdir(parents=True, exist_ok=True)
    kernel, reason = env.mamba_status()
    ctx = Context(device, dry, sizes, work, fixture, vocab, kernel, reason)
    report = Report(verbose=not args.quiet, skip=tuple(x for x in args.skip.split(",") if x))
    t0 = time.perf_counter()
    try:
        for name, module in (("equivalence", equivalence), ("training", training), ("throughput", throughput)):
            if name in args.sections:
                module.run(ctx, report)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    doc = report.document({
        "mode": "dry run (CPU)" if dry else "full", "device": str(device), "dry_run": dry,
        "cuda_available": torch.cuda.is_available(), "env": env.describe(device),
        "sizes": dataclasses.asdict(sizes), "sections": args.sections,
        "minutes": round((time.perf_counter() - t0) / 60, 2),
    })
    text = table(doc)
    print("\n" + text)
    if args.json:
        from changeagent.fileio import write_json_atomic

        write_json_atomic(Path(args.json), doc)
    if args.table:
        from changeagent.fileio import write_text_atomic

        write_text_atomic(Path(args.table), text + "\n")
    return 0 if doc["summary"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
