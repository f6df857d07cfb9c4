"""Task heads: the model's table of what it computes from its shared features (one module per head).

A model is a trunk (encoder, fusion necks, the token memory) and one head per task of its
`model.tasks` list. This table is the models layer's half of a task: it lets `create_model` (and
`models.hub.load`, which rebuilds a saved model) build a head from its config section without
the task layer (`changeagent.tasks`: how a task is trained, scored and predicted), which sits above
models and never needs to be imported to run a model.

    HEADS = {task name: module defining `HEAD = HeadSpec(...)`}

A head module is an `nn.Module` with
    inputs: tuple[str, ...]                            # model inputs `outputs` needs (e.g. ("captions",))
    extra_inputs: tuple[str, ...] (optional)           # inputs it reads when given
    outputs(feats, inputs) -> dict[str, Any]           # teacher-forced pass (training, losses)
    predictions(feats, inputs, options) -> dict        # inference pass (eval, predict)
and optionally `publish(feats)`, which registers features it computes for other heads (the mask head
publishes "decoder", its top-down map). `feats` is the `Features` of one encoder pass; `inputs` maps
input names to tensors; `options` are `model.predict`'s keyword options (decoding settings), each
head reading the ones it knows. The model runs a head when its task is asked for and every name in
`head.inputs` is given; output keys of all heads share one dict, so they must differ.
"""

from __future__ import annotations

import importlib

from changeagent.errors import ChangeAgentError
from changeagent.models.features import HeadSpec

# task name -> the models module that defines its `HEAD`
HEADS: dict[str, str] = {
    "mask": "changeagent.models.mask_decoder",
    "caption": "changeagent.models.caption_decoder",
    "retrieval": "changeagent.models.retrieval",
    "qa": "changeagent.models.qa_head",
    "grounding": "changeagent.models.grounding_head",
}


def head_names() -> list[str]:
    return list(HEADS)


def get_head(name: str) -> HeadSpec:
    """The head of task `name`; an unknown name is an error listing the known ones."""
    if name not in HEADS:
        raise ChangeAgentError(f"unknown task {name!r}: no model head for it; known: {', '.join(HEADS)}")
    spec = importlib.import_module(HEADS[name]).HEAD
    assert isinstance(spec, HeadSpec) and spec.name == name, f"{HEADS[name]}.HEAD must be a HeadSpec named {name!r}"
    return spec
