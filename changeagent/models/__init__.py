"""The joint change-mask / change-caption model: `create_model(cfg, vocab_size)` -> ChangeCaptioner;
`save_pretrained` / `load` (models.hub) own the saved model folder."""

from __future__ import annotations

from changeagent.lazy import lazy_getattr

# name -> module; imported on first use so that `changeagent <cmd> --help` never loads torch
_LAZY = {
    "ChangeCaptioner": "changeagent.models.change_captioner",
    "create_model": "changeagent.models.factory",
    **{n: "changeagent.models.hub" for n in ("Loaded", "attach_vocab", "load", "load_model", "save_pretrained")},
}

__all__ = ["ChangeCaptioner", "Loaded", "attach_vocab", "create_model", "load", "load_model", "save_pretrained"]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
