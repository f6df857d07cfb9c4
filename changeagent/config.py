"""Run configuration: one YAML file plus dotted `key=value` overrides, no inheritance magic.

`model: NAME` (in a file) or `model=NAME` (on the command line) loads `configs/model/NAME.yaml`;
`model.encoder=resnet34` then edits that dict. Values on the command line are parsed as YAML
(`train.lr=3e-4` is a float, `data.levir_mci.root=null` is None).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from changeagent.errors import ChangeAgentError


def config_dir() -> Path:
    """The repository's `configs/` folder (the package is installed editable from the repo)."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "configs", Path.cwd() / "configs"):
        if cand.is_dir():
            return cand
    raise ChangeAgentError(f"cannot find the configs/ folder next to {here.parent} or in {Path.cwd()}")


def load_model_config(name_or_path: str) -> dict[str, Any]:
    """Model dict from a name in `configs/model/` (`fast`) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = config_dir() / "model" / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
        raise ChangeAgentError(f"model config {name_or_path!r} not found ({path}); known: {known}")
    return _read_yaml(path)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise ChangeAgentError(f"cannot read config {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ChangeAgentError(f"config {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ChangeAgentError(f"config {path} must hold a mapping at the top level")
    return data


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ChangeAgentError(f"override {item!r} is not of the form key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ChangeAgentError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:  # YAML 1.1 reads `3e-4` as a string; users mean a float
            value = float(value) if any(c in value.lower() for c in "e.") else value
        except ValueError:
            pass
    return key, value


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    defaults: dict[str, Any] | None = None,
) -> DictConfig:
    """Merge `defaults` <- YAML file <- overrides; resolve `model: NAME` to its dict.

    Returns an OmegaConf DictConfig (attribute access, `OmegaConf.to_container` for plain dicts).
    """
    cfg: dict[str, Any] = dict(defaults or {})
    base = OmegaConf.create(cfg)
    if path is not None:
        file_cfg = _read_yaml(Path(path))
        if isinstance(file_cfg.get("model"), str):
            file_cfg["model"] = load_model_config(file_cfg["model"])
        merged = OmegaConf.merge(base, OmegaConf.create(file_cfg))
        assert isinstance(merged, DictConfig)  # a mapping merged into a mapping stays a mapping
        base = merged
    parsed = [_parse_override(item) for item in overrides]
    # `model=NAME` replaces the whole model dict, so it goes before any `model.x=...` edit
    parsed.sort(key=lambda kv: 0 if kv[0] == "model" else 1)
    for key, value in parsed:
        if key == "model" and isinstance(value, str):
            base["model"] = OmegaConf.create(load_model_config(value))
            continue
        OmegaConf.update(base, key, value, merge=True, force_add=True)
    assert isinstance(base, DictConfig)
    return base


def to_dict(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """Plain, resolved dict (what factories and checkpoints take)."""
    if isinstance(cfg, DictConfig):
        out = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(out, dict)
        return out  # type: ignore[return-value]
    return dict(cfg)
