"""The joint change-mask / change-caption model: `create_model(cfg, vocab_size)` -> ChangeCaptioner;
`save_pretrained` / `load` (models.hub) own the saved model folder."""

from __future__ import annotations

import importlib
from typing import Any

# name -> module; imported on first use so that `changeagent <cmd> --help` never loads torch
_LAZY = {
    "ChangeCaptioner": "changeagent.models.change_captioner",
    "create_model": "changeagent.models.factory",
    **{n: "changeagent.models.hub" for n in ("Loaded", "attach_vocab", "load", "load_model", "save_pretrained")},
}

__all__ = ["ChangeCaptioner", "Loaded", "attach_vocab", "create_model", "load", "load_model", "save_pretrained"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
