"""Inference: mask + caption for tile pairs, folders of pairs and whole georeferenced scenes.

    from changeagent.inference import Predictor
    pred = Predictor.from_pretrained("ckpt/").predict("A.png", "B.png")
"""

from __future__ import annotations

from changeagent.lazy import lazy_getattr

# name -> module; imported on first use so that `changeagent <cmd> --help` never loads torch
_LAZY = {
    "Prediction": "changeagent.inference.postprocess",
    "Predictor": "changeagent.inference.predictor",
}

__all__ = ["Prediction", "Predictor"]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
