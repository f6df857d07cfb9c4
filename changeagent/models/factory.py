"""`create_model(cfg, vocab_size)`: a ChangeCaptioner from a plain dict: trunk + one head per task."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from changeagent.data.constants import DATASETS
from changeagent.data.registry import dataset_ids
from changeagent.errors import ChangeAgentError
from changeagent.models.baselines import SmpUnetCfg, build_smp_unet
from changeagent.models.change_captioner import ChangeCaptioner, Necks, compile_model
from changeagent.models.encoder import Encoder, build_on
from changeagent.models.features import HeadContext
from changeagent.models.heads import HEADS, get_head, head_names
from changeagent.models.mci.config import MCIConfig
from changeagent.models.memory import MemoryCfg, TokenMemory
from changeagent.models.model_cfg import ModelTypeCfg
from changeagent.models.necks import build_neck, neck_config, neck_configs
from changeagent.models.necks.base import DiffNeckCfg, NeckCfg
from changeagent.typed import convert, fail, opt, suggest, to_plain


@dataclass
class ModelCommonCfg(ModelTypeCfg):
    """`model`: the joint ChangeCaptioner (configs/model/*.yaml hold complete examples)."""

    encoder: str = opt("resnet18", "smp encoder name (resnet18, mit_b1, tu-<timm name>, ...)")
    encoder_weights: str | None = opt(None, "null (offline), imagenet, or a local weights file")
    in_channels: int = opt(3, "input bands per date", ge=1)
    tasks: list[str] | None = opt(None, "its tasks, one head each (models/heads.py; null: mask and caption, plus "
                                  "those an old config enables, e.g. retrieval.enabled: true)", choices=head_names)
    neck: NeckCfg = opt(help="the fusion neck (the mask neck when separate_necks)", factory=DiffNeckCfg,
                        variants=neck_configs)
    separate_necks: bool = opt(False, "one neck per head, as the reference (the caption neck reads the deepest levels)")
    caption_neck: dict[str, Any] = opt(help="keys overriding `neck` for the caption neck when separate_necks",
                                       factory=dict)
    memory: MemoryCfg = opt(help="token memory read by the caption, retrieval, ... heads (models/memory.py)",
                            factory=MemoryCfg)
    datasets: list[str] | None = opt(None, "datasets it is built for: semantic heads, dataset tokens (null: the "
                                     "run's data.datasets; levir_mci + second_cc for a bare create_model)",
                                     choices=dataset_ids)
    num_classes: dict[str, int] = opt(help="classes of a head whose dataset takes them from its data (custom)",
                                      factory=dict)
    compile: bool = opt(False, "torch.compile the encoder, necks and heads in place (training, eval and predict; "
                        "state-dict names unchanged)")
    channels_last: bool = opt(True, "NHWC weights and activations: 20-30 % faster convolutions on CPU and GPU")

    @classmethod
    def prepare(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """Old configs made whole: `tasks` from what they enable when unset (`legacy_tasks`), a head
        section's old `enabled` key set to match it, and the memory keys `caption_decoder` kept before
        `memory` existed moved there (`HeadSpec.moved`); so the validated config (`config show`) says
        what runs."""
        raw = _legacy_tasks(dict(raw))
        for name in head_names():
            head = get_head(name)
            section = raw.get(head.section)
            if not head.moved or not isinstance(section, Mapping):
                continue
            section = dict(_plain(section))
            for k, target in head.moved:
                if k not in section:
                    continue
                value, dest = section.pop(k), dict(_plain(raw.get(target) or {}))
                if k in dest and dest[k] != value:
                    fail(f"model.{head.section}.{k}", f"is {value!r} but model.{target}.{k} is {dest[k]!r}; "
                         f"keep model.{target}.{k} only")
                raw[target] = {**dest, k: value}
            raw[head.section] = section
        return raw

    def validate(self, key: str) -> None:
        # the caption neck is `neck` with these keys replaced: it must be a valid neck config itself
        if self.caption_neck:
            neck_config({**dataclasses.asdict(self.neck), **self.caption_neck}, f"{key}.caption_neck")
        if self.datasets is not None and (not self.datasets or len(set(self.datasets)) != len(self.datasets)):
            fail(f"{key}.datasets", f"must be a non-empty list of distinct dataset ids, got {self.datasets}")
        for name in self.num_classes:
            if self.datasets is not None and name not in self.datasets:
                fail(f"{key}.num_classes.{name}", f"is not one of {key}.datasets {self.datasets}")
            if self.num_classes[name] < 2:
                fail(f"{key}.num_classes.{name}", f"must be >= 2, got {self.num_classes[name]}")
        if self.tasks is not None and (not self.tasks or len(set(self.tasks)) != len(self.tasks)):
            fail(f"{key}.tasks", f"must be a non-empty list of distinct tasks, got {self.tasks}")
        for name in head_names():
            head = get_head(name)
            check = getattr(getattr(self, head.section), "check", None)
            if callable(check):
                check(self, f"{key}.{head.section}")


def _legacy_tasks(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with `tasks` filled in when unset (every head on by default, `HeadSpec.default`, plus those
    whose section says `enabled: true`) and each section's `enabled` (an old key) matching it."""
    given = raw.get("tasks")
    if given is not None and not isinstance(given, (list, tuple)):
        return raw  # a wrong value: the schema names it
    tasks = list(given) if given is not None else []
    for name in head_names():
        head = get_head(name)
        section = raw.get(head.section)
        if section is not None and not isinstance(section, Mapping):
            return raw
        if "enabled" not in {f.name for f in dataclasses.fields(head.config)}:
            if given is None and head.default:
                tasks.append(name)
            continue
        enabled = (section or {}).get("enabled")
        if given is not None and enabled is not None and bool(enabled) != (name in tasks):
            fail(f"model.{head.section}.enabled", f"is {str(enabled).lower()} but model.tasks {tasks} "
                 f"{'lacks' if enabled else 'lists'} {name}; drop this old key (model.tasks decides)")
        if given is None and (enabled or (enabled is None and head.default)):
            tasks.append(name)
    raw["tasks"] = [t for t in head_names() if t in tasks] if given is None else tasks
    for name in head_names():
        head = get_head(name)
        if "enabled" in {f.name for f in dataclasses.fields(head.config)}:
            raw[head.section] = {**dict(_plain(raw.get(head.section) or {})), "enabled": name in raw["tasks"]}
    return raw


def legacy_tasks(cfg: Any) -> list[str]:
    """The task list a typed model config means (`tasks`, filled in by `prepare` for old configs)."""
    return list(cfg.tasks) if cfg.tasks is not None else _legacy_tasks(to_plain(cfg))["tasks"]


def model_tasks(cfg: Any) -> list[str]:
    """The tasks of a typed model config (any model type): its `tasks`, or `legacy_tasks` when unset."""
    tasks = getattr(cfg, "tasks", None)
    return list(tasks) if tasks is not None else legacy_tasks(cfg)


_MODEL_CFG: dict[tuple[tuple[str, str], ...], type] = {}


def model_cfg_class() -> type:
    """The `model` dataclass of a ChangeCaptioner: the common keys plus one section per head of the
    head table (`models/heads.py`), typed by its config dataclass (a new head adds its section)."""
    state = tuple(HEADS.items())
    if state not in _MODEL_CFG:
        sections = []
        for name in HEADS:
            head = get_head(name)
            sections.append((head.section, head.config,
                             opt(help=f"the {name} head ({HEADS[name].replace('.', '/')}.py)", factory=head.config)))
        cls = dataclasses.make_dataclass("ModelCfg", sections, bases=(ModelCommonCfg,))
        cls.__doc__ = ModelCommonCfg.__doc__
        _MODEL_CFG[state] = cls
    return _MODEL_CFG[state]


ModelCfg: Any = model_cfg_class()


def _plain(value: Any) -> Any:
    from changeagent.typed import _plain as plain

    return plain(value)


# model type -> (its config dataclass, or a function returning it; builder(cfg dict, vocab_size, device) -> model)
MODEL_TYPES: dict[str, tuple[Any, Callable[..., Any]]] = {}


def model_configs() -> dict[str, type]:
    """Model type -> its config dataclass (the `variants` of the run config's `model`)."""
    return {name: (cfg() if callable(cfg) and not isinstance(cfg, type) else cfg)
            for name, (cfg, _) in MODEL_TYPES.items()}


def model_config(cfg: dict[str, Any], key: str = "model") -> Any:
    """The typed config of a model dict, checked strictly (unknown keys, types, ranges)."""
    if not isinstance(cfg, dict):
        raise ChangeAgentError(f"{key}: must be a mapping, got {type(cfg).__name__}")
    kind = cfg.get("type", "change_captioner")
    if kind not in MODEL_TYPES:
        fail(f"{key}.type", f"{kind!r} is not one of {', '.join(MODEL_TYPES)}{suggest(str(kind), list(MODEL_TYPES))}")
    return convert(model_configs()[kind], cfg, key)


def resolve_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in and every key checked: the dict a model is built from and saved with.

    `tasks` is filled in for configs without it (`legacy_tasks`), and a head section's old `enabled`
    key is set to match it, so the saved config says one thing once."""
    typed = model_config(cfg)
    out = to_plain(typed)
    if out.get("datasets") is None:  # outside a run (which sets its own datasets): the two joint heads
        out["datasets"] = list(DATASETS)
    if out.get("tasks") is None:
        out["tasks"] = legacy_tasks(typed)
    for name in head_names():
        section = out.get(get_head(name).section)
        if isinstance(section, dict) and "enabled" in section:
            section["enabled"] = name in out["tasks"]
    return out


def create_model(cfg: dict[str, Any], vocab_size: int,
                 device: str | torch.device | None = None) -> Any:
    """Build the model described by `cfg` (its `type` selects the builder; see `ModelCfg`).

    `device` builds the parameters there directly (`"meta"`: shapes only, for counting).
    """
    cfg = resolve_config(cfg)
    return MODEL_TYPES[cfg["type"]][1](cfg, vocab_size, device)


def _build_change_captioner(cfg: dict[str, Any], vocab_size: int,
                            device: str | torch.device | None = None) -> ChangeCaptioner:
    with build_on(device):  # "meta": shapes only, nothing initialised (models.hub loads weights into it)
        encoder = Encoder(cfg["encoder"], in_channels=cfg["in_channels"], weights=cfg["encoder_weights"])
        return _assemble(cfg, vocab_size, encoder)


def _assemble(cfg: dict[str, Any], vocab_size: int, encoder: Encoder) -> ChangeCaptioner:
    """Trunk (necks, token memory when a head reads it) and one head per task of `cfg["tasks"]`."""
    n_levels = len(encoder.out_channels)
    mem = cfg["memory"]
    levels = mem["levels"]
    if not isinstance(levels, int) or not 1 <= levels <= n_levels:
        raise ChangeAgentError(f"model config: memory.levels must be in 1..{n_levels}, got {levels!r}")
    heads = {t: get_head(t) for t in cfg["tasks"]}
    with_memory = any(h.memory for h in heads.values())
    mask_neck = build_neck(cfg["neck"], encoder.out_channels)
    caption_neck = None
    if cfg["separate_necks"] and with_memory:
        caption_neck = build_neck({**cfg["neck"], **cfg["caption_neck"]}, encoder.out_channels,
                                  levels=list(range(n_levels - levels, n_levels)), key="model.caption_neck")
    necks = Necks(mask_neck, caption_neck, levels)
    ctx = HeadContext(config=cfg, vocab_size=vocab_size, datasets=list(cfg["datasets"]),
                      level_channels=list(mask_neck.out_channels), fine_channels=encoder.fine_channels,
                      memory_dim=mem["dim"] if with_memory else None)
    # built (and registered) in task order, the memory just before the first head that reads it: the
    # order the parameters were made in when the memory was the caption decoder's (same init, same order)
    memory, memory_before, modules = None, None, {}
    for t, h in heads.items():
        if h.memory and memory is None:
            memory_in = (caption_neck if caption_neck is not None else mask_neck).out_channels[-levels:]
            memory = TokenMemory(memory_in, mem["dim"], mem["dataset_token"], num_datasets=len(cfg["datasets"]))
            memory_before = t
        modules[t] = h.build(ctx, convert(h.config, cfg[h.section], f"model.{h.section}"))
    model = ChangeCaptioner(encoder, necks, modules, cfg, vocab_size, memory=memory, memory_before=memory_before,
                            attrs={t: h.attr for t, h in heads.items()})
    if cfg["compile"]:
        compile_model(model)
    return model


def _build_mci(cfg: dict[str, Any], vocab_size: int, device: str | torch.device | None = None) -> ChangeCaptioner:
    from changeagent.models.mci.model import build_mci  # the faithful reference (models/mci/)

    return build_mci(cfg, vocab_size, device)


MODEL_TYPES["change_captioner"] = (model_cfg_class, _build_change_captioner)
MODEL_TYPES["mci"] = (MCIConfig, _build_mci)
MODEL_TYPES["smp_unet"] = (SmpUnetCfg, build_smp_unet)

__all__ = ["MODEL_TYPES", "ModelCfg", "compile_model", "create_model", "model_config", "model_tasks",
           "resolve_config"]
