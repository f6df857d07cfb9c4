"""Helpers of the engine tests: the tiny model config and a run-config writer."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

TINY_MODEL = {
    "encoder": "tu-mobilenetv3_small_050",
    "neck": {"name": "diff", "dim": 32},
    "mask_decoder": {"channels": 16},
    "caption_decoder": {"dim": 32, "layers": 1, "heads": 2, "dropout": 0.1},
}


def write_config(path: Path, roots: dict[str, Path], datasets: tuple[str, ...] = ("levir_mci",),
                 **sections: Any) -> Path:
    """A run config YAML for the tiny model on `roots`; `sections` deep-update the defaults below."""
    cfg: dict[str, Any] = {
        "model": copy.deepcopy(TINY_MODEL),  # sections deep-update it: never the shared dict
        "run": {"out_dir": str(path.parent / "run"), "seed": 0, "device": "cpu", "threads": 1},
        "data": {
            "datasets": list(datasets), "batch_size": 4, "eval_batch_size": 3, "min_count": 0,
            **{n: {"root": str(roots[n])} for n in datasets},
        },
        "optim": {"lr": 1e-3},
        "train": {"steps": 4, "log_every": 1, "save_every": 100},
        "eval": {"meteor": False, "select": "miou+bleu4"},
    }
    for key, value in sections.items():
        _deep_update(cfg.setdefault(key, {}), value)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _deep_update(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wandb_records(path: Path) -> list[Any]:
    """Protobuf records of an offline run's `.wandb` file (LevelDB log format: 32 KiB blocks of
    [crc32 u32, length u16, type u8] chunks; type 1 full, 2 first, 3 middle, 4 last)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb run file"
    pos, buf, chunks = 7, b"", []
    block = 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room for a chunk header: the block is padded
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            chunks.append(buf + chunk)
        elif kind == 0:  # zero padding up to the end of the block
            pos += (block - pos % block) % block
    records = []
    for c in chunks:
        r = pb.Record()
        r.ParseFromString(c)
        records.append(r)
    return records
