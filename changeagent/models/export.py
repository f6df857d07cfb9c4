"""ONNX export of a model folder for deployment (`changeagent export`; docs/export.md).

Graphs written into the export folder (each exported with torch's torch.export-based ONNX exporter,
`dynamo=True`, which needs onnxscript; the TorchScript one bakes nn.MultiheadAttention's batch size
into its reshapes):

    pair.onnx          image float [B, 2, C, H, W] (+ dataset int64 [B] when the model has a token
                       memory with a dataset token) -> "change" [B, 1, H, W], "masks.<dataset>"
                       (one per semantic head), "pair_emb" [B, D] (retrieval head) and "memory"
                       [B, M, d] (what the caption decoder reads): ONE encoder pass for every output.
    text.onnx          caption ids int64 [N, L] -> "text_emb" [N, D] (retrieval head only).
    caption_step.onnx  memory [B, M, d], tokens int64 [B, T] -> "logits" [B, T, V] (the caption
                       decoder without its key/value cache: position t predicts token t+1; a greedy
                       decoder feeds the prefix back, `onnx_greedy`).

Each graph is checked against eager PyTorch with onnxruntime at export time (max |diff| recorded);
the batch axis is always dynamic, H and W are declared dynamic and the manifest records whether the
graph matched eager at a second size (`dynamic_hw`; False means: run it at the exported size only).
`manifest.json` lists every graph's inputs/outputs, the opset, the model folder's normalisation per
head, its datasets, the sha256 of its weights and what was not exported (and why).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from changeagent.data.constants import END, NULL, START
from changeagent.errors import ChangeAgentError
from changeagent.fileio import atomic_dir, write_text_atomic

OPSET = 17
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
TOL = 1e-4  # largest |onnxruntime - eager| an exported graph may show on the check inputs


class PairGraph(nn.Module):
    """image [B, 2, C, H, W] (+ dataset [B]) -> every image-side output of one encoder pass (tuple)."""

    def __init__(self, model: Any, outputs: list[str], mask_sets: list[str], with_dataset: bool) -> None:
        super().__init__()
        self.model, self.names, self.mask_sets, self.with_dataset = model, outputs, mask_sets, with_dataset

    def forward(self, image: Tensor, dataset: Tensor | None = None) -> tuple[Tensor, ...]:
        feats = self.model.features_indexed(image, dataset if self.with_dataset else None)
        out: dict[str, Tensor] = {}
        if "mask" in self.model.tasks:
            pred = self.model.head("mask").outputs(feats, {})
            out["change"] = pred["change"]
            out.update({f"masks.{d}": pred["masks"][d] for d in self.mask_sets})
        if "pair_emb" in self.names:
            out["pair_emb"] = self.model.head("retrieval").pair(feats["memory"])
        if "memory" in self.names:
            out["memory"] = feats["memory"]
        return tuple(out[n] for n in self.names)


class TextGraph(nn.Module):
    """caption ids int64 [N, L] -> text embedding [N, D] (the retrieval head's caption encoder)."""

    def __init__(self, text: Any) -> None:
        super().__init__()
        self.text = text

    def forward(self, ids: Tensor) -> Tensor:
        return self.text.encode(ids)


class StepGraph(nn.Module):
    """memory [B, M, d], tokens int64 [B, T] -> next-token logits [B, T, V] (no cache)."""

    def __init__(self, decoder: Any) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, memory: Tensor, tokens: Tensor) -> Tensor:
        # teacher forcing drops the last input token; pad one so every position of `tokens` is scored
        return self.decoder(memory, torch.nn.functional.pad(tokens, (0, 1)))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _weights_file(ck: Path) -> Path:
    for cand in (ck, ck / "model.safetensors", ck / "last.pt"):
        if cand.is_file():
            return cand
    raise ChangeAgentError(f"checkpoint {ck}: no model.safetensors or last.pt found")


def _io(tensor_names: list[str], arrays: list[np.ndarray], dynamic: dict[str, dict[int, str]]) -> list[dict[str, Any]]:
    rows = []
    for name, a in zip(tensor_names, arrays):
        axes = dynamic.get(name, {})
        rows.append({"name": name, "dtype": str(a.dtype),
                     "shape": [axes.get(i, int(s)) for i, s in enumerate(a.shape)]})
    return rows


def _export(graph: nn.Module, args: tuple[Tensor, ...], path: Path, inputs: list[str], outputs: list[str],
            dynamic: dict[str, dict[int, str]]) -> None:
    """torch.export-based ONNX export (onnxscript) with the axes of `dynamic` symbolic (Dim.AUTO: an
    axis the model's code fixes is specialised, not an error; the checks after export find that out)."""
    import logging
    import warnings

    from torch.export import Dim

    shapes = tuple({axis: Dim.AUTO for axis in dynamic.get(name, {})} or None for name in inputs)
    fast = torch.backends.mha.get_fastpath_enabled()
    # nn.TransformerEncoder's inference fast path is one fused op without an ONNX symbol: export the
    # plain ops (the same arithmetic; the check after export compares against the fast path)
    torch.backends.mha.set_fastpath_enabled(False)
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [q.level for q in quiet]
    for q in quiet:
        q.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # exporter chatter
        warnings.simplefilter("ignore")
        try:
            prog = torch.onnx.export(graph, args, input_names=inputs, output_names=outputs, opset_version=OPSET,
                                     dynamic_shapes=shapes, dynamo=True, external_data=False, verbose=False)
            assert prog is not None
            prog.save(str(path))
        except ChangeAgentError:
            raise
        except Exception as e:  # an op without an ONNX translation, a shape the tracer cannot follow
            raise ChangeAgentError(f"export: {path.name} does not export: {str(e).splitlines()[0][:300]}") from None
        finally:
            torch.backends.mha.set_fastpath_enabled(fast)
            for q, lv in zip(quiet, levels):
                q.setLevel(lv)


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _max_diff(sess: Any, feeds: dict[str, np.ndarray], eager: list[Tensor]) -> float:
    got = sess.run(None, {k: v for k, v in feeds.items() if k in {i.name for i in sess.get_inputs()}})
    diffs = []
    for g, t in zip(got, eager):
        e = t.detach().float().cpu().numpy()
        if g.shape != e.shape:
            return float("inf")
        diffs.append(float(np.abs(g - e).max()) if g.size else 0.0)
    return max(diffs, default=0.0)


def export_onnx(checkpoint: str | Path, out: str | Path, *, size: int | None = None, batch: int = 2,
                caption: bool = True, seed: int = 0) -> dict[str, Any]:
    """Export the model folder `checkpoint` into folder `out` (replaced only once complete); returns the manifest.

    size: the H = W of the example input the graphs are traced with (None: the model's image_size or
    256, a multiple of 32); caption: also export the caption decoder step when the model has one."""
    from changeagent.models.hub import load, resolve_path

    src = resolve_path(checkpoint)
    model, vocab, norm, datasets = load(src, map_location="cpu")
    model.eval()
    cfg = model.config
    size = int(size or cfg.get("image_size") or 256)
    if size % 32 or size < 32:
        raise ChangeAgentError(f"export: --size {size} must be a positive multiple of 32")
    if batch < 1:
        raise ChangeAgentError(f"export: --batch {batch} must be at least 1")
    final = Path(out)
    if final.exists() and not final.is_dir():
        raise ChangeAgentError(f"export: {final} exists and is not a folder")
    with atomic_dir(final) as tmp:
        manifest = _export_all(model, vocab, norm, datasets, src, tmp, size, batch, caption, seed)
        write_text_atomic(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def _export_all(model: Any, vocab: Any, norm: Any, datasets: Any, src: Path, folder: Path, size: int,
                batch: int, caption: bool, seed: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    c = int(model.config.get("in_channels", 3))
    tasks = list(model.tasks)
    memory = getattr(model, "memory", None)
    with_dataset = memory is not None and getattr(memory, "dataset_embed", None) is not None
    mask_sets = [d for d in model.datasets if "mask" in tasks and d in _mask_heads(model)]
    names: list[str] = []
    if "mask" in tasks:
        names += ["change", *(f"masks.{d}" for d in mask_sets)]
    if "retrieval" in tasks:
        names.append("pair_emb")
    step_ok = caption and "caption" in tasks and memory is not None
    if step_ok:
        names.append("memory")
    if not names:
        raise ChangeAgentError(f"export: the model's tasks {tasks} have no exportable output (mask, retrieval, caption)")
    graphs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for t in tasks:
        if t not in ("mask", "retrieval", "caption"):
            skipped[t] = "its head is not exported (export covers mask, retrieval and the caption decoder step)"
    if "caption" in tasks and not step_ok:
        skipped["caption"] = ("--no-caption given" if not caption else "the caption decoder reads no token memory")

    # -- pair.onnx --------------------------------------------------------------------------------
    image = torch.randn(batch, 2, c, size, size, generator=gen)
    ds = torch.arange(batch) % max(1, len(model.datasets))
    pair = PairGraph(model, names, mask_sets, with_dataset).eval()
    inputs = ["image", *(["dataset"] if with_dataset else [])]
    args = (image, ds) if with_dataset else (image,)
    dyn: dict[str, dict[int, str]] = {"image": {0: "batch", 3: "height", 4: "width"}, "dataset": {0: "batch"}}
    for n in names:
        dyn[n] = {0: "batch"}
    for n in ["change", *(f"masks.{d}" for d in mask_sets)]:
        rank = 4 if n == "change" or _mask_heads(model)[n[6:]] == 1 else 5
        dyn[n] = {0: "batch", rank - 2: "height", rank - 1: "width"}
    with torch.no_grad():
        eager = list(pair(*args))
        _export(pair, args, folder / "pair.onnx", inputs, names, {k: v for k, v in dyn.items() if k in inputs + names})
        sess = _session(folder / "pair.onnx")
        feeds = {"image": image.numpy(), "dataset": ds.numpy()}
        diff = _max_diff(sess, feeds, eager)
        if diff > TOL:
            raise ChangeAgentError(f"export: pair.onnx differs from eager PyTorch by {diff:.2e} (> {TOL})")
        other = size + 32 if size <= 256 else size - 32  # a second size: is H/W really dynamic?
        img2 = torch.randn(1, 2, c, other, other, generator=gen)
        try:
            diff2 = _max_diff(sess, {"image": img2.numpy(), "dataset": ds[:1].numpy()},
                              list(pair(*((img2, ds[:1]) if with_dataset else (img2,)))))
        except Exception:  # onnxruntime refuses the shape: the traced graph fixed H/W somewhere
            diff2 = float("inf")
    dynamic_hw = diff2 <= TOL
    graphs["pair"] = {"file": "pair.onnx", "dynamic_hw": dynamic_hw, "traced_size": [size, size],
                      "max_abs_diff": diff, "max_abs_diff_other_size": diff2 if dynamic_hw else None,
                      "inputs": _io(inputs, [image.numpy(), ds.numpy()], dyn if dynamic_hw else
                                    {"image": {0: "batch"}, "dataset": {0: "batch"}}),
                      "outputs": _io(names, [e.numpy() for e in eager], dyn if dynamic_hw else
                                     {n: {0: "batch"} for n in names})}

    # -- text.onnx --------------------------------------------------------------------------------
    if "retrieval" in tasks:
        text = TextGraph(model.head("retrieval").text).eval()
        ids = _example_ids(model.vocab_size, 3, 9, gen)
        with torch.no_grad():
            eager_t = [text(ids)]
            dyn_t = {"ids": {0: "texts", 1: "length"}, "text_emb": {0: "texts"}}
            _export(text, (ids,), folder / "text.onnx", ["ids"], ["text_emb"], dyn_t)
            sess = _session(folder / "text.onnx")
            diff = _max_diff(sess, {"ids": ids.numpy()}, eager_t)
            ids2 = _example_ids(model.vocab_size, 2, 14, gen)
            ids2[1, 8:] = 0  # padding: the mask must be dynamic too
            ids2[1, 7] = END
            diff2 = _max_diff(sess, {"ids": ids2.numpy()}, [text(ids2)])
        if max(diff, diff2) > TOL:
            raise ChangeAgentError(f"export: text.onnx differs from eager PyTorch by {max(diff, diff2):.2e} (> {TOL})")
        graphs["text"] = {"file": "text.onnx", "max_abs_diff": max(diff, diff2),
                          "inputs": _io(["ids"], [ids.numpy()], dyn_t),
                          "outputs": _io(["text_emb"], [e.numpy() for e in eager_t], dyn_t)}

    # -- caption_step.onnx --------------------------------------------------------------------------
    if step_ok:
        dec = model.head("caption").eval()
        mem = eager[names.index("memory")]
        tokens = _example_ids(model.vocab_size, batch, 5, gen)[:, :-1]
        step = StepGraph(dec).eval()
        with torch.no_grad():
            eager_s = [step(mem, tokens)]
            dyn_s = {"memory": {0: "batch", 1: "tokens"}, "tokens": {0: "batch", 1: "steps"},
                     "logits": {0: "batch", 1: "steps"}}
            _export(step, (mem, tokens), folder / "caption_step.onnx", ["memory", "tokens"], ["logits"], dyn_s)
            sess = _session(folder / "caption_step.onnx")
            diff = _max_diff(sess, {"memory": mem.numpy(), "tokens": tokens.numpy()}, eager_s)
            t2 = _example_ids(model.vocab_size, batch, 9, gen)
            diff2 = _max_diff(sess, {"memory": mem.numpy(), "tokens": t2.numpy()}, [step(mem, t2)])
        if max(diff, diff2) > TOL:
            (folder / "caption_step.onnx").unlink()
            skipped["caption"] = f"the decoder step differs from eager by {max(diff, diff2):.2e} in onnxruntime"
        else:
            graphs["caption_step"] = {"file": "caption_step.onnx", "max_abs_diff": max(diff, diff2),
                                      "inputs": _io(["memory", "tokens"], [mem.numpy(), tokens.numpy()], dyn_s),
                                      "outputs": _io(["logits"], [e.numpy() for e in eager_s], dyn_s),
                                      "start": START, "end": END,
                                      "forbidden": list(getattr(dec, "forbidden_tokens", (NULL, START)))}
    if vocab is not None:
        vocab.save(folder / "vocab.json")
    import onnx
    import onnxruntime

    return {
        "format": "onnx", "format_version": FORMAT_VERSION, "opset": OPSET, "checkpoint": str(src.resolve()),
        "weights_sha256": _sha256(_weights_file(src)), "tasks": tasks, "datasets": list(model.datasets),
        "trained": datasets, "norm": norm, "in_channels": c, "stride": 32, "mask_heads": mask_sets,
        "exported": sorted(graphs), "graphs": graphs, "not_exported": skipped,
        "vocab": "vocab.json" if vocab is not None else None, "tolerance": TOL,
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
    }


def _mask_heads(model: Any) -> dict[str, int]:
    """{dataset: dates} of the mask head's semantic heads (1: [B, K, H, W], 2: [B, 2, K, H, W])."""
    from changeagent.models.mask_decoder import head_shapes

    return {d: maps for d, (maps, _) in head_shapes(model.config).items()}


def _example_ids(vocab_size: int, n: int, length: int, gen: torch.Generator) -> Tensor:
    ids = torch.randint(4, max(5, vocab_size), (n, length), generator=gen)
    ids[:, 0], ids[:, -1] = START, END
    return ids
