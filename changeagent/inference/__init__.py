"""Inference: mask + caption for tile pairs, folders of pairs and whole georeferenced scenes.

    from changeagent.inference import Predictor
    pred = Predictor.from_pretrained("ckpt/").predict("A.png", "B.png")
"""

from changeagent.inference.postprocess import Prediction
from changeagent.inference.predictor import Predictor

__all__ = ["Prediction", "Predictor"]
