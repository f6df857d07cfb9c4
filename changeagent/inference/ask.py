"""Ask a model about a change: the learned answer (the qa head) and the measured one (the answer rules of
data/qa/rules.py on the model's own decoded maps of the same pass, with their evidence).

    ask(predictor, a, b, question) -> {"question", "type", "structure", "answer", "probability",
                                       "measured": {"answer", "evidence"} | None, "head"}

`a`, `b`: image paths or [H, W(, C)] arrays (a scene window: `read_window`). The question is parsed in
the label space of the predictor's head dataset (`data.qa.parse`); a question it cannot read, an empty
one, one naming a class outside that label space, or a model without the qa head is a ChangeAgentError
(the CLI: `error: ...`, exit 2) that says why and lists the types it answers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from changeagent.errors import ChangeAgentError


def ask(predictor: Any, a: Any, b: Any, question: str, align: bool = False) -> dict[str, Any]:
    from changeagent.data.lexicon import DATASET_LEXICON, lexicon_for
    from changeagent.data.qa.parse import parse_question
    from changeagent.data.qa.rules import RuleError, measured_answer

    if "qa" not in [t.name for t in predictor.tasks]:
        raise ChangeAgentError(f"{predictor.source}: the model has no qa head (its tasks: "
                               f"{', '.join(t.name for t in predictor.tasks)}); train it with model.tasks "
                               f"including qa")
    spec = predictor.spec
    if spec.id not in DATASET_LEXICON:
        raise ChangeAgentError(f"--head {spec.id}: no question label space for this dataset; use one of "
                               f"{', '.join(sorted(DATASET_LEXICON))}")
    lexicon = lexicon_for(spec.id)
    q = parse_question(question, lexicon)  # ParseError (a ChangeAgentError) says why and lists the types
    saved = predictor.inputs
    predictor.inputs = {**saved, "question": question}
    try:
        pred = predictor.predict(a, b, align=align)
    finally:
        predictor.inputs = saved
    measured: dict[str, Any] | None = None
    if pred.maps and spec.dates:
        try:
            m = measured_answer(q, pred.maps, lexicon, spec.dates)
            measured = {"answer": m.answer, "evidence": m.evidence}
        except RuleError as e:
            measured = {"answer": None, "evidence": {"error": str(e)}}
    return {"question": question, "type": q.type, "structure": q.to_dict(), "answer": pred.fields.get("qa_answer"),
            "probability": pred.fields.get("qa_probability"), "measured": measured, "head": spec.id}


def read_window(path_a: str, path_b: str, window: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The window (x, y, width, height) of two co-registered rasters as [h, w, C] arrays."""
    import rasterio
    from rasterio.windows import Window

    x, y, w, h = window
    if w < 1 or h < 1 or x < 0 or y < 0:
        raise ChangeAgentError(f"--window {x},{y},{w},{h}: needs x, y >= 0 and width, height >= 1")
    out = []
    for path in (path_a, path_b):
        try:
            with rasterio.open(path) as src:
                if x + w > src.width or y + h > src.height:
                    raise ChangeAgentError(f"--window {x},{y},{w},{h} is outside {path} ({src.width}x{src.height})")
                out.append(np.moveaxis(src.read(window=Window(x, y, w, h)), 0, -1))
        except rasterio.errors.RasterioIOError as e:
            raise ChangeAgentError(f"cannot read raster {path}: {e}") from None
    return out[0], out[1]


def point_window(path: str, x: int, y: int, size: int) -> tuple[int, int, int, int]:
    """A window of `size` px (clipped to the raster) centred on pixel (x, y) of `path`."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            width, height = src.width, src.height
    except rasterio.errors.RasterioIOError as e:
        raise ChangeAgentError(f"cannot read raster {path}: {e}") from None
    if not (0 <= x < width and 0 <= y < height):
        raise ChangeAgentError(f"--point {x},{y} is outside {path} ({width}x{height})")
    w, h = min(size, width), min(size, height)
    x0 = min(max(0, x - w // 2), width - w)
    y0 = min(max(0, y - h // 2), height - h)
    return x0, y0, w, h
