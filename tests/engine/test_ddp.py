"""DDP on CPU with 2 Gloo processes: parameters stay identical across ranks (gradient accumulation with
no_sync, learned loss weights, heads unused by a batch), and the sharded validation gives exactly the
single-process numbers on the same weights: every pair counted once, none padded or duplicated."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from engine_helpers import read_jsonl, write_config

from changeagent.cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg_path: str, out: str, sys_path: list[str]) -> None:
    import os

    sys.path[:0] = [p for p in sys_path if p not in sys.path]  # spawn: the test's import paths
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from changeagent.engine.distributed import cleanup, init_distributed
    from changeagent.engine.schema import load_run_config
    from changeagent.engine.trainer import Trainer

    cfg = load_run_config(cfg_path)
    info = init_distributed(cfg.run.device)
    assert info.world_size == world and info.rank == rank
    try:
        trainer = Trainer(cfg, info)
        summary = trainer.fit()
        torch.save(trainer.model.state_dict(), Path(out) / f"rank{rank}.pt")
        (Path(out) / f"summary{rank}.json").write_text(json.dumps(summary["metrics"]))
    finally:
        cleanup(info)


@pytest.mark.timeout(300)
def test_ddp_two_gloo_processes(tmp_path, synth_roots):
    cfg = write_config(tmp_path / "c.yaml", synth_roots, ("levir_mci", "second_cc"),
                       data={"batch_size": 2}, train={"steps": 3, "grad_accum": 2},
                       loss={"weighting": {"name": "uncertainty"}})
    out = tmp_path / "run"
    out.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(cfg), str(out), list(sys.path)), nprocs=2, join=True)

    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    params = [n for n in r0 if "running_" not in n and "num_batches_tracked" not in n]
    assert len(params) > 100
    for name in params:  # BatchNorm statistics are per rank between forwards (DDP syncs them at forward)
        assert torch.equal(r0[name], r1[name]), f"{name} differs between ranks"
    # the loop ran in step on both ranks and both got the same (broadcast) validation numbers
    assert json.loads((out / "summary0.json").read_text()) == json.loads((out / "summary1.json").read_text())

    val = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "val"][-1]
    assert val["step"] == 3
    # single process, same weights (best/ is the last validation here), same split
    single = tmp_path / "single"
    assert main(["eval", "-c", str(cfg), "--checkpoint", str(out / "best"), "--split", "val",
                 "--out", str(single)]) == 0
    ref = json.loads((single / "metrics.json").read_text())
    for dataset in ("levir_mci", "second_cc"):
        assert val[dataset]["n_pairs"] == ref[dataset]["n_pairs"] == 5  # 5 pairs over 2 ranks: no padding
        assert val[dataset]["counts"] == ref[dataset]["counts"]
        for key, value in ref[dataset].items():
            if isinstance(value, float):
                assert val[dataset][key] == pytest.approx(value, abs=1e-6, nan_ok=True), (dataset, key)
