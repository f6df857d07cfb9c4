"""`Predictor`: a loaded model plus the input rules (bands, scaling, normalisation, tiling).

    p = Predictor.from_pretrained("ckpt/", device="cpu")
    pred = p.predict("A.png", "B.png")      # or uint8/uint16 arrays [H, W, C]
    pred.mask, pred.caption, pred.changed_fraction, pred.object_counts, pred.timings

What each task contributes comes from the task registry: a task with per-pixel logits
(`TaskSpec.dense`, the mask task) is blended over overlapping windows and decoded into maps; every
task's `TaskSpec.window` fields (the caption task: "caption") go into each window's record and, for
a tiled pair, into the pair's record from one pass over the pair scaled down to one tile.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from changeagent.data.images import normalise
from changeagent.data.registry import get_spec, spec_from_summary
from changeagent.data.spec import DatasetSpec
from changeagent.devices import resolve_device
from changeagent.errors import ChangeAgentError
from changeagent.inference import postprocess as post
from changeagent.inference.raster import Picture, Scaler, both_valid, read_pair, select_bands
from changeagent.inference.tiling import Grid, StripBlender, ceil_to, pad_to
from changeagent.models.decode_cfg import DECODE
from changeagent.tasks.registry import get_tasks, shared_tasks
from changeagent.tasks.spec import TaskContext

DEFAULT_TILE = 256


def head_norm(head: str, norm: dict[str, dict[str, Any]] | None, mean: Sequence[float] | None,
              std: Sequence[float] | None, in_channels: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """mean/std float32 [C] of the images `head` decodes: `mean`/`std` when given (--mean/--std),
    else the statistics the model folder records for that dataset; none is an error naming the folder."""
    if (mean is None) != (std is None):
        raise ChangeAgentError("give both --mean and --std, or neither (the model folder's statistics)")
    what = "--mean/--std"
    if mean is None:
        recorded = (norm or {}).get(head)
        if recorded is None:
            has = f"it records them for {sorted(norm)}" if norm else "it records none (config.json `norm`)"
            raise ChangeAgentError(f"{where}: no normalisation statistics for the {head} head ({has}); "
                                   "give the ones its images need with --mean and --std")
        mean, std, what = recorded["mean"], recorded["std"], f"the statistics recorded for {head}"
    try:
        m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    except (TypeError, ValueError):
        raise ChangeAgentError(f"{where}: {what} must be numbers") from None
    if m.shape != (in_channels,) or s.shape != (in_channels,) or (s <= 0).any():
        raise ChangeAgentError(f"{where}: {what} have {m.size} mean / {s.size} std values (std > 0) "
                               f"but the model takes {in_channels} bands")
    return m, s


def trained_head(head: str | None, trained: dict[str, dict[str, Any]] | None, source: str,
                 shared: bool = False) -> DatasetSpec:
    """The spec of the head to predict with: `head`, which must be one the model was trained on
    (with `shared`, any registered dataset: the caller serves it by the shared heads,
    `tasks.registry.shared_tasks`); by default the first trained dataset that supervises change
    masks (else the first one). A folder that records no datasets needs `head` (its heads alone
    do not say what it learnt)."""
    if not trained:
        if head is None:
            raise ChangeAgentError(f"{source}: the model folder records no datasets it was trained on "
                                   "(config.json `datasets`); choose the head with --head")
        return get_spec(head)
    if head is None:
        with_mask = [n for n in trained if "change" in (trained[n].get("targets") or get_spec(n).targets)]
        head = (with_mask or list(trained))[0]
    if head not in trained and shared:
        return get_spec(head)
    if head not in trained:
        raise ChangeAgentError(f"{source}: the model was not trained on {head} (trained on {list(trained)}); "
                               f"use --head with one of those")
    return spec_from_summary(head, trained[head])


def trained_tasks(names: list[str], trained: dict[str, dict[str, Any]] | None) -> list[Any]:
    """The model's tasks whose heads were trained: a task counts when a dataset the model was trained on
    supplies its target (`TaskSpec.enabled_for`; a mask-only model's caption decoder was never trained,
    so its records carry no caption). An old folder that does not record its datasets keeps them all."""
    tasks = get_tasks(names)
    if not trained:
        return tasks
    specs = [spec_from_summary(n, s) for n, s in trained.items()]
    return [t for t in tasks if any(t.enabled_for(sp) for sp in specs)]


def load_checkpoint(path: str | Path) -> tuple[Any, dict[str, Any] | None, dict[str, dict[str, Any]] | None]:
    """The one way inference opens a checkpoint: a model folder (`save_pretrained`), a training run
    folder (its best/) or a last.pt -> (model on the CPU, per-dataset norm record, trained datasets).
    Anything else, or a damaged/foreign file, is a `ChangeAgentError` naming the path."""
    p = Path(path)
    if not p.exists():
        raise ChangeAgentError(f"checkpoint {p} does not exist (expected a save_pretrained folder "
                               f"such as a training run's best/)")
    if p.is_dir() and not (p / "config.json").is_file() and not (p / "best" / "config.json").is_file() \
            and not (p / "last.pt").is_file():
        raise ChangeAgentError(f"checkpoint {p} has no config.json (expected a save_pretrained folder)")
    from changeagent.models import load

    try:
        model, _, norm, datasets = load(p, map_location="cpu")
    except ChangeAgentError:
        raise
    except Exception as e:  # a foreign or damaged checkpoint: name it, no traceback
        raise ChangeAgentError(f"checkpoint {p} is incompatible with this model code: {e}") from None
    return model, norm, datasets


class Predictor:
    """Runs a ChangeCaptioner on tile pairs of any size (tiled with blended logits when large)."""

    def __init__(self, model: Any, *, device: str = "cpu", head: str | None = None,
                 tile: int | None = None, overlap: int = 32, batch_size: int = 8,
                 method: str = DECODE.method, beam_size: int = DECODE.beam_size, max_len: int = DECODE.max_len,
                 length_penalty: float = DECODE.length_penalty, min_area: int = 16, scale: str = "auto",
                 bands: Sequence[int] | None = None, norm: dict[str, dict[str, Any]] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 vocab: Any = None, source: str = "model",
                 datasets: dict[str, dict[str, Any]] | None = None, inputs: dict[str, Any] | None = None) -> None:
        """norm: {dataset id: {"mean", "std"}} the model was trained with (`models.load`); `mean`/`std`
        (the CLI's --mean/--std) replace the decoding head's; datasets: what it was trained on; inputs:
        what the user gives the tasks (`TaskSpec.predict_inputs`, e.g. {"question": "..."})."""
        if method not in ("greedy", "beam"):
            raise ChangeAgentError(f"decoding method {method!r} is not greedy or beam")
        # the model keeps its resolved dict as `config` (older drafts of the contract said `cfg`)
        cfg = dict(getattr(model, "config", None) or getattr(model, "cfg", None) or {})
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.vocab: Any = vocab if vocab is not None else getattr(model, "vocab", None)
        if self.vocab is None:
            raise ChangeAgentError(f"{source}: no caption vocabulary (vocab.json) in the checkpoint")
        heads = list(getattr(model, "datasets", None) or [])
        # a head the model has none for (--head levir_cd on a LEVIR-MCI model): its shared heads serve it
        self.foreign = head is not None and bool(heads) and head not in heads
        self.spec = trained_head(head, datasets, source, shared=self.foreign)
        head = self.spec.id
        self.tasks = trained_tasks(list(getattr(model, "tasks", [])), datasets)
        if self.foreign:
            names, msg = shared_tasks([t.name for t in self.tasks], self.spec, heads, source, verb="predicted")
            self.tasks = [t for t in self.tasks if t.name in names]
            note = f"{msg}; images normalised with its registry statistics" if mean is None else msg
            print(f"note: {note}", file=sys.stderr, flush=True)
        dense = [t for t in self.tasks if t.dense_channels(self.spec)]
        if len(dense) > 1:
            raise ChangeAgentError(f"{source}: tasks {[t.name for t in dense]} all give per-pixel logits; "
                                   "predict blends one")
        self.dense = dense[0] if dense else None  # None: a model without per-pixel outputs (no maps)
        self.channels = self.dense.dense_channels(self.spec) if self.dense is not None else 0
        self.task_ctx = TaskContext(vocab=self.vocab, max_len=max_len, train=False, dataset=self.spec)
        self.inputs = dict(inputs or {})
        self.in_channels = int(cfg.get("in_channels", 3))
        # a foreign head's images are read as its dataset's are (eval reads them with data.<id>.mean/std)
        recorded = {**(norm or {}), head: self.spec.norm} if self.foreign else norm
        self.mean, self.std = head_norm(head, recorded, mean, std, self.in_channels, source)
        self.head, self.source = head, source
        self.tile = int(tile or cfg.get("image_size") or DEFAULT_TILE)
        Grid(self.tile, self.tile, self.tile, overlap)  # validates tile/overlap early
        self.overlap, self.batch_size = overlap, max(1, int(batch_size))
        self.decode = dict(method=method, beam_size=beam_size, max_len=max_len, length_penalty=length_penalty)
        self.min_area = min_area
        self.scaler = Scaler(scale)
        self.bands = list(bands) if bands else None

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", **kwargs: Any) -> Predictor:
        """Load a model folder (`save_pretrained`), a training run folder (its best/) or a last.pt."""
        model, norm, datasets = load_checkpoint(path)
        kwargs.setdefault("norm", norm)
        kwargs.setdefault("datasets", datasets)
        return cls(model, device=device, source=str(path), **kwargs)

    @classmethod
    def from_onnx(cls, folder: str | Path, device: str = "cpu", threads: int | None = None,
                  skip_missing: bool = False, **kwargs: Any) -> Predictor:
        """An export folder (`changeagent export --format onnx`) run by onnxruntime (inference/onnx_runtime.py)."""
        from changeagent.inference.onnx_runtime import OnnxModel

        model = OnnxModel(folder, device=device, threads=threads, skip_missing=skip_missing)
        kwargs.setdefault("norm", model.manifest.get("norm"))
        kwargs.setdefault("datasets", model.manifest.get("trained"))
        return cls(model, device="cpu", source=str(folder), **kwargs)

    # ---- model calls -------------------------------------------------------------------------
    def normalise(self, x01: np.ndarray) -> np.ndarray:
        """float32 [C, H, W] in [0, 1] -> normalised float32 [C, H, W]."""
        return normalise(x01, self.mean, self.std, scale=1.0)

    def normalise_raw(self, data: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Raw [C, H, W] with a stretch (lo, hi) per band -> normalised float32 [C, H, W]: clipped to
        [lo, hi], then `data.images.normalise` of (x - lo) over (hi - lo), so a uint8 tile is
        normalised with the very arithmetic of the dataset readers (eval and predict agree)."""
        x = np.clip(data.astype(np.float32), lo[:, None, None], hi[:, None, None])
        if lo.any():
            x -= lo[:, None, None]
        return normalise(x, self.mean, self.std, scale=hi - lo)

    def scale_pair(self, pa: Picture, pb: Picture) -> tuple[np.ndarray, np.ndarray]:
        """Both dates in [0, 1], float32 [C, H, W] each, with ONE stretch fitted on A and B together."""
        lo, hi = self.scaler.fit_pair(pa.data, pa.valid, pb.data, pb.valid, names=(str(pa.path), str(pb.path)))
        return Scaler.apply(pa.data, lo, hi), Scaler.apply(pb.data, lo, hi)

    def prepare(self, pa: Picture, pb: Picture) -> np.ndarray:
        """Raw pair -> normalised float32 [2, C, H, W] (the --scale rule, one stretch for both dates)."""
        lo, hi = self.scaler.fit_pair(pa.data, pa.valid, pb.data, pb.valid, names=(str(pa.path), str(pb.path)))
        return np.stack([self.normalise_raw(p.data, lo, hi) for p in (pa, pb)])

    def run_windows(self, batch: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """float32 [B, 2, C, h, w] normalised (h, w multiples of 32) -> blended-able logits
        [B, channels, h, w] and each window's task fields (e.g. {"caption": ...})."""
        logits, fields, _ = self._run(batch)
        return logits, fields

    def embed_windows(self, batch: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, Any]]:
        """As `run_windows`, plus the model's raw predictions of the same pass (e.g. "pair_emb")."""
        return self._run(batch)

    @torch.inference_mode()
    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, Any]]:
        b, _, c, h, w = batch.shape
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for t in self.tasks
                  for k, v in t.predict_inputs(self.inputs, b, self.task_ctx).items()}
        names = None if self.foreign else [self.head] * b  # foreign: no dataset-specific part is looked up
        out = self.model.predict(x, dataset=names, inputs=inputs, **self.decode)
        try:
            logits = self.dense.dense(out, self.spec) if self.dense is not None else None
            fields = [{k: v for t in self.tasks for k, v in t.window(out, i, self.task_ctx).items()} for i in range(b)]
        except (KeyError, TypeError, AttributeError) as e:
            raise ChangeAgentError(f"{self.source}: model output lacks {e} (incompatible checkpoint)") from None
        if logits is None:
            logits = torch.zeros(b, 0, h, w)
        if logits.shape != (b, self.channels, h, w):
            raise ChangeAgentError(
                f"{self.source}: model output shape {tuple(logits.shape)} != expected {(b, self.channels, h, w)}"
            )
        return logits.float().cpu().numpy(), fields, out

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, Any], list[dict[str, Any]]]:
        """Normalised float32 [2, C, H, W] -> blended logits [K, H, W], the pair's task fields, per-window records.

        One window: its fields. Several: the fields of the pair scaled down to one tile (the caption
        head sees the whole scene), and every window's own fields in the list.
        """
        _, _, H, W = x.shape
        grid = Grid(H, W, self.tile, self.overlap)
        x = pad_to(x, max(H, grid.win_h), max(W, grid.win_w))
        blender = StripBlender(grid, self.channels)
        logits = np.empty((self.channels, H, W), np.float32)
        windows: list[dict[str, Any]] = []
        for r in grid.rows:
            wins = [(r, c) for c in grid.cols]
            for i in range(0, len(wins), self.batch_size):
                chunk = wins[i : i + self.batch_size]
                batch = np.stack([x[:, :, r0 : r0 + grid.win_h, c0 : c0 + grid.win_w] for r0, c0 in chunk])
                lg, fields = self.run_windows(batch)
                for (r0, c0), one, f in zip(chunk, lg, fields):
                    blender.add(r0, c0, one)
                    windows.append({"row": r0, "col": c0, "height": min(grid.win_h, H - r0),
                                    "width": min(grid.win_w, W - c0), **f})
            first, lg, _ = blender.flush()
            logits[:, first : first + lg.shape[1]] = lg
        if len(windows) == 1:
            one = {k: v for k, v in windows[0].items() if k not in ("row", "col", "height", "width")}
            return logits, one, []
        return logits, self.overview(x[:, :, :H, :W]), windows

    def overview(self, x: np.ndarray) -> dict[str, Any]:
        """The task fields of [2, C, H, W] area-resampled so its long side is one tile."""
        _, c, H, W = x.shape
        f = self.tile / max(H, W)
        h, w = max(1, round(H * f)), max(1, round(W * f))
        small = F.interpolate(torch.from_numpy(np.ascontiguousarray(x)), size=(h, w), mode="area").numpy()
        small = pad_to(small, ceil_to(h), ceil_to(w))
        return self.run_windows(small[None])[1][0]

    # ---- public API --------------------------------------------------------------------------
    def _pictures(self, a: Any, b: Any, align: bool) -> tuple[Picture, Picture]:
        if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            pics = []
            for arr, name in ((a, "array A"), (b, "array B")):
                arr = arr[..., None] if arr.ndim == 2 else arr
                if arr.ndim != 3:
                    raise ChangeAgentError(f"{name} must be [H, W] or [H, W, C], got shape {arr.shape}")
                data = np.ascontiguousarray(arr.transpose(2, 0, 1))
                idx = select_bands(data.shape[0], self.bands, self.in_channels, name)  # the files' rule
                pics.append(Picture(np.ascontiguousarray(data[[i - 1 for i in idx]]), None, name))
            if pics[0].data.shape != pics[1].data.shape:
                raise ChangeAgentError(f"arrays differ in shape: {a.shape} vs {b.shape}")
            return pics[0], pics[1]
        return read_pair(str(a), str(b), self.bands, self.in_channels, align)

    def prepare_pair(self, a: Any, b: Any, align: bool = False) -> np.ndarray:
        """Normalised float32 [2, C, H, W] of a pair (paths or arrays), as `infer` takes it."""
        pa, pb = self._pictures(a, b, align)
        return self.prepare(pa, pb)

    def predict(self, a: Any, b: Any, align: bool = False) -> post.Prediction:
        """Mask, change, caption, changed fractions and object counts of one pair (paths or arrays)."""
        t0 = time.perf_counter()
        pa, pb = self._pictures(a, b, align)
        return self.predict_pictures([(pa, pb)], t_read=time.perf_counter() - t0)[0]

    def ask(self, a: Any, b: Any, question: str, align: bool = False) -> dict[str, Any]:
        """The qa head's answer to `question` about a pair, and the measured one with its evidence
        (inference/ask.py)."""
        from changeagent.inference.ask import ask

        return ask(self, a, b, question, align=align)
    def ground(self, a: Any, b: Any, expression: str, route: str = "auto", align: bool = False,
               progress: bool = False, check: Any = None) -> Any:
        """The mask of the change `expression` describes (`inference.ground.Grounding`: mask bool
        [H, W], route, record()); route: auto | learned (grounding head) | program (parse + cut);
        `check()` runs before every model call (a deadline)."""
        from changeagent.inference.ground import ground_pictures

        pa, pb = self._pictures(a, b, align)
        return ground_pictures(self, pa, pb, expression, route, progress, check)

    def predict_pictures(self, pairs: Sequence[tuple[Picture, Picture]],
                         t_read: float = 0.0) -> list[post.Prediction]:
        """Several pairs; pairs that fit in one window and share a size are run as one batch."""
        results: list[post.Prediction | None] = [None] * len(pairs)
        prepared, valids = [], []
        for pa, pb in pairs:
            valid = both_valid(pa.valid, pb.valid)
            if valid is not None and not valid.any():
                raise ChangeAgentError(f"{pa.path} / {pb.path}: every pixel is nodata in one of the inputs")
            prepared.append(self.prepare(pa, pb))
            valids.append(valid)
        singles: dict[tuple[int, ...], list[int]] = {}
        for i, x in enumerate(prepared):
            H, W = x.shape[-2:]
            if H <= self.tile and W <= self.tile:
                singles.setdefault(x.shape, []).append(i)
                continue
            t0 = time.perf_counter()
            logits, pair_fields, windows = self.infer(x)
            results[i] = self._finish(logits, pair_fields, windows, valids[i],
                                      {"model_s": time.perf_counter() - t0})
        for shape, idx in singles.items():
            H, W = shape[-2:]
            for j in range(0, len(idx), self.batch_size):
                part = idx[j : j + self.batch_size]
                t0 = time.perf_counter()
                lg, fields = self.run_windows(pad_to(np.stack([prepared[i] for i in part]), ceil_to(H), ceil_to(W)))
                dt = (time.perf_counter() - t0) / len(part)
                for i, one, f in zip(part, lg, fields):
                    results[i] = self._finish(one[:, :H, :W], f, [], valids[i], {"model_s": dt})
        for r in results:
            assert r is not None
            r.timings["read_s"] = t_read / len(pairs)
        return [r for r in results if r is not None]

    def _finish(self, logits: np.ndarray, fields: dict[str, Any], windows: list[dict[str, Any]],
                valid: np.ndarray | None, timings: dict[str, float]) -> post.Prediction:
        t0 = time.perf_counter()
        if self.dense is None:  # no per-pixel task: the record holds the other tasks' fields only
            pred = post.Prediction({}, fields, {}, {}, None, self.spec, dict(timings), windows, {},
                                   size=tuple(logits.shape[-2:]))
            pred.timings["post_s"] = time.perf_counter() - t0
            return pred
        maps = post.decode_maps(logits, self.spec, valid)
        fr = post.fractions(post.class_histogram(maps, self.spec), self.spec)
        counts = post.object_counts(maps, self.spec, self.min_area)
        extra = {k: v for k, v in fr.items() if k not in ("changed_fraction", "change_fraction")}
        pred = post.Prediction(maps, fields, fr["changed_fraction"], counts, fr["change_fraction"],
                               self.spec, dict(timings), windows, extra)
        pred.timings["post_s"] = time.perf_counter() - t0
        return pred

