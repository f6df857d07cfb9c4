"""`create_model(cfg, vocab_size)`: a model from a plain dict of names and sizes.

`cfg["arch"]` picks the architecture from `ARCHITECTURES`: "modular" (default; `ChangeCaptioner` built
from our parts, every key in `DEFAULTS`) or "mci" (the faithful reference, `changeagent.models.mci`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import torch

from changeagent.data.constants import DATASETS
from changeagent.data.registry import get_spec
from changeagent.errors import ChangeAgentError
from changeagent.models.caption_decoder import CaptionDecoder
from changeagent.models.change_captioner import ChangeCaptioner, Necks
from changeagent.models.encoder import Encoder
from changeagent.models.mask_decoder import MaskDecoder
from changeagent.models.necks import build_neck
from changeagent.models.retrieval import RetrievalConfig, RetrievalHead

# every key a model config may hold, with its default (configs/model/*.yaml override these)
DEFAULTS: dict[str, Any] = {
    "arch": "modular",            # see ARCHITECTURES
    "name": None,                 # informative only
    "encoder": "resnet18",
    "encoder_weights": None,      # None (offline), "imagenet", or a local weights file
    "in_channels": 3,
    "neck": {"name": "diff"},
    "separate_necks": False,      # the reference uses one neck per head
    "caption_neck": {},           # keys overriding `neck` for the caption neck when separate
    "mask_decoder": {"channels": 64, "dropout": 0.0, "fine": 0},  # fine: stride-2 stage width, 0 = off
    "caption_decoder": {"dim": 256, "layers": 2, "heads": 8, "ffn_ratio": 4.0, "dropout": 0.1,
                        "levels": 1, "dataset_token": True, "tie_embeddings": False},
    "datasets": list(DATASETS),   # datasets it is built for: semantic heads, caption tokens
    "num_classes": {},            # classes of a head whose dataset takes them from its data (custom)
    "retrieval": RetrievalConfig().to_dict(),  # text-to-pair retrieval head (models/retrieval.py)
    "compile": False,             # torch.compile the encoder, necks and decoders' forward
    "channels_last": True,        # NHWC activations: 20-30 % faster convolutions on CPU and GPU
}
_SECTIONS = ("mask_decoder", "caption_decoder")


def resolve_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in and keys checked: the dict a model is built from and saved with."""
    if not isinstance(cfg, dict):
        raise ChangeAgentError(f"model config must be a mapping, got {type(cfg).__name__}")
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ChangeAgentError(f"model config: unknown key(s) {unknown}; known: {sorted(DEFAULTS)}")
    out = copy.deepcopy(DEFAULTS)
    for key, value in copy.deepcopy(cfg).items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                raise ChangeAgentError(f"model config: {key} must be a mapping, got {value!r}")
            bad = sorted(set(value) - set(DEFAULTS[key]))
            if bad:
                raise ChangeAgentError(f"model config: unknown {key} key(s) {bad}; known: {sorted(DEFAULTS[key])}")
            out[key].update(value)
        else:
            out[key] = value
    given = out["retrieval"]
    if isinstance(given, dict):  # partial sections fill in from the defaults
        given = {**DEFAULTS["retrieval"], **given}
    out["retrieval"] = RetrievalConfig.parse(given).to_dict()
    for key in ("neck", "caption_neck"):
        if not isinstance(out[key], dict):
            raise ChangeAgentError(f"model config: {key} must be a mapping, got {out[key]!r}")
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
                 device: str | torch.device | None = None) -> ChangeCaptioner:
    """Build the model described by `cfg` (configs/model/*.yaml); `cfg["arch"]` selects the builder.

    `device` builds the parameters there directly (`"meta"`: shapes only, for counting).
    """
    if not isinstance(cfg, dict):
        raise ChangeAgentError(f"model config must be a mapping, got {type(cfg).__name__}")
    arch = cfg.get("arch", "modular")
    if arch not in ARCHITECTURES:
        raise ChangeAgentError(f"model config: unknown arch {arch!r}; choices: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](cfg, vocab_size, device)


def build_modular(cfg: dict[str, Any], vocab_size: int,
                  device: str | torch.device | None = None) -> ChangeCaptioner:
    """`ChangeCaptioner` from our parts (see `DEFAULTS`)."""
    cfg = resolve_config(cfg)
    # smp's mit_* constructor calls .item(), which the meta device cannot do: build it on the CPU
    encoder = Encoder(cfg["encoder"], in_channels=cfg["in_channels"], weights=cfg["encoder_weights"])
    if device is not None:
        encoder.to(device)
    with torch.device(device) if device is not None else contextlib.nullcontext():
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
                                  levels=list(range(n_levels - cap_levels, n_levels)))
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


def _build_mci(cfg: dict[str, Any], vocab_size: int,
               device: str | torch.device | None = None) -> ChangeCaptioner:
    from changeagent.models.mci.model import build_mci

    return build_mci(cfg, vocab_size, device)


# arch name -> builder(cfg, vocab_size, device)
ARCHITECTURES: dict[str, Callable[[dict[str, Any], int, str | torch.device | None], ChangeCaptioner]] = {
    "modular": build_modular,
    "mci": _build_mci,
}


def compile_model(model: ChangeCaptioner, **kwargs: Any) -> ChangeCaptioner:
    """`torch.compile` each part in place (state-dict names unchanged); kwargs go to torch.compile."""
    for part in (model.encoder, model.neck, model.mask_decoder, model.caption_decoder):
        part.compile(**kwargs)
    if model.retrieval is not None:
        model.retrieval.compile(**kwargs)
    return model


def resolve_device(name: str) -> torch.device:
    """`cpu`, `cuda`, `cuda:N` or `auto` -> torch.device; a clear error for a bad or absent device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ChangeAgentError(f"--device {name!r} is not a torch device (cpu, cuda, cuda:N, auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ChangeAgentError(f"--device {name}: CUDA is not available on this machine")
    return dev
