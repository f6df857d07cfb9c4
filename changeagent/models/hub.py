"""Self-contained model folders: config.json + model.safetensors (+ vocab.json); never unpickled."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from changeagent.errors import ChangeAgentError

CONFIG, WEIGHTS, VOCAB = "config.json", "model.safetensors", "vocab.json"
FORMAT_VERSION = 1


def _temp_path(directory: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    return Path(tmp)


def save_pretrained(model: Any, directory: str | Path) -> None:
    """Write the model folder; every file goes to a temp name first and is renamed at the end."""
    from safetensors.torch import save_model

    directory = Path(directory)
    vocab = getattr(model, "vocab", None)
    if vocab is not None and len(vocab) != model.vocab_size:
        raise ChangeAgentError(
            f"cannot save to {directory}: attached vocabulary has {len(vocab)} words, model has {model.vocab_size}"
        )
    config = {"format_version": FORMAT_VERSION, "model": model.config, "vocab_size": model.vocab_size}
    texts = {CONFIG: json.dumps(config, indent=2, sort_keys=True)}
    if vocab is not None:
        texts[VOCAB] = vocab.dumps() if hasattr(vocab, "dumps") else json.dumps(dict(vocab.word_to_id))
    temps: dict[str, Path] = {}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        temps[WEIGHTS] = _temp_path(directory, WEIGHTS)
        # save_model drops the duplicate names of shared tensors (tied embeddings)
        save_model(model, str(temps[WEIGHTS]), force_contiguous=True)  # channels_last weights too
        for name, text in texts.items():
            temps[name] = _temp_path(directory, name)
            temps[name].write_text(text, encoding="utf-8")
        for name, tmp in temps.items():
            os.replace(tmp, directory / name)
        if vocab is None:  # a stale vocabulary of an earlier save would not match these weights
            (directory / VOCAB).unlink(missing_ok=True)
    except OSError as e:
        raise ChangeAgentError(f"cannot write model folder {directory}: {e.strerror or e}") from None
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


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


def load_pretrained(directory: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Rebuild a ChangeCaptioner from a folder written by `save_pretrained`."""
    from safetensors.torch import load_model

    from changeagent.models.factory import create_model

    directory = Path(directory)
    config = read_config(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise ChangeAgentError(f"{directory} is not a complete model folder: {WEIGHTS} is missing")
    # the weights come from the folder: do not look for the encoder's original weights file
    build_cfg = {**config["model"], "encoder_weights": None, "compile": False}
    model = create_model(build_cfg, config["vocab_size"])
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(map_location))
    except Exception as e:  # noqa: BLE001 - corrupt or foreign file: name it, no deep traceback
        raise ChangeAgentError(f"cannot load weights {weights}: {e}") from None
    if missing or unexpected:
        raise ChangeAgentError(
            f"weights {weights} do not match config.json: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    model.config = dict(config["model"])
    model.to(map_location)
    if config["model"].get("compile"):
        from changeagent.models.factory import compile_model

        compile_model(model)
    vocab_path = directory / VOCAB
    if vocab_path.is_file():
        from changeagent.data.vocab import Vocabulary

        model.vocab = Vocabulary.load(vocab_path)
        if len(model.vocab) != model.vocab_size:
            raise ChangeAgentError(f"{vocab_path} has {len(model.vocab)} words, config.json says {model.vocab_size}")
    return model
