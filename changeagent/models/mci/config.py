"""`MCIConfig`: every key of the faithful MCI model (configs/model/mci.yaml), typed and checked."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from changeagent.errors import ChangeAgentError
from changeagent.models.model_cfg import ModelTypeCfg


@dataclass
class MCIConfig(ModelTypeCfg):
    """The reference's hyper-parameters (Change-Agent `Multi_change/test.py` defaults)."""

    type: str = "mci"               # selects this model in `create_model` (factory.MODEL_TYPES)
    name: str | None = "mci"        # informative only
    encoder: str = "mit_b1"         # smp encoder; widths follow its stages (reference: 64/128/320/512)
    encoder_weights: str | None = None  # None (offline), "imagenet", or a local weights file
    in_channels: int = 3
    heads: int = 8                  # attention heads of both necks and the caption decoder
    mask_neck_layers: int = 3       # bi-temporal layers of the detection neck
    caption_neck_layers: int = 3    # bi-temporal layers of the caption neck (`n_layers`)
    pos_size: int = 16              # rows of the learned 2-D position tables (`feat_size`): maps up to 16x16
    decoder_dim: int = 512          # caption decoder width (`feature_dim`)
    decoder_layers: int = 1         # `decoder_n_layers`
    max_len: int = 41               # rows of the caption position table (`max_length`): longest decode
    dropout: float = 0.1
    num_classes: int = 3            # background, road, building
    datasets: list[str] = field(default_factory=lambda: ["levir_mci"])  # the one semantic head
    compile: bool = False           # torch.compile each part (state-dict names unchanged)
    channels_last: bool = False     # NHWC activations (the neck works on token sequences: little gain)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, key: str) -> None:
        """Checks across fields, run by `changeagent.typed.convert` after the per-field checks."""
        parse_mci_config(self.to_dict())


_INTS = ("in_channels", "heads", "mask_neck_layers", "caption_neck_layers", "pos_size", "decoder_dim",
         "decoder_layers", "max_len", "num_classes")


def parse_mci_config(cfg: dict[str, Any]) -> MCIConfig:
    """Plain dict -> checked MCIConfig; unknown keys and bad values raise ChangeAgentError."""
    names = {f.name for f in dataclasses.fields(MCIConfig)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise ChangeAgentError(f"model config (type mci): unknown key(s) {unknown}; known: {sorted(names)}")
    out = MCIConfig(**cfg)
    for key in _INTS:
        value = getattr(out, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ChangeAgentError(f"model config (type mci): {key} must be a positive integer, got {value!r}")
    if out.decoder_dim % out.heads:
        raise ChangeAgentError(f"model config (type mci): heads={out.heads} must divide "
                               f"decoder_dim={out.decoder_dim}")
    if not isinstance(out.dropout, (int, float)) or not 0.0 <= float(out.dropout) < 1.0:
        raise ChangeAgentError(f"model config (type mci): dropout must be in [0, 1), got {out.dropout!r}")
    if out.num_classes != 3 or list(out.datasets) != ["levir_mci"]:
        raise ChangeAgentError("model config (type mci): the reference has one 3-class LEVIR-MCI head "
                               f"(num_classes 3, datasets [levir_mci]); got {out.num_classes}, {out.datasets}")
    out.dropout = float(out.dropout)
    out.datasets = list(out.datasets)
    return out
