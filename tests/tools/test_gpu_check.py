"""tools/gpu_check.py: its CPU dry run exercises every section's code path (so the GPU check cannot
rot between GPU slots) and a failed equivalence check makes it exit non-zero."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from shared_data import DATA, FIXTURES
from tool_loader import load_tool

TOOLS = Path(__file__).resolve().parents[2] / "tools"




def _args(tmp_path, *extra):
    # mci_fixture is left out here: its CPU comparison is tests/models/test_mci.py's, and the check's own
    # logic has the fast test below
    return ["--dry-run", "--json", str(tmp_path / "gpu.json"), "--table", str(tmp_path / "gpu.md"),
            "--work", str(tmp_path / "work"), "--fixture", str(FIXTURES / "mci_reference"),
            "--vocab", str(DATA / "levir_mci_captions" / "vocab.json"), "--quiet", *extra]


@pytest.mark.timeout(600)
def test_dry_run_exercises_every_section(tmp_path):
    assert load_tool("gpu_check").main(_args(tmp_path, "--skip", "mci_fixture")) == 0
    doc = json.loads((tmp_path / "gpu.json").read_text())
    assert doc["dry_run"] and doc["device"] == "cpu" and doc["summary"]["ok"]
    checks = {(c["section"], c["name"]): c for c in doc["checks"]}
    expected = [
        ("equivalence", "mamba_ssm_kernel"), ("equivalence", "selective_scan_fp32"),
        ("equivalence", "selective_scan_bf16"), ("equivalence", "mamba_model_fp32"),
        ("equivalence", "mamba_model_bf16"), ("equivalence", "mci_fixture"),
        ("training", "synth_data"), *[("training", f"{m}_fp32") for m in ("fast", "mci", "mamba")],
        ("training", "fast_bf16"), ("training", "fast_fp16"), ("training", "fast_fp32_compile"),
        ("training", "ddp_1proc_gloo"), ("training", "resume_after_kill"),
        *[("throughput", f"{m}_fp32") for m in ("fast", "mci", "mamba")],
        ("throughput", "fast_bf16"), ("throughput", "fast_fp16"), ("throughput", "fast_max_batch_bf16"),
        ("throughput", "scene_fast"),
    ]
    assert [k for k in expected if k not in checks] == []
    assert [k for k, c in checks.items() if c["status"] == "fail"] == []
    # without CUDA the kernel is reported skipped with its reason, never passed
    assert checks[("equivalence", "mamba_ssm_kernel")]["status"].startswith("skipped: no CUDA")
    assert checks[("equivalence", "mci_fixture")]["status"] == "skipped: --skip"
    for k in expected:
        if k[0] != "throughput" and k[1] not in ("mamba_ssm_kernel", "mci_fixture"):
            assert checks[k]["status"] == "pass", k
    scan = checks[("equivalence", "selective_scan_fp32")]["figures"]
    assert scan["forward_rel_err"] < 1e-5 and scan["grad_worst_rel_err"] < 1e-5  # float64 stand-in
    train = checks[("training", "fast_fp16")]["figures"]
    assert train["finite"] and train["falling"] and train["steps_logged"] == 6
    resume = checks[("training", "resume_after_kill")]["figures"]
    assert resume["killed_exitcode"] == -9 and resume["bitwise_equal"]
    assert resume["resumed_from_step"] < resume["killed_at_step"]
    ddp = checks[("training", "ddp_1proc_gloo")]["figures"]
    assert ddp["ddp_wrapped"] and ddp["backend"] == "gloo"
    fast = checks[("throughput", "fast_fp32")]["figures"]
    assert fast["train_pairs_per_s"] > 0 and fast["infer_pairs_per_s_b1"] > 0 and fast["infer_pairs_per_s_b2"] > 0
    assert checks[("throughput", "scene_fast")]["figures"]["megapixels_per_s"] > 0
    assert "| training | resume_after_kill | pass |" in (tmp_path / "gpu.md").read_text()


def test_failed_equivalence_exits_nonzero(tmp_path, monkeypatch):
    mod = load_tool("gpu_check")
    monkeypatch.syspath_prepend(str(TOOLS))
    from gpucheck import equivalence

    monkeypatch.setitem(equivalence.SCAN_TOL, "fp32", {"forward": -1.0, "grad": -1.0})
    assert mod.main(_args(tmp_path, "--sections", "equivalence")) == 1
    doc = json.loads((tmp_path / "gpu.json").read_text())
    assert doc["summary"]["failed_gating"] == ["equivalence/selective_scan_fp32"]


@pytest.mark.parametrize("err, equal, status", [(3e-5, True, "pass"), (2e-4, True, "fail"), (0.0, False, "fail")])
def test_mci_fixture_check_builds_converts_and_compares_on_each_device(tmp_path, monkeypatch, err, equal, status):
    """The check's wiring with the MCI module's three entry points recorded instead of run (their real
    CPU run is tests/models/test_mci.py's): absent module -> skipped; else built, converted, compared."""
    import types

    import torch

    monkeypatch.syspath_prepend(str(TOOLS))
    from gpucheck import equivalence
    from gpucheck.context import Context
    from gpucheck.report import Report
    from gpucheck.sizes import DRY

    ctx = Context(torch.device("cpu"), True, DRY, tmp_path, FIXTURES / "mci_reference",
                  DATA / "levir_mci_captions" / "vocab.json", False, "not installed")
    calls = []
    fixture = types.ModuleType("changeagent.models.mci.fixture")
    fixture.build_reference_checkpoint = lambda ref, pth: (calls.append(("build", ref.name)), pth.write_bytes(b"x"))
    fixture.compare_to_fixture = lambda d, f, device: (calls.append(("compare", device)) and None) or {
        "mask_max_abs_err": err, "caption_max_abs_err": err / 2, "greedy_equal": equal, "greedy_tokens": [[5]],
        "device": device}
    monkeypatch.setattr(equivalence, "convert", lambda pth, vocab, out: calls.append(("convert", vocab.name)))
    if importlib.util.find_spec("changeagent.models.mci") is None:
        report = Report(verbose=False)
        assert report.run("equivalence", "mci_fixture", lambda c: equivalence.mci_fixture_check(ctx, c)).status \
            == "skipped: changeagent.models.mci not available"
        package = types.ModuleType("changeagent.models.mci")
        package.__spec__ = importlib.machinery.ModuleSpec("changeagent.models.mci", None, is_package=True)
        monkeypatch.setitem(sys.modules, "changeagent.models.mci", package)
    monkeypatch.setitem(sys.modules, "changeagent.models.mci.fixture", fixture)
    c = Report(verbose=False).run("equivalence", "mci_fixture", lambda c: equivalence.mci_fixture_check(ctx, c))
    assert c.status == status, c.figures
    assert calls == [("build", "reference.json"), ("convert", "vocab.json"), ("compare", "cpu")]
    assert c.figures["cpu_mask_max_abs_err"] == err and c.figures["cpu"]["greedy_tokens"] == [[5]]
