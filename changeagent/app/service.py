"""The one set of functions the web app and the MCP server share (SPEC §10).

    svc = ChangeService.from_checkpoint("runs/x/best", roots=["data/"], out="app_out/")
    svc.detect_changes("A.png", "B.png")      # -> DetectResult (mask + overlay written, classes, caption)
    svc.describe("A.png", "B.png")            # -> DescribeResult
    svc.count("A.png", "B.png", "building")   # -> CountResult
    svc.search("scene1", "new buildings", 5)  # -> SearchResult (`changeagent search --json`)
    svc.tools()                               # the tools this model and these indexes offer

Inputs are paths under the roots (`paths.Roots`), or files the web app received (`Upload`, whose
name is never used). Every request gets a fresh folder under the output folder, passes the `Gate`
(concurrency and queue limits) and runs under a `Deadline`. Plain images (PNG/JPEG...) are read whole
(pair mode, as `changeagent predict A B`); GeoTIFFs and anything larger than pair mode allows are run
as scenes (windowed, bounded memory, as `predict --scene`). Bad input raises `ChangeAgentError` with
a message for the user; the faces turn it into an error answer and keep serving.

Optional tools: `TOOL_TASKS` names the model task each tool needs; a tool is offered only when the
model has that task (`model_tasks`) and this class implements it. The question-answering (`ask`) and
grounding (`ground`) heads add their method here, their result model to `schemas.py` and a line to
each face's tool table (docs/app.md, "Adding a tool").
"""

from __future__ import annotations

import contextvars
import functools
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from changeagent.app.limits import Deadline, Gate, Limits
from changeagent.app.paths import OutputFolder, Roots
from changeagent.app.runs import image_size, run_pair, run_scene, use_scene
from changeagent.app.schemas import CountResult, DescribeResult, DetectResult, SearchResult
from changeagent.errors import ChangeAgentError
from changeagent.inference.outputs import write_json

# tool -> model task it needs ("index": at least one --index). ask/ground join with their heads.
TOOL_TASKS: dict[str, str] = {
    "detect_changes": "mask",
    "describe": "caption",
    "count": "mask",
    "search": "index",
    "ask": "qa",
    "ground": "grounding",
}

_DEADLINE: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("changeagent_deadline", default=None)
_CACHE_SIZE = 16


def model_tasks(model: Any) -> set[str]:
    """What a loaded model can do: its tasks (`model.tasks`, one head each: docs/design.md "Tasks")."""
    return set(model.tasks)


@dataclass(frozen=True)
class Upload:
    """A file the web app received. Only its server-side path is used, never the name the browser sent."""

    path: Path


Source = str | os.PathLike[str] | Upload


@contextmanager
def _scrubbed(a: Source, b: Source) -> Iterator[None]:
    """Errors about an upload name it "A (the upload)", not by its server-side temp path."""
    try:
        yield
    except ChangeAgentError as e:
        msg = str(e)
        for src, label in ((a, "A (the upload)"), (b, "B (the upload)")):
            if isinstance(src, Upload):
                msg = msg.replace(str(Path(src.path).resolve()), label).replace(str(src.path), label)
        if msg == str(e):
            raise
        raise type(e)(msg) from None


@functools.cache
def _guarded_predictor_class() -> type:
    from changeagent.inference.predictor import Predictor

    class GuardedPredictor(Predictor):
        """A Predictor that checks the current request's deadline before every batch of windows."""

        def run_windows(self, batch: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
            deadline = _DEADLINE.get()
            if deadline is not None:
                deadline.check()
            return super().run_windows(batch)

    return GuardedPredictor


class ChangeService:
    """A loaded model, the roots, the indexes and the output folder, shared by every request."""

    def __init__(self, model: Any, *, roots: Sequence[str | Path], out: str | Path,
                 indexes: Sequence[str | Path] = (), limits: Limits | None = None, device: str = "cpu",
                 norm: dict[str, Any] | None = None, datasets: dict[str, dict[str, Any]] | None = None,
                 source: str = "model", **predictor_options: Any) -> None:
        self.limits = limits or Limits()
        self.roots = Roots(roots)
        self.out = OutputFolder(out, keep=self.limits.keep)
        self.gate = Gate(self.limits)
        self.source = source
        self.progress = False  # tqdm bars for scenes (the web app shows them through gr.Progress)
        self._model, self._device, self._norm, self._datasets = model, device, norm, datasets
        self._options = predictor_options
        self._predictors: dict[str | None, Any] = {}
        self._lock = threading.Lock()
        self.default = self.predictor(None)  # validates the checkpoint's heads and options now
        self.tasks = model_tasks(model)
        self.heads = list(datasets or {}) or [self.default.head]
        self.indexes = self._open_indexes(indexes)
        if self.indexes:
            self.tasks.add("index")
        self._cache: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, **kwargs: Any) -> ChangeService:
        """Load a model folder (a run's best/), a run folder or a last.pt once, for every request."""
        from changeagent.inference.predictor import load_checkpoint

        model, norm, datasets = load_checkpoint(checkpoint)
        return cls(model, norm=norm, datasets=datasets, source=str(checkpoint), **kwargs)

    # ---- what is offered -----------------------------------------------------------------------
    def offers(self, tool: str) -> bool:
        """True when the model has the tool's task and this version implements the tool."""
        return TOOL_TASKS.get(tool) in self.tasks and callable(getattr(self, tool, None))

    def tools(self) -> list[str]:
        return [t for t in TOOL_TASKS if self.offers(t)]

    def classes(self, head: str | None = None) -> list[str]:
        from changeagent.inference import postprocess as post

        return list(post.class_names(self.predictor(head).spec))

    def predictor(self, head: str | None) -> Any:
        """The Predictor of `head` (default: the model's default head); all share the one model."""
        with self._lock:
            if head not in self._predictors:
                cls = _guarded_predictor_class()
                self._predictors[head] = cls(self._model, device=self._device, head=head, norm=self._norm,
                                             datasets=self._datasets, source=self.source, **self._options)
            return self._predictors[head]

    # ---- the tools -----------------------------------------------------------------------------
    def detect_changes(self, a: Source, b: Source, head: str | None = None) -> DetectResult:
        """Change mask (written under the output folder), per-class areas and object counts, caption."""
        with _scrubbed(a, b):
            pa, pb = self._input(a, "a"), self._input(b, "b")
            with self._request() as folder:
                rec = self._analyse(pa, pb, head, folder)
        return DetectResult.model_validate(rec)

    def describe(self, a: Source, b: Source) -> DescribeResult:
        """The change caption of a pair (nothing is kept in the output folder)."""
        with _scrubbed(a, b):
            pa, pb = self._input(a, "a"), self._input(b, "b")
            return DescribeResult(caption=self._stats(pa, pb, None)["caption"])

    def count(self, a: Source, b: Source, cls: str, head: str | None = None) -> CountResult:
        """Objects (8-connected components of at least min_area px) of class `cls`."""
        names = self.classes(head)
        if cls not in names:
            raise ChangeAgentError(f"cls {cls!r} is not a change class of head {self.predictor(head).head} "
                                   f"(classes: {', '.join(names)})")
        with _scrubbed(a, b):
            pa, pb = self._input(a, "a"), self._input(b, "b")
            stats = self._stats(pa, pb, head)
        objects = next(c["objects"] for c in stats["classes"] if c["name"] == cls)
        return CountResult(count=objects, cls=cls, min_area=stats["min_area"])

    def search(self, index: str, text: str, k: int = 10, thumbnails: bool = False) -> SearchResult:
        """`changeagent search --json` over the configured index named `index`.

        With `thumbnails` (the web app), each hit whose images lie under the roots gets
        `thumbnail_path` (A | B), and scene hits a `footprints_path` overview and a `geojson_path`.
        """
        if not self.indexes:
            raise ChangeAgentError("search: this server was started without --index")
        if index not in self.indexes:
            raise ChangeAgentError(f"search: no index named {index!r} (indexes: {', '.join(self.indexes)})")
        if not isinstance(k, int) or not 1 <= k <= 100:
            raise ChangeAgentError(f"search: k must be an integer from 1 to 100, got {k!r}")
        if not isinstance(text, str) or not text.strip():
            raise ChangeAgentError("search: empty query; give some words describing the change")
        searcher = self.indexes[index]
        with self._request(gated=False) as folder:
            res = searcher.search(text, k)
            if thumbnails:
                from changeagent.app.thumbnails import annotate

                annotate(self, searcher, res, folder)
                res["json_path"] = str(folder / "results.json")
                write_json(folder / "results.json", res)
        return SearchResult.of(res)

    def ground(self, a: Source, b: Source, expression: str, route: str = "auto", head: str | None = None) -> Any:
        """The mask of the change `expression` describes (`changeagent ground`), written under the output
        folder: `GroundResult` (mask, area, components, boxes, the route that answered)."""
        from changeagent.app.schemas import GroundResult
        from changeagent.inference.ground import write_ground

        if not isinstance(expression, str) or not expression.strip():
            raise ChangeAgentError("ground: the expression is empty; say what to segment, e.g. 'new buildings'")
        with _scrubbed(a, b):
            pa, pb = self._input(a, "a"), self._input(b, "b")
            with self._request() as folder:
                pred = self.predictor(head)
                deadline = _DEADLINE.get()
                g = pred.ground(pa, pb, expression, route=route, progress=self.progress,
                                check=deadline.check if deadline is not None else None)
                assert g.pictures is not None
                rec = write_ground(pred, g, folder, scene=g.pictures[0].georeferenced and g.pictures[1].georeferenced)
        return GroundResult(mask_path=rec["mask"], overlay_path=rec["overlay"], record_path=rec["record"],
                            geojson_path=rec.get("geojson"), **{k: rec[k] for k in (
                                "expression", "route", "area", "components", "boxes", "head")})
    def ask(self, a: Source, b: Source, question: str, head: str | None = None) -> Any:
        """The qa head's answer to `question` about a pair and the measured one with its evidence
        (`Predictor.ask`) -> AskResult. The pair is read whole (pair mode), so a scene is refused:
        `changeagent ask --scene A B --window ...` asks about a window of it."""
        import copy

        from changeagent.app.schemas import AskResult
        from changeagent.inference.raster import MAX_PAIR_PIXELS

        if not isinstance(question, str) or not question.strip():
            raise ChangeAgentError("ask: empty question; ask e.g. 'how many buildings were built?'")
        with _scrubbed(a, b):
            pa, pb = self._input(a, "a"), self._input(b, "b")
            w, h = image_size(pa, "a")
            if w * h > MAX_PAIR_PIXELS:
                raise ChangeAgentError(f"a: ask reads a pair whole and the image is {w}x{h}, more than "
                                       f"{MAX_PAIR_PIXELS} pixels; ask about a window of the scene with "
                                       f"`changeagent ask --scene A B --window x,y,w,h`")
            # a shallow copy: Predictor.ask rebinds `inputs` (the question) for its pass, and the shared
            # predictor serves concurrent requests; the model and its weights stay shared
            pred = copy.copy(self.predictor(head))
            with self._request(keep=False):
                rec = pred.ask(str(pa), str(pb), question)
        return AskResult.model_validate(rec)

    # ---- internals -----------------------------------------------------------------------------
    def _open_indexes(self, indexes: Sequence[str | Path]) -> dict[str, Any]:
        from changeagent.inference.search import Searcher

        out: dict[str, Any] = {}
        for p in indexes:
            name = Path(p).resolve().name
            if name in out:
                name = str(Path(p).resolve())
            out[name] = Searcher.from_index(p)
        return out

    def _input(self, src: Source, what: str) -> Path:
        """The real path of an input, confined to the roots (uploads: checked for size), and its pixels."""
        if isinstance(src, Upload):
            p = Path(src.path)
            if not p.is_file():
                raise ChangeAgentError(f"{what}: the uploaded file is missing")
            size = p.stat().st_size
            if size > self.limits.max_upload_bytes:
                raise ChangeAgentError(f"{what}: the upload is {size / 2**20:.1f} MiB, more than the limit of "
                                       f"{self.limits.max_upload_mb:g} MiB")
        else:
            p = self.roots.resolve(src, what)
        w, h = image_size(p, what)
        if w * h > self.limits.max_pixels:
            raise ChangeAgentError(f"{what}: the image is {w}x{h} ({w * h / 1e6:.3g} megapixels), more than the "
                                   f"limit of {self.limits.max_megapixels:g} megapixels")
        return p

    @contextmanager
    def _request(self, gated: bool = True, keep: bool = True) -> Iterator[Path]:
        """One request: a slot of the gate (when `gated`), its deadline and a fresh output folder,
        which is removed afterwards unless `keep` (and always when the request fails)."""
        with self.gate.slot() if gated else nullcontext():
            token = _DEADLINE.set(Deadline(self.limits.timeout_s))
            folder = self.out.new_request()
            done = False
            try:
                yield folder
                done = True
            finally:
                _DEADLINE.reset(token)
                if not (keep and done):
                    shutil.rmtree(folder, ignore_errors=True)

    def _key(self, a: Path, b: Path, head: str | None) -> tuple[Any, ...]:
        sa, sb = a.stat(), b.stat()
        return (str(a), sa.st_mtime_ns, sa.st_size, str(b), sb.st_mtime_ns, sb.st_size,
                self.predictor(head).head)

    def _stats(self, a: Path, b: Path, head: str | None) -> dict[str, Any]:
        """The analysis of a pair, from the cache or run into a scratch folder that is then removed."""
        key = self._key(a, b, head)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        with self._request(keep=False) as folder:
            return self._analyse(a, b, head, folder)

    def _remember(self, key: tuple[Any, ...], rec: dict[str, Any]) -> None:
        with self._lock:
            self._cache[key] = rec
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)

    def _analyse(self, a: Path, b: Path, head: str | None, folder: Path) -> dict[str, Any]:
        pred = self.predictor(head)
        t0 = time.perf_counter()
        if use_scene(a, b):
            rec = run_scene(pred, a, b, folder, progress=self.progress)
        else:
            rec = run_pair(pred, a, b, folder)
        rec["timings"] = {**rec.get("timings", {}), "request_s": round(time.perf_counter() - t0, 4)}
        self._remember(self._key(a, b, head), {k: rec[k] for k in ("caption", "classes", "min_area")})
        return rec

