"""The joint change-mask / change-caption model: `create_model(cfg, vocab_size)` -> ChangeCaptioner."""

from changeagent.models.change_captioner import ChangeCaptioner
from changeagent.models.factory import create_model

__all__ = ["ChangeCaptioner", "create_model"]
