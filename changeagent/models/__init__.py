"""The joint change-mask / change-caption model: `create_model(cfg, vocab_size)` -> ChangeCaptioner;
`save_pretrained` / `load` (models.hub) own the saved model folder."""

from changeagent.models.change_captioner import ChangeCaptioner
from changeagent.models.factory import create_model
from changeagent.models.hub import Loaded, attach_vocab, load, load_model, save_pretrained

__all__ = ["ChangeCaptioner", "Loaded", "attach_vocab", "create_model", "load", "load_model", "save_pretrained"]
