"""Run configuration: one YAML file plus dotted `key=value` overrides, no inheritance magic.

`model: NAME` (in a file) or `model=NAME` (on the command line) loads `configs/model/NAME.yaml`;
`model.encoder=resnet34` then edits that dict. A file's `model: {base: NAME, encoder_weights: imagenet}`
is that model with those keys changed; the changes stay when `model=OTHER` picks another base. Values on the command line are parsed as YAML
(`optim.lr=3e-4` is a float, `data.levir_mci.root=null` is None).

A model file may carry a `recipe:` block: the run settings measured for that model (learning rate,
batch size, accumulation, warm-up, ...). It is merged *under* the run file: defaults <- recipe of the
chosen model <- run file <- overrides, so `-c configs/joint.yaml model=fast` trains `fast` with its
own recipe, and a run file states only what is about the task (datasets, losses, stages, evaluation).
Setting the type of a typed section on the command line (`model.neck.name=mamba`,
`loss.weighting.name=dwa`) starts that section afresh with the new type's defaults. Keys and values
are checked by `changeagent.engine.schema`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from changeagent.errors import ChangeAgentError


def config_dir() -> Path:
    """The shipped configs: `changeagent/configs/` inside the package (in the repository, `configs/` is a
    link to it), so they are found from any working directory and in a non-editable install."""
    here = Path(__file__).resolve().parent / "configs"
    if not here.is_dir():
        raise ChangeAgentError(f"the shipped configs are missing: {here} (a broken install; reinstall changeagent)")
    return here


def find_run_config(path: str | Path) -> Path:
    """`-c PATH`: a YAML file, or the name of a shipped run config (`levir_mci`, `levir_mci.yaml` or
    `configs/levir_mci.yaml` from any working directory); a file of that name where you are wins."""
    p = Path(path)
    if p.is_file():
        return p
    if p.parent in (Path("."), Path("configs")):
        shipped = config_dir() / (p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml")
        if shipped.is_file():
            return shipped
    known = ", ".join(sorted(q.stem for q in config_dir().glob("*.yaml")))
    raise ChangeAgentError(f"cannot read config {p}: no such file (shipped run configs, usable by name from "
                           f"anywhere: {known})")


def load_model_config(name_or_path: str) -> dict[str, Any]:
    """Model dict from a name in `configs/model/` (`fast`) or a path to a YAML file (no `recipe`)."""
    return split_recipe(read_model_file(name_or_path))[0]


def split_recipe(model: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model dict, its `recipe` block or {}) from a model file's mapping."""
    model = dict(model)
    recipe = model.pop("recipe", None) or {}
    if not isinstance(recipe, dict) or "model" in recipe:
        raise ChangeAgentError("model config: `recipe` must be a mapping of run sections (optim, sched, data, "
                               "train, ...) without `model`")
    return model, recipe


def read_model_file(name_or_path: str) -> dict[str, Any]:
    """The mapping of `configs/model/NAME.yaml` or of a YAML path, recipe included."""
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


def _model_entry(value: Any) -> tuple[Any, dict[str, Any]]:
    """(model name, path or mapping; edits) of a `model` entry; `{base: NAME, ...}` -> (NAME, the rest)."""
    if isinstance(value, dict) and "base" in value:
        return value["base"], {k: v for k, v in value.items() if k != "base"}
    return value, {}


# sections whose `name` selects a type with its own keys (see changeagent.typed: `variants`)
TYPED_SECTIONS = ("model.neck", "loss.weighting")


def _switches_type(key: str) -> bool:
    return key.endswith(".name") and key.rsplit(".", 1)[0] in TYPED_SECTIONS


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    defaults: dict[str, Any] | None = None,
    default_model: str | None = None,
) -> DictConfig:
    """Merge `defaults` <- model recipe <- YAML file <- overrides; resolve `model: NAME` to its dict
    (`default_model` when neither the file nor the overrides name one).

    Returns an OmegaConf DictConfig (attribute access, `OmegaConf.to_container` for plain dicts).
    """
    cfg: dict[str, Any] = dict(defaults or {})
    base = OmegaConf.create(cfg)
    file_cfg = _read_yaml(find_run_config(path)) if path is not None else {}
    parsed = [_parse_override(item) for item in overrides]
    # the model: `model=NAME|{...}` on the command line replaces the file's model; a file's
    # `model: {base: NAME, key: value, ...}` is that model with those keys changed, and the changes
    # stay when the command line picks another base (they are about the run: `encoder_weights: imagenet`
    # for real data)
    file_model, edits = _model_entry(file_cfg.get("model", default_model))
    chosen = [v for k, v in parsed if k == "model"]
    spec = file_model
    if chosen:
        spec, more = _model_entry(chosen[-1])
        edits = {**edits, **more}
    recipe: dict[str, Any] = {}
    if isinstance(spec, str):
        file_cfg["model"], recipe = split_recipe(read_model_file(spec))
    elif isinstance(spec, dict):
        file_cfg["model"], recipe = split_recipe(spec)
    if edits:
        merged_model = OmegaConf.merge(OmegaConf.create(file_cfg["model"]), OmegaConf.create(edits))
        assert isinstance(merged_model, DictConfig)  # a mapping merged into a mapping stays a mapping
        file_cfg["model"] = to_dict(merged_model)
    for layer in (recipe, file_cfg):  # the model's recipe sits under the run file
        merged = OmegaConf.merge(base, OmegaConf.create(layer))
        assert isinstance(merged, DictConfig)  # a mapping merged into a mapping stays a mapping
        base = merged
    # a switch of a typed section's type (`model.neck.name=mamba`) goes first: it starts that section
    # afresh (the old type's options mean nothing to the new one), later edits then apply to it
    parsed.sort(key=lambda kv: 0 if _switches_type(kv[0]) else 1)
    for key, value in parsed:
        if key == "model":
            continue  # applied above, before any `model.x=...` edit
        if _switches_type(key) and OmegaConf.select(base, key) not in (None, value):
            OmegaConf.update(base, key.rsplit(".", 1)[0], {"name": value}, merge=False, force_add=True)
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
