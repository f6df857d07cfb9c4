"""Inference: mask + caption for tile pairs, folders of pairs and whole georeferenced scenes.

    from changeagent.inference import Predictor
    pred = Predictor.from_pretrained("ckpt/").predict("A.png", "B.png")
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module; imported on first use so that `changeagent <cmd> --help` never loads torch
_LAZY = {
    "Prediction": "changeagent.inference.postprocess",
    "Predictor": "changeagent.inference.predictor",
}

__all__ = ["Prediction", "Predictor"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
