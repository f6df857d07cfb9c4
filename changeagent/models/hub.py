"""The one owner of saved models: `save_pretrained` writes a model folder, `load` reads a model folder,
a training run folder (its `best/`) or a `last.pt`, and `attach_vocab` is the one place a vocabulary
joins a model.

Model folder: config.json (`model` config, `vocab_size`, `norm`: the normalisation statistics per
trained dataset, `datasets` trained on with their classes and palettes, `training`: the training
record, read by `training_record`), model.safetensors, vocab.json. Nothing is ever unpickled
(safetensors; `last.pt`
through `torch.load(weights_only=True)`). This module imports the model code, never the reverse.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from changeagent.data.registry import get_spec
from changeagent.data.spec import DatasetSpec
from changeagent.data.vocab import Vocabulary
from changeagent.errors import ChangeAgentError
from changeagent.fileio import atomic_path
from changeagent.models.change_captioner import ChangeCaptioner
from changeagent.models.factory import compile_model, create_model, resolve_config

CONFIG, WEIGHTS, VOCAB = "config.json", "model.safetensors", "vocab.json"
FORMAT_VERSION = 3  # 2: data_norm and datasets written by save_pretrained itself; 3: `norm` per dataset
NORM = "norm"  # config.json: {dataset id: {"mean": [...], "std": [...]}}, one entry per trained dataset
Norms = dict[str, dict[str, list[float]]]


class Loaded(NamedTuple):
    model: ChangeCaptioner
    vocab: Vocabulary | None
    norm: Norms | None  # {dataset id: {"mean", "std"}} each trained dataset was read with; None: not recorded
    datasets: dict[str, dict[str, Any]]  # dataset id -> DatasetSpec.summary() of what it was trained on


def attach_vocab(model: Any, vocab: Vocabulary | None) -> None:
    """Attach `vocab` to `model` (None detaches); its size must match the caption head."""
    if vocab is not None and len(vocab) != model.vocab_size:
        raise ChangeAgentError(f"vocabulary has {len(vocab)} words, the model's caption head {model.vocab_size}")
    model.vocab = vocab


def dataset_summaries(datasets: Mapping[str, Any] | Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """ids, {id: DatasetSpec} or {id: summary dict} -> {id: summary dict} (validated against the registry)."""
    if datasets is None:
        return {}
    if isinstance(datasets, str):
        datasets = [datasets]
    items = datasets.items() if isinstance(datasets, Mapping) else ((d, None) for d in datasets)
    out = {}
    for name, value in items:
        spec = get_spec(name)
        if isinstance(value, DatasetSpec):
            out[name] = value.summary()
        elif isinstance(value, Mapping):
            out[name] = {**spec.summary(), **dict(value)}
        else:
            out[name] = spec.summary()
    return out


def save_pretrained(model: Any, directory: str | Path, *, vocab: Vocabulary | None = None,
                    norm: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
                    datasets: Mapping[str, Any] | Sequence[str] | None = None,
                    training: Mapping[str, Any] | None = None) -> Path:
    """Write the model folder; every file goes to a temp name first and is renamed at the end.

    vocab: defaults to the attached `model.vocab`; norm: {dataset id: {"mean", "std"}} each training
    dataset was normalised with; datasets: the datasets the model was trained on (ids, specs or
    summaries); training: the training record (`TRAINING_KEYS`: what it was trained on and the
    score it was chosen on).
    """
    from safetensors.torch import save_model

    directory = Path(directory)
    vocab = vocab if vocab is not None else getattr(model, "vocab", None)
    if vocab is not None and len(vocab) != model.vocab_size:
        raise ChangeAgentError(
            f"cannot save to {directory}: vocabulary has {len(vocab)} words, model has {model.vocab_size}"
        )
    config: dict[str, Any] = {"format_version": FORMAT_VERSION, "model": model.config, "vocab_size": model.vocab_size}
    if datasets is not None:
        config["datasets"] = dataset_summaries(datasets)
    if norm is not None:
        config[NORM] = check_norms(norm, f"cannot save to {directory}: norm", config.get("datasets") or None)
    if training is not None:
        config[TRAINING] = check_training_record(training, directory)
    texts = {CONFIG: json.dumps(config, indent=2)}  # unsorted: `datasets` keeps the training order
    if vocab is not None:
        texts[VOCAB] = vocab.dumps()
    texts.update({name: json.dumps(v.to_json()) + "\n" for name, v in head_vocabularies(model).items()})
    try:
        # every file to its own temp name first (changeagent.fileio); all are renamed at the end
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(directory / WEIGHTS))
            # save_model drops the duplicate names of shared tensors (tied embeddings)
            save_model(model, str(tmp), force_contiguous=True)  # channels_last weights too
            for name, text in texts.items():
                stack.enter_context(atomic_path(directory / name)).write_text(text, encoding="utf-8")
        if vocab is None:  # a stale vocabulary of an earlier save would not match these weights
            (directory / VOCAB).unlink(missing_ok=True)
    except ChangeAgentError as e:
        raise ChangeAgentError(f"cannot write model folder {directory}: {e}") from None
    except OSError as e:
        raise ChangeAgentError(f"cannot write model folder {directory}: {e.strerror or e}") from None
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    """The parsed config.json of a model folder, checked."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise ChangeAgentError(f"{directory} is not a model folder: {CONFIG} is missing")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ChangeAgentError(f"cannot read {path}: {e}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict) \
            or not isinstance(config.get("vocab_size"), int):
        raise ChangeAgentError(f"{path} must hold a `model` mapping and an integer `vocab_size`")
    if config.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ChangeAgentError(f"{path} has format_version {config['format_version']}; this changeagent "
                               f"reads up to {FORMAT_VERSION} (upgrade changeagent)")
    return config


# config.json's training record, written by the engine with best/ (and kept in last.pt):
#   datasets        {id: {"synthetic": bool, "root": absolute path | null}} the model was trained on
#   synthetic_only  true when every one of them is the generated benchmark
#   steps           optimizer steps when these weights were saved
#   selected_on     {"split", "select", "score"}: the validation score these weights were chosen on (null: not chosen)
#   run             the training run folder (absolute)
TRAINING = "training"
TRAINING_KEYS = ("datasets", "synthetic_only", "steps", "selected_on", "run")


def check_training_record(record: Any, where: Any) -> dict[str, Any]:
    """A training record as stored: a mapping with the `TRAINING_KEYS` (extra keys are kept)."""
    if not isinstance(record, Mapping) or not isinstance(record.get("datasets"), Mapping):
        raise ChangeAgentError(f"{where}: the training record must be a mapping with `datasets` "
                               f"({', '.join(TRAINING_KEYS)})")
    out = dict(record)
    out["synthetic_only"] = bool(out["datasets"]) and all(
        bool(d.get("synthetic")) for d in out["datasets"].values() if isinstance(d, Mapping))
    return out


def training_record(path: str | Path) -> dict[str, Any] | None:
    """What a saved model was trained on (see `TRAINING`), from a model folder, a run folder (its
    best/) or a last.pt; None when it has no record (converted or older folders)."""
    p = Path(path)
    if p.is_dir() and not (p / CONFIG).is_file():
        if (p / "best" / CONFIG).is_file():
            p = p / "best"
        elif (p / "last.pt").is_file():
            p = p / "last.pt"
    if p.is_file() and p.suffix == ".pt":
        record = _read_last(p, mmap=True).get(TRAINING)  # memory-mapped: the weights are not read
    else:
        record = read_config(p).get(TRAINING)
    return None if record is None else check_training_record(record, p)


def _one_norm(norm: Any, where: str) -> dict[str, list[float]]:
    try:
        mean, std = [float(v) for v in norm["mean"]], [float(v) for v in norm["std"]]
    except (KeyError, TypeError, ValueError):
        raise ChangeAgentError(f"{where} must be {{\"mean\": [...], \"std\": [...]}}") from None
    if not mean or len(mean) != len(std) or min(std) <= 0:
        raise ChangeAgentError(f"{where}: mean {mean} and std {std} must have the same length and std > 0")
    return {"mean": mean, "std": std}


def check_norms(norms: Any, where: str, datasets: Mapping[str, Any] | None = None) -> Norms:
    """{dataset id: {"mean", "std"}} checked (ids of `datasets` when given, statistics of equal length)."""
    if not isinstance(norms, Mapping) or not norms:
        raise ChangeAgentError(f"{where} must map dataset ids to {{\"mean\": [...], \"std\": [...]}}")
    out = {}
    for name, norm in norms.items():
        if datasets is not None and name not in datasets:
            raise ChangeAgentError(f"{where}: {name!r} is not one of the datasets trained on {list(datasets)}")
        out[str(name)] = _one_norm(norm, f"{where}.{name}")
    return out


def _recorded_norms(config: dict[str, Any], trained: Mapping[str, Any], where: Path) -> Norms | None:
    """The statistics per trained dataset a model folder records; None when it records none.

    Folders of format <= 2 hold one `data_norm` for the whole run, which every dataset of that run
    was read with (the engine then had a single data.mean/std), so it stands for each of them."""
    if config.get(NORM) is not None:
        return check_norms(config[NORM], f"{where}: {NORM}")
    single = config.get("data_norm") or config["model"].get("data_norm")
    if single is None:
        return None
    norm = _one_norm(single, f"{where}: data_norm")
    return {name: dict(norm) for name in trained} or None


def _trained_on(recorded: Any, where: Path) -> dict[str, dict[str, Any]]:
    """The datasets a saved model was trained on (folders of format 1 list ids); {} when it records
    none: its heads alone do not say what it was trained on (a model built without a run has heads
    for levir_mci and second_cc), so inference asks for --head instead of guessing."""
    try:
        return dataset_summaries(recorded)
    except ChangeAgentError as e:
        raise ChangeAgentError(f"{where}: {e}") from None


def _build(model_cfg: dict[str, Any], vocab_size: int) -> ChangeCaptioner:
    # the weights come from the file: do not look for the encoder's original weights
    return create_model({**model_cfg, "encoder_weights": None, "compile": False}, vocab_size)


def _tensor_slot(model: Any, name: str) -> tuple[dict[str, Any], str]:
    """The `_parameters` or `_buffers` dict of the module holding tensor `name`, and its key there."""
    parent, _, leaf = name.rpartition(".")
    module = model.get_submodule(parent)
    return (module._parameters if leaf in module._parameters else module._buffers), leaf


def _load_without_init(model_cfg: dict[str, Any], vocab_size: int, weights: Path,
                       device: str) -> tuple[ChangeCaptioner | None, list[str], list[str]]:
    """The model built on the meta device (no memory, no random initialisation: that took 3 s of every
    start-up for the MCI-sized models) with the file's tensors put in place; (None, ...) when a
    tensor the file does not hold (a buffer that is not saved) would be left without a value."""
    from safetensors.torch import load_file

    model = create_model({**model_cfg, "encoder_weights": None, "compile": False}, vocab_size, device="meta")
    shared: dict[int, list[str]] = {}  # tied weights: one tensor under several names, saved under one
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        shared.setdefault(id(t), []).append(name)
    own = model.state_dict(keep_vars=True)
    # copies: fresh (aligned) storage per tensor, as a model built the usual way has, so outputs are
    # bit-identical to it (views into the file's one buffer can take other vectorised kernel paths)
    state = {k: v.to(own[k].dtype if k in own else v.dtype, copy=True)
             for k, v in load_file(str(weights), device=device).items()}
    result = model.load_state_dict(state, strict=False, assign=True)
    tied: set[str] = set()
    for names in shared.values():
        loaded = [n for n in names if n in state]
        if loaded and len(names) > 1:
            slots = [_tensor_slot(model, n) for n in names]
            source = slots[names.index(loaded[0])]
            for slot, key in slots:
                slot[key] = source[0][source[1]]
            tied.update(names)
    missing = [k for k in result.missing_keys if k not in tied]
    if not missing and any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        return None, [], []
    return model, missing, list(result.unexpected_keys)


def _vocab_heads(model: Any) -> list[Any]:
    """Heads that own a word list (`vocab_file`, `vocab`, `set_vocab`: the grounding head's expressions)."""
    return [model.head(t) for t in getattr(model, "tasks", []) if getattr(model.head(t), "vocab_file", None)]


def head_vocabularies(model: Any) -> dict[str, Any]:
    """{file name in the model folder: vocabulary} of the model's heads with their own word list."""
    return {h.vocab_file: h.vocab for h in _vocab_heads(model)}


def restore_head_vocabularies(model: Any, directory: Path) -> None:
    """Attach each head's saved word list (the ids its weights were trained with); a folder without the
    file keeps the built-in list (folders written before the head saved it)."""
    for head in _vocab_heads(model):
        path = directory / head.vocab_file
        if not path.is_file():
            continue
        vocab = type(head.vocab).load(path)
        try:
            head.set_vocab(vocab)
        except ChangeAgentError as e:
            raise ChangeAgentError(f"{path}: {e}") from None


def _load_folder(directory: Path, map_location: str | torch.device) -> Loaded:
    from safetensors.torch import load_model

    config = read_config(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise ChangeAgentError(f"{directory} is not a complete model folder: {WEIGHTS} is missing")
    try:
        model, missing, unexpected = _load_without_init(config["model"], config["vocab_size"], weights,
                                                        str(map_location))
        if model is None:  # a module with an unsaved buffer: build it the slow way
            model = _build(config["model"], config["vocab_size"])
            missing, unexpected = load_model(model, str(weights), strict=False, device=str(map_location))
    except ChangeAgentError:
        raise
    except Exception as e:  # noqa: BLE001 - corrupt or foreign file: name it, no deep traceback
        raise ChangeAgentError(f"cannot load weights {weights}: {e}") from None
    if missing or unexpected:
        raise ChangeAgentError(
            f"weights {weights} do not match config.json: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    model.config = resolve_config(dict(config["model"]))  # an old folder's config in today's form (tasks, memory)
    restore_head_vocabularies(model, directory)
    model.to(map_location)
    if config["model"].get("compile"):
        compile_model(model)
    vocab = None
    if (directory / VOCAB).is_file():
        vocab = Vocabulary.load(directory / VOCAB)
        if len(vocab) != model.vocab_size:
            raise ChangeAgentError(f"{directory / VOCAB} has {len(vocab)} words, config.json says {model.vocab_size}")
    attach_vocab(model, vocab)
    trained = _trained_on(config.get("datasets"), directory / CONFIG)
    return Loaded(model, vocab, _recorded_norms(config, trained, directory / CONFIG), trained)


def _read_last(path: Path, mmap: bool = False) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises several types for truncated/garbage zip files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ChangeAgentError(f"checkpoint {path} is corrupt or truncated ({reason})") from None
    if not isinstance(state, dict) or any(k not in state for k in ("model", "config", "vocab")):
        raise ChangeAgentError(f"checkpoint {path} is not a changeagent training checkpoint")
    return state


def _load_last(path: Path, map_location: str | torch.device) -> Loaded:
    """The model of a training checkpoint: its EMA weights once warmed up (what validation used)."""
    state = _read_last(path)
    vocab = Vocabulary(dict(state["vocab"]))
    cfg = state["config"]
    model = _build(cfg["model"], len(vocab))
    weights = state["model"]
    # AveragedModel state: "module.<name>" plus n_averaged; `ema_ready` (written by the engine) is
    # false until the EMA has warmed up, and validation used the raw weights until then
    if state.get("ema") and state.get("ema_ready", True):
        weights = {k[len("module."):]: v for k, v in state["ema"].items() if k.startswith("module.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ChangeAgentError(f"checkpoint {path}: weights do not fit its model config: "
                               f"{str(e).splitlines()[0]}") from None
    model.to(map_location)
    attach_vocab(model, vocab)
    trained = _trained_on(state.get("datasets") or cfg.get("data", {}).get("datasets"), path)
    return Loaded(model, vocab, _last_norms(cfg, trained, path), trained)


def _last_norms(cfg: dict[str, Any], trained: Mapping[str, Any], where: Path) -> Norms | None:
    """The statistics a training checkpoint's run read each dataset with (its saved run config:
    `data.<id>.mean/std`, or the single `data.mean/std` of configs before per-dataset statistics)."""
    data = cfg.get("data", {})
    if "mean" in data:
        return {name: _one_norm(data, f"{where}: data") for name in trained} or None
    norms = {name: data[name] for name in trained if (data.get(name) or {}).get("mean") is not None}
    return check_norms(norms, f"{where}: data") if norms else None


def read_norms(path: str | Path) -> tuple[Norms | None, Path]:
    """(the recorded statistics per trained dataset, the file they come from) of what `load(path)`
    would load, without building the model: a model folder, a run folder or a last.pt."""
    p = resolve_path(path)
    if p.is_file():
        state = _read_last(p, mmap=True)  # tensors stay on disk: only the config is read
        cfg = state["config"]
        return _last_norms(cfg, _trained_on(state.get("datasets") or cfg.get("data", {}).get("datasets"), p), p), p
    config = read_config(p)
    return _recorded_norms(config, _trained_on(config.get("datasets"), p / CONFIG), p / CONFIG), p / CONFIG


def resolve_path(path: str | Path) -> Path:
    """The model folder or last.pt that `path` names: itself, or a run folder's best/ (else last.pt)."""
    p = Path(path)
    if p.is_dir() and not (p / CONFIG).is_file():
        if (p / "best" / CONFIG).is_file():
            p = p / "best"  # a training run folder: its exported best model
        elif (p / "last.pt").is_file():
            p = p / "last.pt"
    if p.is_file() and p.suffix != ".pt":
        raise ChangeAgentError(f"checkpoint {p} is neither a model folder nor a last.pt")
    if not p.exists():
        raise ChangeAgentError(f"checkpoint {p} does not exist")
    return p


def load(path: str | Path, map_location: str | torch.device = "cpu") -> Loaded:
    """(model, vocab, norm, datasets) from a model folder (`best/`), a run folder or a `last.pt`."""
    p = resolve_path(path)
    if p.is_file():
        return _load_last(p, map_location)
    return _load_folder(p, map_location)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> ChangeCaptioner:
    """Only the model of `load(path)` (its vocabulary attached as `model.vocab`)."""
    return load(path, map_location).model
