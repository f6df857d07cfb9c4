"""`create_model(cfg, vocab_size)`: a ChangeCaptioner from a plain dict of names and sizes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from changeagent.data.constants import DATASETS
from changeagent.data.registry import dataset_ids, get_spec
from changeagent.errors import ChangeAgentError
from changeagent.models.baselines import SmpUnetCfg, build_smp_unet
from changeagent.models.caption_decoder import CaptionDecoder, CaptionDecoderCfg
from changeagent.models.change_captioner import ChangeCaptioner, Necks
from changeagent.models.encoder import Encoder, build_on
from changeagent.models.mask_decoder import MaskDecoder, MaskDecoderCfg
from changeagent.models.mci.config import MCIConfig
from changeagent.models.model_cfg import ModelTypeCfg
from changeagent.models.necks import build_neck, neck_config, neck_configs
from changeagent.models.necks.base import DiffNeckCfg, NeckCfg
from changeagent.models.retrieval import RetrievalConfig, RetrievalHead
from changeagent.typed import convert, fail, opt, suggest, to_plain


@dataclass
class ModelCfg(ModelTypeCfg):
    """`model`: the joint ChangeCaptioner (configs/model/*.yaml hold complete examples)."""

    encoder: str = opt("resnet18", "smp encoder name (resnet18, mit_b1, tu-<timm name>, ...)")
    encoder_weights: str | None = opt(None, "null (offline), imagenet, or a local weights file")
    in_channels: int = opt(3, "input bands per date", ge=1)
    neck: NeckCfg = opt(help="the fusion neck (the mask neck when separate_necks)", factory=DiffNeckCfg,
                        variants=neck_configs)
    separate_necks: bool = opt(False, "one neck per head, as the reference (the caption neck reads the deepest levels)")
    caption_neck: dict[str, Any] = opt(help="keys overriding `neck` for the caption neck when separate_necks",
                                       factory=dict)
    mask_decoder: MaskDecoderCfg = opt(help="mask decoder", factory=MaskDecoderCfg)
    caption_decoder: CaptionDecoderCfg = opt(help="caption decoder", factory=CaptionDecoderCfg)
    datasets: list[str] | None = opt(None, "datasets it is built for: semantic heads, caption tokens (null: the "
                                     "run's data.datasets; levir_mci + second_cc for a bare create_model)",
                                     choices=dataset_ids)
    num_classes: dict[str, int] = opt(help="classes of a head whose dataset takes them from its data (custom)",
                                      factory=dict)
    retrieval: RetrievalConfig = opt(help="text-to-pair retrieval head (models/retrieval.py; enabled: false = none)",
                                     factory=RetrievalConfig)
    compile: bool = opt(False, "torch.compile the encoder, necks, decoders and retrieval head in place (training, "
                        "eval and predict; state-dict names unchanged)")
    channels_last: bool = opt(True, "NHWC weights and activations: 20-30 % faster convolutions on CPU and GPU")

    def validate(self, key: str) -> None:
        # the caption neck is `neck` with these keys replaced: it must be a valid neck config itself
        if self.caption_neck:
            neck_config({**dataclasses.asdict(self.neck), **self.caption_neck}, f"{key}.caption_neck")
        RetrievalConfig.parse(dataclasses.asdict(self.retrieval))  # its own range checks
        if self.datasets is not None and (not self.datasets or len(set(self.datasets)) != len(self.datasets)):
            fail(f"{key}.datasets", f"must be a non-empty list of distinct dataset ids, got {self.datasets}")
        for name in self.num_classes:
            if self.datasets is not None and name not in self.datasets:
                fail(f"{key}.num_classes.{name}", f"is not one of {key}.datasets {self.datasets}")
            if self.num_classes[name] < 2:
                fail(f"{key}.num_classes.{name}", f"must be >= 2, got {self.num_classes[name]}")


# model type -> (config dataclass, builder(cfg dict, vocab_size, device) -> model); the `model.type` key
MODEL_TYPES: dict[str, tuple[type, Callable[..., Any]]] = {}


def model_configs() -> dict[str, type]:
    """Model type -> its config dataclass (the `variants` of the run config's `model`)."""
    return {name: cfg for name, (cfg, _) in MODEL_TYPES.items()}


def model_config(cfg: dict[str, Any], key: str = "model") -> Any:
    """The typed config of a model dict, checked strictly (unknown keys, types, ranges)."""
    if not isinstance(cfg, dict):
        raise ChangeAgentError(f"{key}: must be a mapping, got {type(cfg).__name__}")
    kind = cfg.get("type", "change_captioner")
    if kind not in MODEL_TYPES:
        fail(f"{key}.type", f"{kind!r} is not one of {', '.join(MODEL_TYPES)}{suggest(str(kind), list(MODEL_TYPES))}")
    return convert(MODEL_TYPES[kind][0], cfg, key)


def resolve_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in and every key checked: the dict a model is built from and saved with."""
    out = to_plain(model_config(cfg))
    if out.get("datasets") is None:  # outside a run (which sets its own datasets): the two joint heads
        out["datasets"] = list(DATASETS)
    return out


def head_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """{dataset id: (maps, classes)} of the semantic heads of a resolved model config (registry specs)."""
    names = cfg["datasets"]
    if not isinstance(names, list) or not names or len(set(names)) != len(names):
        raise ChangeAgentError(f"model config: datasets must be a non-empty list of distinct ids, got {names!r}")
    overrides = cfg["num_classes"] or {}
    if not isinstance(overrides, dict) or [n for n in overrides if n not in names]:
        raise ChangeAgentError(f"model config: num_classes {overrides!r} must map some of {names} to a count")
    heads = {}
    for name in names:
        spec = get_spec(name)
        k = overrides.get(name, spec.num_classes)
        if name in overrides and (not isinstance(k, int) or k < 2):
            raise ChangeAgentError(f"model config: num_classes.{name} must be an integer >= 2, got {k!r}")
        dates = spec.dates if name not in overrides else (spec.dates or (1 if k > 2 else 0))
        if dates:  # binary change and caption-only datasets use the shared change head alone
            heads[name] = (dates, k)
    return heads


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
    n_levels = len(encoder.out_channels)
    cap_cfg = dict(cfg["caption_decoder"])
    cap_levels = cap_cfg.pop("levels")
    if not isinstance(cap_levels, int) or not 1 <= cap_levels <= n_levels:
        raise ChangeAgentError(f"model config: caption_decoder.levels must be in 1..{n_levels}, got {cap_levels!r}")
    mask_neck = build_neck(cfg["neck"], encoder.out_channels)
    caption_neck = None
    if cfg["separate_necks"]:
        caption_neck = build_neck({**cfg["neck"], **cfg["caption_neck"]}, encoder.out_channels,
                                  levels=list(range(n_levels - cap_levels, n_levels)), key="model.caption_neck")
    necks = Necks(mask_neck, caption_neck, cap_levels)
    cap_in = (caption_neck if caption_neck is not None else mask_neck).out_channels[-cap_levels:]
    mask_decoder = MaskDecoder(mask_neck.out_channels, heads=head_shapes(cfg), fine_in=encoder.fine_channels,
                               **cfg["mask_decoder"])
    caption_decoder = CaptionDecoder(vocab_size, cap_in, num_datasets=len(cfg["datasets"]), **cap_cfg)
    rcfg = RetrievalConfig.parse(cfg["retrieval"])
    retrieval = RetrievalHead(vocab_size, caption_decoder.dim, rcfg) if rcfg.enabled else None
    model = ChangeCaptioner(encoder, necks, mask_decoder, caption_decoder, cfg, vocab_size, retrieval)
    if cfg["compile"]:
        compile_model(model)
    return model


def _build_mci(cfg: dict[str, Any], vocab_size: int, device: str | torch.device | None = None) -> ChangeCaptioner:
    from changeagent.models.mci.model import build_mci  # the faithful reference (models/mci/)

    return build_mci(cfg, vocab_size, device)


MODEL_TYPES["change_captioner"] = (ModelCfg, _build_change_captioner)
MODEL_TYPES["mci"] = (MCIConfig, _build_mci)
MODEL_TYPES["smp_unet"] = (SmpUnetCfg, build_smp_unet)


def compile_model(model: ChangeCaptioner, **kwargs: Any) -> ChangeCaptioner:
    """`torch.compile` each part in place (state-dict names unchanged); kwargs go to torch.compile."""
    for part in (model.encoder, model.neck, model.mask_decoder, model.caption_decoder):
        part.compile(**kwargs)
    if model.retrieval is not None:
        model.retrieval.compile(**kwargs)
    return model

