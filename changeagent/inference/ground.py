"""Change grounding at inference: the mask of the change a sentence describes (SPEC §9, docs/inference.md).

    g = predictor.ground("A.png", "B.png", "new buildings in the top left", route="auto")
    g.mask (bool [H, W]), g.route ("learned" | "program"), g.record() (area, components, boxes, ...)

Routes: `learned` = the grounding head (`models/grounding_head.py`, sigmoid >= 0.35 as in
evaluation); `program` = `data.grounding.parse` + `cut` on the model's own predicted class maps
(decoded by the one rule `models.mask_decoder.class_maps`, as eval and predict do); `auto` = learned
when the model has the grounding head, else program. Every route first reads the expression with the
grounding grammar (`parse`), so an empty expression or an unknown class/place word is an error naming
the vocabulary, never a silent mask. One encoder pass per window serves the mask head and the
grounding head; pairs larger than a tile are windowed and their logits blended (`inference.tiling`).

`write_ground` writes `<name>_ground.png` (or `.tif` georeferenced like A, plus `<name>_ground.geojson`
of its polygons via `rasterio.features.shapes`), `<name>_ground_overlay.png` and `<name>_ground.json`,
all staged in a temporary folder and moved into place at the end: an error leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from changeagent.data.grounding.query import DATASET_SPACE, Query, cut
from changeagent.errors import ChangeAgentError
from changeagent.fileio import staged_files
from changeagent.inference import outputs as out
from changeagent.inference.raster import Picture, both_valid
from changeagent.inference.tiling import Grid, StripBlender, ceil_to, pad_to

ROUTES = ("auto", "learned", "program")
GROUND_PALETTE = [(0, 0, 0), (255, 0, 255)]  # 0 outside, 1 the referred change (255 nodata)


@dataclass
class Grounding:
    """One answer: mask bool [H, W] (False on nodata), the route that answered, the parsed query."""

    expression: str
    route: str
    mask: np.ndarray
    query: Query | None
    valid: np.ndarray | None
    head: str
    threshold: float | None = None
    pictures: tuple[Picture, Picture] | None = None  # the read pair (overlay, georeferencing)

    def record(self) -> dict[str, Any]:
        """JSON-ready: area (pixels, fraction of the valid pixels), components (`lexicon.components`,
        8-connected, >= 6 px) and their boxes [y0, x0, y1, x1) in pixels."""
        from changeagent.data.lexicon import components

        pixels = int(self.mask.sum())
        total = int(self.valid.sum()) if self.valid is not None else int(self.mask.size)
        _, comps = components(self.mask)
        return {"expression": self.expression, "route": self.route, "head": self.head,
                "query": self.query.to_dict() if self.query is not None else None,
                "area": {"pixels": pixels, "fraction": pixels / max(total, 1)},
                "components": len(comps),
                "boxes": [{"y0": c.bbox[0], "x0": c.bbox[1], "y1": c.bbox[2], "x1": c.bbox[3], "area": c.area}
                          for c in comps],
                "height": int(self.mask.shape[0]), "width": int(self.mask.shape[1]),
                **({"threshold": self.threshold} if self.threshold is not None else {})}


def has_grounding_head(pred: Any) -> bool:
    return any(t.name == "grounding" for t in pred.tasks)


def choose_route(pred: Any, route: str) -> str:
    """`auto` -> learned when the model has the grounding head, else program; checks the choice."""
    if route not in ROUTES:
        raise ChangeAgentError(f"--route must be one of {', '.join(ROUTES)}, got {route!r}")
    has = has_grounding_head(pred)
    if route == "auto":
        route = "learned" if has else "program"
    if route == "learned" and not has:
        raise ChangeAgentError(f"{pred.source}: the model has no grounding head (its tasks: "
                               f"{', '.join(t.name for t in pred.tasks)}); use --route program, or train with "
                               "model.tasks including grounding")
    if route == "program" and (pred.head not in DATASET_SPACE or pred.dense is None):
        raise ChangeAgentError(f"{pred.source}: the program route cuts the answer from class maps, but the "
                               f"{pred.head} head predicts none (heads with class maps: {sorted(DATASET_SPACE)}); "
                               "choose one with --head")
    return route


def read_expression(pred: Any, expression: str, route: str) -> Query | None:
    """Parse the expression with the grammar of the head's label space (errors list the vocabulary).

    A learned route on a head without class maps checks the words against the head's own vocabulary.
    """
    from changeagent.data.grounding.parser import parse, vocabulary

    if not isinstance(expression, str) or not expression.strip():
        raise ChangeAgentError("grounding: the expression is empty; say what to segment, e.g. 'new buildings'")
    if pred.head in DATASET_SPACE:
        return parse(expression, pred.head)
    from changeagent.data.qa.vocab import tokenize_question

    vocab = pred.model.grounding_head.vocab
    known = set(vocab.words[2:])
    unknown = [w for w in tokenize_question(expression) if w not in known]
    if unknown:
        words = sorted({w for v in vocabulary("second").values() for w in v} | set(vocabulary("levir")["classes"]))
        raise ChangeAgentError(f"grounding: unknown word(s) {', '.join(map(repr, dict.fromkeys(unknown)))} in "
                               f"{expression.strip()!r}; known class/place words: {', '.join(words)}")
    return None


@torch.inference_mode()
def _windows(pred: Any, batch: np.ndarray, expression: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 [B, 2, C, h, w] -> (mask-task logits [B, K, h, w], grounding logits [B, h, w] or None);
    one encoder pass, only the mask and grounding heads (no caption decoding)."""
    b = batch.shape[0]
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(pred.device)
    tasks = [t.name for t in pred.tasks if t.name in ("mask", "grounding") and (t.name != "grounding" or expression)]
    inputs = {"expressions": [expression] * b, "expression_pairs": torch.arange(b, device=pred.device)} \
        if expression else None
    o = pred.model.predict(x, dataset=[pred.head] * b, tasks=tasks, inputs=inputs)
    dense = pred.dense.dense(o, pred.spec).float().cpu().numpy() if pred.dense is not None \
        else np.zeros((b, 0, *batch.shape[-2:]), np.float32)
    g = o.get("grounding")
    return dense, (g[:, 0].float().cpu().numpy() if g is not None else None)


def ground_prepared(pred: Any, x: np.ndarray, expression: str | None, progress: bool = False,
                    check: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalised float32 [2, C, H, W] -> blended (mask-task logits [K, H, W], grounding logits [H, W] | None).

    `check` is called before every model call (the app's request deadline raises from it)."""
    _, _, H, W = x.shape
    k = pred.channels
    check = check or (lambda: None)
    if H <= pred.tile and W <= pred.tile:  # one window, padded to a multiple of 32
        check()
        d, g = _windows(pred, pad_to(x[None], ceil_to(H), ceil_to(W)), expression)
        return d[0][:, :H, :W], (g[0][:H, :W] if g is not None else None)
    grid = Grid(H, W, pred.tile, pred.overlap)
    x = pad_to(x, max(H, grid.win_h), max(W, grid.win_w))
    blender = StripBlender(grid, k + 1)
    logits = np.empty((k + 1, H, W), np.float32)
    learned = False
    bar = tqdm(total=len(grid), desc="ground windows", unit="win", disable=not progress)
    for r in grid.rows:
        wins = [(r, c) for c in grid.cols]
        for i in range(0, len(wins), pred.batch_size):
            chunk = wins[i : i + pred.batch_size]
            batch = np.stack([x[:, :, r0 : r0 + grid.win_h, c0 : c0 + grid.win_w] for r0, c0 in chunk])
            check()
            d, g = _windows(pred, batch, expression)
            learned = g is not None
            g = g if g is not None else np.zeros(d.shape[:1] + d.shape[2:], np.float32)
            for (r0, c0), one, gl in zip(chunk, d, g):
                blender.add(r0, c0, np.concatenate([one, gl[None]]))
            bar.update(len(chunk))
        first, lg, _ = blender.flush()
        logits[:, first : first + lg.shape[1]] = lg
    bar.close()
    return logits[:k], (logits[k] if learned else None)


def ground_pictures(pred: Any, pa: Picture, pb: Picture, expression: str, route: str = "auto",
                    progress: bool = False, check: Callable[[], None] | None = None) -> Grounding:
    """The answer for one read pair (see the module docstring)."""
    from changeagent.inference import postprocess as post
    from changeagent.metrics.grounding import REFERENCE_THRESHOLD, binarize

    route = choose_route(pred, route)
    query = read_expression(pred, expression, route)
    if route == "program" and query is None:  # choose_route admits program only on class-map heads
        raise AssertionError("program route without a parsed query")
    valid = both_valid(pa.valid, pb.valid)
    if valid is not None and not valid.any():
        raise ChangeAgentError(f"{pa.path} / {pb.path}: every pixel is nodata in one of the inputs")
    x = pred.prepare(pa, pb)
    dense, glog = ground_prepared(pred, x, expression.strip() if route == "learned" else None, progress, check)
    threshold = None
    if route == "learned":
        assert glog is not None, "the grounding head gave no output"
        mask = binarize(torch.from_numpy(glog), REFERENCE_THRESHOLD).numpy()
        threshold = REFERENCE_THRESHOLD
    else:
        assert query is not None
        maps = post.decode_maps(dense, pred.spec, valid)
        arr = np.stack([maps["from"], maps["to"]]) if pred.spec.decoding == "semantic_pair" else maps["mask"]
        mask = cut(query, arr.astype(np.int64))
    if valid is not None:
        mask = mask & valid
    return Grounding(expression.strip(), route, mask.astype(bool), query, valid, pred.head, threshold, (pa, pb))


# ---- writing --------------------------------------------------------------------------------------
def _mask_u8(g: Grounding) -> np.ndarray:
    m = g.mask.astype(np.uint8)
    if g.valid is not None:
        m[~g.valid] = out.NODATA
    return m


def _overlay(pred: Any, pa: Picture, pb: Picture, g: Grounding) -> Any:
    a01, b01 = pred.scale_pair(pa, pb)
    m = g.mask.astype(np.uint8)
    panels = [out.to_display(a01), out.overlay(out.to_display(b01), m, GROUND_PALETTE)]
    text = f"{g.expression} [{g.route}]: {g.record()['components']} object(s), {int(m.sum())} px"
    return out.visualisation(panels, text)


def _polygons(g: Grounding, transform: Any) -> list[dict[str, Any]]:
    """GeoJSON Features of the mask's polygons (`rasterio.features.shapes`, 8-connected) in the CRS."""
    from rasterio import features

    feats = []
    m = g.mask.astype(np.uint8)
    for geom, value in features.shapes(m, mask=g.mask, transform=transform, connectivity=8):
        if value == 1:
            feats.append({"type": "Feature", "geometry": geom, "properties": {"expression": g.expression,
                                                                              "route": g.route}})
    return feats


def write_ground(pred: Any, g: Grounding, out_dir: str | Path, name: str | None = None,
                 scene: bool = False) -> dict[str, Any]:
    """Write the answer's files (module docstring); returns the record (also `<name>_ground.json`)."""
    assert g.pictures is not None, "write_ground needs the answer of ground_pictures"
    pa, pb = g.pictures
    out_dir = Path(out_dir)
    name = name or Path(str(pa.path)).stem
    rec = g.record()
    if scene and not pa.georeferenced:
        raise ChangeAgentError(f"--scene: {pa.path} is not georeferenced (no CRS); ground it as a pair")
    mask_name = f"{name}_ground.tif" if scene else f"{name}_ground.png"
    files = {"mask": mask_name, "overlay": f"{name}_ground_overlay.png", "record": f"{name}_ground.json"}
    if scene:
        files["geojson"] = f"{name}_ground.geojson"
    rec.update({"a": str(pa.path), "b": str(pb.path), **{k: str(out_dir / v) for k, v in files.items()}})
    with staged_files(out_dir) as tmp:
        if scene:
            out.write_geotiff(tmp / mask_name, _mask_u8(g), pa.crs, pa.transform, GROUND_PALETTE)
            feats = _polygons(g, pa.transform)
            collection: dict[str, Any] = {"type": "FeatureCollection", "features": feats}
            if pa.crs is not None:  # RFC 7946 drops `crs`, but GDAL/QGIS read it for projected CRSs
                collection["crs"] = {"type": "name", "properties": {"name": pa.crs.to_string()}}
            out.write_json(tmp / files["geojson"], collection)
            rec.update({"crs": pa.crs.to_string(), "transform": list(pa.transform)[:6], "polygons": len(feats)})
        else:
            out.write_png(tmp / mask_name, _mask_u8(g), GROUND_PALETTE)
        out.write_image(tmp / files["overlay"], _overlay(pred, pa, pb, g))
        out.write_json(tmp / files["record"], rec)
    return rec
