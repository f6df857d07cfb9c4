"""`predict --runtime onnx`: an export folder (`changeagent export`, models/export.py) run by onnxruntime.

`OnnxModel` answers the part of the model interface `Predictor` uses (`config`, `tasks`, `datasets`,
`vocab`, `predict(image, dataset, inputs=..., **decoding)`), so predict's tiling, blending, decoding
of maps and records are the very code of the PyTorch runtime. The caption is decoded by the same
greedy / beam search code (`models.caption_decoder.decode`) over the exported decoder step, which
has no key/value cache: each step re-runs the prefix (T steps cost O(T^2) token passes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from changeagent.errors import ChangeAgentError
from changeagent.models.export import FORMAT_VERSION, MANIFEST


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an export folder; a folder without one (or a foreign one) is an error."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ChangeAgentError(f"--onnx {folder}: no {MANIFEST} (expected a folder written by `changeagent export`)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ChangeAgentError(f"--onnx {path}: unreadable manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "onnx" \
            or manifest.get("format_version") != FORMAT_VERSION or "pair" not in manifest.get("graphs", {}):
        raise ChangeAgentError(f"--onnx {path}: not an ONNX export manifest of format version {FORMAT_VERSION}")
    return manifest


class _Step:
    """The exported decoder step as a `models.decoding.StepDecoder` (cache: memory and the prefix)."""

    def __init__(self, session: Any, forbidden: Sequence[int] | None) -> None:
        self.session = session
        if forbidden is not None:
            self.forbidden_tokens = tuple(forbidden)

    def start(self, memory: Tensor) -> dict[str, Any]:
        return {"memory": memory.float().cpu().numpy(), "prefix": np.zeros((memory.shape[0], 0), np.int64)}

    def step(self, tokens: Tensor, cache: dict[str, Any], position: int) -> Tensor:
        cache["prefix"] = np.concatenate([cache["prefix"], tokens.cpu().numpy()[:, None].astype(np.int64)], 1)
        (logits,) = self.session.run(None, {"memory": cache["memory"], "tokens": cache["prefix"]})
        return torch.from_numpy(logits[:, -1])

    def reorder(self, cache: dict[str, Any], index: Tensor) -> None:
        idx = index.cpu().numpy()
        cache["prefix"] = cache["prefix"][idx]
        cache["memory"] = cache["memory"][idx]


class OnnxModel:
    """An export folder's graphs behind `model.predict` (eval only; CPU or CUDA onnxruntime providers)."""

    def __init__(self, folder: str | Path, *, device: str = "cpu", threads: int | None = None,
                 skip_missing: bool = False) -> None:
        import onnxruntime as ort

        from changeagent.data.vocab import Vocabulary

        self.folder = Path(folder)
        self.manifest = m = read_manifest(self.folder)
        self.training = False
        missing = {t: why for t, why in m.get("not_exported", {}).items() if t in m["tasks"]}
        if missing and not skip_missing:
            why = "; ".join(f"{t}: {r}" for t, r in missing.items())
            raise ChangeAgentError(f"--onnx {folder}: the export lacks task(s) {sorted(missing)} of the model ({why}); "
                                   "re-export with them, predict with the PyTorch runtime, or pass "
                                   "--onnx-skip-missing to run the exported tasks only")
        self.tasks = [t for t in m["tasks"] if t not in missing]
        self.datasets = list(m["datasets"])
        self.config = {"in_channels": m["in_channels"], "datasets": self.datasets, "tasks": self.tasks}
        self.vocab = Vocabulary.load(self.folder / m["vocab"]) if m.get("vocab") else None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") \
            else ["CPUExecutionProvider"]
        self.sessions = {}
        for name, g in m["graphs"].items():
            path = self.folder / g["file"]
            if not path.is_file():
                raise ChangeAgentError(f"--onnx {folder}: {g['file']} listed in the manifest is missing")
            self.sessions[name] = ort.InferenceSession(str(path), opts, providers=providers)
        self.pair_inputs = {i.name for i in self.sessions["pair"].get_inputs()}
        self.pair_outputs = [o.name for o in self.sessions["pair"].get_outputs()]
        self.dynamic_hw = bool(m["graphs"]["pair"].get("dynamic_hw"))
        self.traced_size = tuple(m["graphs"]["pair"].get("traced_size") or ())

    # -- what Predictor calls ------------------------------------------------------------------
    def to(self, device: Any) -> OnnxModel:
        return self

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        return self

    def head_norm(self) -> Mapping[str, Any] | None:
        return self.manifest.get("norm")

    def predict(self, image: Tensor, dataset: Sequence[str] | str | None = None, *,
                tasks: Sequence[str] | None = None, inputs: Mapping[str, Any] | None = None,
                **options: Any) -> dict[str, Any]:
        """As `ChangeCaptioner.predict` for the exported tasks: "change", "masks", "pair_emb",
        "text_emb" (of inputs["texts"]), "tokens"."""
        b, _, _, h, w = image.shape
        if not self.dynamic_hw and (h, w) != self.traced_size:
            raise ChangeAgentError(f"--onnx {self.folder}: the graph was exported for {self.traced_size} windows "
                                   f"(its H/W are not dynamic); got {h}x{w}: use --tile {self.traced_size[0]}")
        feeds: dict[str, np.ndarray] = {"image": image.float().cpu().numpy()}
        if "dataset" in self.pair_inputs and dataset is None:
            # as the torch model: the token memory's last row means "no dataset given" (a head the model
            # has none for, served by its shared heads alone)
            feeds["dataset"] = np.full(b, len(self.datasets), np.int64)
        elif "dataset" in self.pair_inputs:
            names = [dataset] * b if isinstance(dataset, str) else list(dataset or [])
            unknown = sorted({d for d in names if d not in self.datasets})
            if unknown or len(names) != b:
                raise ChangeAgentError(f"--onnx: dataset(s) {unknown or names} do not name the model's "
                                       f"datasets {self.datasets} for a batch of {b}")
            feeds["dataset"] = np.array([self.datasets.index(d) for d in names], np.int64)
        got = dict(zip(self.pair_outputs, self.sessions["pair"].run(None, feeds)))
        want = set(tasks) if tasks is not None else set(self.tasks)
        out: dict[str, Any] = {}
        if "mask" in want and "change" in got:
            out["change"] = torch.from_numpy(got["change"])
            out["masks"] = {k[6:]: torch.from_numpy(v) for k, v in got.items() if k.startswith("masks.")}
        if "retrieval" in want and "pair_emb" in got:
            out["pair_emb"] = torch.from_numpy(got["pair_emb"])
            texts = (inputs or {}).get("texts")
            if texts is not None:
                out["text_emb"] = self.embed_texts(texts)
        if "caption" in want and "caption_step" in self.sessions:
            from changeagent.models.caption_decoder import decode

            step = _Step(self.sessions["caption_step"], self.manifest["graphs"]["caption_step"].get("forbidden"))
            out["tokens"] = decode(step, torch.from_numpy(got["memory"]), options)
        return out

    def embed_texts(self, ids: Tensor) -> Tensor:
        """Caption ids int64 [N, L] -> text embeddings [N, D] (text.onnx)."""
        if "text" not in self.sessions:
            raise ChangeAgentError(f"--onnx {self.folder}: the export has no text encoder (no retrieval head)")
        (emb,) = self.sessions["text"].run(None, {"ids": ids.cpu().numpy().astype(np.int64)})
        return torch.from_numpy(emb)
