"""What runs comes from the files plus what other folders say: resolved here, before validation.

`schema.validate` calls `resolve_inputs` on the merged raw config, so the validated config is the one
that runs and `config show` (given the same `--checkpoint`, or a config with `train.init_from`)
prints it. Nothing changes the config after validation. Inputs resolved:

- `train.init_from` (a model folder or a run folder's best/): its model section replaces `model` (its
  `datasets` extended by the run's new ones), its vocab.json becomes `data.vocab`, and the
  statistics it records per trained dataset become `data.<id>.mean/std` (also of the datasets it
  keeps but this run does not train on), so fine-tuning reads the data exactly as the model was trained;
- the checkpoint `eval` evaluates (`checkpoint=`): the statistics it records per dataset, and the
  training run's synthetic data folder when it sits next to the checkpoint;
- an explicit normalisation for every dataset (`norm=`, `index -c CONFIG`: that of the decoding head).

A recorded statistic that differs from the config's is used and said in one `note:` line.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from changeagent.errors import ChangeAgentError

Norm = dict[str, list[float]]


def resolve_inputs(raw: dict[str, Any], *, default_datasets: Sequence[str], checkpoint: str | Path | None = None,
                   out: str | Path | None = None, norm: Norm | None = None) -> None:
    """Complete the merged raw config `raw` in place (see the module docstring). `default_datasets`
    are the datasets in use when `data.datasets` is unset (the schema's default, passed in by
    `schema.validate`: this module sits below the schema and never imports it)."""
    _init_from(raw, default_datasets)
    if checkpoint is not None:
        _checkpoint(raw, default_datasets, Path(checkpoint), out)
    if norm is not None:
        _apply(raw, default_datasets, {name: norm for name in _datasets(raw, default_datasets)},
               "the decoding head's statistics", "index")


def _section(raw: dict[str, Any], *keys: str) -> dict[str, Any]:
    node = raw
    for key in keys:
        if not isinstance(node.get(key), dict):
            node[key] = {} if node.get(key) is None else node[key]
        node = node[key]
        if not isinstance(node, dict):
            raise ChangeAgentError(f"{'.'.join(keys)}: must be a mapping, got {node!r}")
    return node


def _datasets(raw: dict[str, Any], default: Sequence[str]) -> list[str]:
    """The datasets in use: `data.datasets`, or `default` when it is unset (or not a list: the
    schema reports that)."""
    data = _section(raw, "data")
    given = data.get("datasets")
    return list(given) if isinstance(given, list) else list(default)


def _init_from(raw: dict[str, Any], default_datasets: Sequence[str]) -> None:
    from changeagent.models.hub import VOCAB, read_config, read_norms

    train = _section(raw, "train")
    if not train.get("init_from"):
        return
    path = Path(str(train["init_from"]))
    if not (path / "config.json").is_file() and (path / "best" / "config.json").is_file():
        path = path / "best"  # a training run folder: its exported best model
    config = read_config(path)
    if not (path / VOCAB).is_file():
        raise ChangeAgentError(f"train.init_from={path}: no {VOCAB}; the model's vocabulary is needed to fine-tune")
    raw["model"] = {**config["model"], "encoder_weights": None}  # the weights come from the folder
    # the model keeps every dataset it has heads for and gains the run's new ones (fresh heads,
    # engine.model_init): fine-tuning a LEVIR-MCI model on LEVIR-CD trains its shared change head
    in_use = _datasets(raw, default_datasets)
    had = list(raw["model"].get("datasets") or [])
    if had:
        raw["model"]["datasets"] = had + [n for n in in_use if n not in had]
    _section(raw, "data")["vocab"] = str(path / VOCAB)
    train["init_from"] = str(path)
    norms, source = read_norms(path)
    if norms is None:
        raise ChangeAgentError(f"train.init_from={path}: {source} records no normalisation statistics (`norm`); "
                               "fine-tuning needs the statistics the model was trained with")
    _apply(raw, default_datasets, norms, f"the statistics {source} records", "train.init_from")
    # the datasets it keeps without training on them here: their statistics stay the recorded ones,
    # so the new model folder records them as it does the run's (engine.model_init.inherited)
    from changeagent.data.registry import dataset_ids

    kept = [n for n in raw["model"].get("datasets", []) if n not in in_use and n in dataset_ids()]
    for name, norm in norms.items():
        if name in kept:
            sec = _section(raw, "data", name)
            sec["mean"], sec["std"] = list(norm["mean"]), list(norm["std"])


def _checkpoint(raw: dict[str, Any], default_datasets: Sequence[str], checkpoint: Path,
                out: str | Path | None) -> None:
    from changeagent.models.hub import read_norms, resolve_path

    norms, source = read_norms(checkpoint)
    if norms is None:
        data = _section(raw, "data")
        unset = [n for n in _datasets(raw, default_datasets) if not ((data.get(n) or {}).get("mean") and (data.get(n) or {}).get("std"))]
        if unset:
            raise ChangeAgentError(f"{source} records no normalisation statistics (`norm`); give the statistics the "
                                   f"model was trained with as data.<id>.mean/std for {unset}")
    else:
        _apply(raw, default_datasets, norms, f"the statistics {source} records", "eval")
    synth = _section(raw, "data", "synth")
    data = _section(raw, "data")
    if not synth.get("dir") and any((data.get(n) or {}).get("synthetic") for n in _datasets(raw, default_datasets)):
        # the training run's synthetic data, when it sits next to best/ (or last.pt)
        guess = resolve_path(checkpoint).parent / "synth"  # best/ or last.pt -> <run>/synth
        if guess.is_dir():
            synth["dir"] = str(guess)
        elif out is not None:
            synth["dir"] = str(Path(out) / "synth")


def _same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(float(x) - float(y)) <= 1e-9 for x, y in zip(a, b))


def _apply(raw: dict[str, Any], default_datasets: Sequence[str], norms: dict[str, Norm], what: str,
           by: str) -> None:
    """data.<id>.mean/std of every dataset in use that `norms` has; a `note:` when the config said otherwise."""
    from changeagent.data.registry import dataset_ids, get_spec

    for name in _datasets(raw, default_datasets):
        if name not in norms or name not in dataset_ids():
            continue  # not trained on it: the command says so itself (eval, init_from: no head for it)
        sec = _section(raw, "data", name)
        spec = get_spec(name)
        mean: list[float] = list(sec["mean"] if sec.get("mean") is not None else spec.mean)
        std: list[float] = list(sec["std"] if sec.get("std") is not None else spec.std)
        new = norms[name]
        if not (_same(list(mean), new["mean"]) and _same(list(std), new["std"])):
            note(f"note: data.{name}.mean/std: {by} uses {what} (mean {_fmt(new['mean'])}, std {_fmt(new['std'])}), "
                 f"not the config's (mean {_fmt(mean)}, std {_fmt(std)})")
        sec["mean"], sec["std"] = list(new["mean"]), list(new["std"])


def _fmt(values: Any) -> str:
    return "[" + ", ".join(f"{float(v):.5g}" for v in values) + "]"


def note(msg: str) -> None:
    """One line on stderr (stdout may be a config or JSON), from the launcher's rank 0 only."""
    from changeagent.engine.distributed import launcher_env

    if launcher_env()[0] == 0:
        print(msg, file=sys.stderr, flush=True)
