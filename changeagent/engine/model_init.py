"""The run's model: its config from the run's datasets, built fresh, from `train.init_from` (a
model folder, resolved into the run config by `engine.resolve`) or with a checkpoint's weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from changeagent.config import to_dict
from changeagent.data.registry import get_spec
from changeagent.data.spec import DatasetSpec
from changeagent.data.vocab import Vocabulary
from changeagent.errors import ChangeAgentError


def model_config(cfg: DictConfig, specs: dict[str, DatasetSpec]) -> dict[str, Any]:
    """The model config of a run: `datasets` = the run's datasets (one semantic head and caption token
    each, nothing untrained), `num_classes` from data whose classes live in the folder (custom)."""
    mcfg = to_dict(cfg.model)
    given = mcfg.get("datasets")
    if given is not None and [n for n in specs if n not in given]:
        raise ChangeAgentError(f"model.datasets={list(given)} lacks the run's dataset(s) "
                               f"{[n for n in specs if n not in given]}; drop model.datasets to use data.datasets")
    mcfg["datasets"] = list(given) if given is not None else list(specs)
    counts = {n: s.num_classes for n, s in specs.items() if s.num_classes != get_spec(n).num_classes}
    if counts:
        mcfg["num_classes"] = {**(mcfg.get("num_classes") or {}), **counts}
    return mcfg


def build_model(cfg: DictConfig, vocab: Vocabulary, device: torch.device, ckpt: dict[str, Any] | None,
                specs: dict[str, DatasetSpec] | None = None, init: Path | None = None) -> torch.nn.Module:
    """The run's model on `device`: weights from `ckpt` (resume), else from `init` (a model folder)."""
    from changeagent.models import attach_vocab, create_model, load_model

    specs = specs if specs is not None else {n: get_spec(n) for n in cfg.data.datasets}
    if init is not None:
        model = load_model(init)
        if model.vocab is None or model.vocab.word_to_id != vocab.word_to_id:
            raise ChangeAgentError(f"train.init_from={init}: its vocab.json differs from data.vocab={cfg.data.vocab}")
        untrained = [n for n in specs if n not in model.datasets]
        if untrained:
            raise ChangeAgentError(f"train.init_from={init}: the model has no heads for {untrained} "
                                   f"(it has {model.datasets}); set data.datasets accordingly")
    else:
        model = create_model(model_config(cfg, specs), len(vocab))
    attach_vocab(model, vocab)
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise ChangeAgentError(f"the checkpoint's weights do not fit the configured model: "
                                   f"{str(e).splitlines()[0]}") from None
    model = model.to(device)
    if cfg.model.channels_last:  # weights NHWC too, so convolutions need no layout conversion
        model = model.to(memory_format=torch.channels_last)
    return model
