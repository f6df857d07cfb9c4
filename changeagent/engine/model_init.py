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
        mcfg = model_config(cfg, specs)
        if mcfg["datasets"] != model.datasets:  # new datasets (engine.resolve added them): fresh heads for them
            model = _grown(model, create_model(mcfg, len(vocab)), init)
    else:
        model = create_model(model_config(cfg, specs), len(vocab))
    attach_vocab(model, vocab)
    if ckpt is not None:
        from changeagent.models.memory import LEGACY_NAMES

        if any(k.startswith(tuple(LEGACY_NAMES)) for k in ckpt["model"]):
            # the weights would load (renamed), but the optimizer state is ordered by the old parameter list
            raise ChangeAgentError("resume: the checkpoint was written before the token memory became its own "
                                   "part (model.memory), so its optimizer state does not fit; start a new "
                                   "run.out_dir with train.init_from=<its best/ folder>")
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise ChangeAgentError(f"the checkpoint's weights do not fit the configured model: "
                                   f"{str(e).splitlines()[0]}") from None
    model = model.to(device)
    if cfg.model.channels_last:  # weights NHWC too, so convolutions need no layout conversion
        model = model.to(memory_format=torch.channels_last)
    return model


def _grown(source: Any, model: Any, init: Path) -> Any:
    """`model` (the init folder's model config with more datasets) with every tensor of `source` that
    fits: same name and shape (encoder, necks, the shared change head, the semantic heads it had, the
    caption decoder), and the dataset-token rows of the datasets both have; the rest stays freshly
    initialised. Says once which parts were loaded and which are fresh."""
    from changeagent.engine.resolve import note
    from changeagent.models.hub import restore_head_vocabularies

    old, new = source.state_dict(), model.state_dict()
    fresh: list[str] = []
    took: list[str] = []
    for name, t in new.items():
        src = old.get(name)
        if src is not None and src.shape == t.shape:
            t.copy_(src)
            took.append(name)
        elif src is not None and name.endswith("dataset_embed.weight"):
            # one row per dataset, then the "no dataset given" row: the rows of the datasets both models have
            rows = [*source.datasets, None]
            for i, d in enumerate([*model.datasets, None]):
                if d in rows:
                    t[i].copy_(src[rows.index(d)])
                else:
                    fresh.append(f"{name.rsplit('.', 1)[0]}[{d}]")
            took.append(name)
        else:
            fresh.append(name.rsplit(".", 1)[0])  # its module, e.g. `mask_decoder.heads.second_cc`
    restore_head_vocabularies(model, init)  # heads with their own word list keep the folder's
    loaded = [p for p in model.parts() if any(n.startswith(f"{p}.") for n in took)]
    added = [d for d in model.datasets if d not in source.datasets]
    note(f"note: train.init_from={init}: loaded {', '.join(loaded) or 'nothing'}; fresh for {', '.join(added)}: "
         + (", ".join(dict.fromkeys(fresh)) or "nothing (the shared heads serve them)"))
    return model


def inherited(cfg: DictConfig, specs: dict[str, DatasetSpec]) -> dict[str, dict[str, Any]]:
    """The datasets a fine-tuned model keeps from `train.init_from` without training on them in this
    run: {id: the summary its folder records}, for the new folder's record (its statistics are in
    `cfg.data.<id>`, engine.resolve); {} without init_from."""
    from changeagent.models.hub import read_config

    if not cfg.train.init_from:
        return {}
    trained = read_config(Path(cfg.train.init_from)).get("datasets") or {}
    if not isinstance(trained, dict):  # folders of format 1 list ids
        trained = {n: {} for n in trained}
    keep = list(cfg.model.get("datasets") or [])
    return {n: dict(s) for n, s in trained.items() if n in keep and n not in specs}
