"""What produced a folder of results: the model's weights fingerprint and every option that changes them.

Folder mode (`predict --a-dir --b-dir`) and `index` resume by skipping what is already done. That is
only right when the earlier results come from the same model with the same options, so both record
`model_fingerprint` (the checkpoint's path and the sha256 of its weights file) and folder mode also
`prediction_options`; a resume with anything different is refused with the differences named.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from changeagent.errors import ChangeAgentError
from changeagent.inference.index_store import file_sha256

SETTINGS = ".predict.json"  # folder mode: what produced the records in OUT/ (written before the first one)


def weights_file(ck: Path) -> Path:
    """The file holding a checkpoint's weights, found the way `models.load` finds the model: a model
    folder, a run folder (best/ or last.pt) or a last.pt."""
    for cand in (ck, ck / "model.safetensors", ck / "best" / "model.safetensors", ck / "last.pt"):
        if cand.is_file():
            return cand
    raise ChangeAgentError(f"checkpoint {ck}: no model.safetensors or last.pt found")


def model_fingerprint(checkpoint: str | Path, model: Any = None) -> dict[str, str | None]:
    """{"checkpoint": absolute path, "sha256": of its weights file}; a model given in memory (no
    checkpoint on disk, the Python API) is fingerprinted by the bytes of its state dict instead."""
    ck = Path(checkpoint)
    if ck.exists() or model is None:
        return {"checkpoint": str(ck.resolve()), "sha256": file_sha256(weights_file(ck))}
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return {"checkpoint": None, "sha256": h.hexdigest()}


def prediction_options(pred: Any, align: bool) -> dict[str, Any]:
    """Every predictor option that changes a result (masks, fractions, counts or captions); the batch
    size, progress and visualisation do not."""
    decode = dict(pred.decode)
    if decode.get("method") != "beam":  # beam options mean nothing to greedy decoding
        decode.pop("beam_size", None)
        decode.pop("length_penalty", None)
    return {
        "head": pred.head, "tile": pred.tile, "overlap": pred.overlap, "bands": pred.bands,
        "scale": pred.scaler.spec, "align": bool(align), "min_area": pred.min_area,
        "mean": [round(float(v), 6) for v in pred.mean], "std": [round(float(v), 6) for v in pred.std],
        **decode,
    }


FLAGS = {"head": "--head", "tile": "--tile", "overlap": "--overlap", "bands": "--bands", "scale": "--scale",
         "align": "--align", "min_area": "--min-area", "method": "--method", "beam_size": "--beam-size",
         "max_len": "--max-len", "length_penalty": "--length-penalty", "mean": "data_norm mean",
         "std": "data_norm std"}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable list of what differs between two settings records ({"model", "options"})."""
    diffs = []
    om, nm = old.get("model") or {}, new.get("model") or {}
    if om.get("sha256") != nm.get("sha256"):
        diffs.append(f"model weights (sha256 {str(om.get('sha256'))[:12]}... of {om.get('checkpoint')}, "
                     f"now {str(nm.get('sha256'))[:12]}... of {nm.get('checkpoint')})")
    oo, no = old.get("options") or {}, new.get("options") or {}
    for key in sorted(set(oo) | set(no)):
        if oo.get(key) != no.get(key):
            diffs.append(f"{FLAGS.get(key, key)} ({oo.get(key)!r}, now {no.get(key)!r})")
    return diffs
