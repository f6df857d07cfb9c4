"""`MCIConfig`: every key of the faithful MCI model (configs/model/mci.yaml), typed and checked."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from changeagent.models.model_cfg import ModelTypeCfg
from changeagent.typed import fail, opt


@dataclass
class MCIConfig(ModelTypeCfg):
    """`model` with `type: mci`: the reference's hyper-parameters (Change-Agent `Multi_change/test.py`
    defaults); its two heads are the 3-class LEVIR-MCI mask head and the caption decoder."""

    type: str = opt("mci", "selects this model in `create_model` (factory.MODEL_TYPES)")
    name: str | None = opt("mci", "informative only")
    encoder: str = opt("mit_b1", "smp encoder; widths follow its stages (reference: 64/128/320/512)")
    encoder_weights: str | None = opt(None, "null (offline), imagenet, or a local weights file")
    in_channels: int = opt(3, "input bands per date", ge=1)
    tasks: list[str] = opt(help="its tasks (the reference's two heads; both are always built)",
                           factory=lambda: ["mask", "caption"], choices=("mask", "caption"))
    heads: int = opt(8, "attention heads of both necks and the caption decoder", ge=1)
    mask_neck_layers: int = opt(3, "bi-temporal layers of the detection neck", ge=1)
    caption_neck_layers: int = opt(3, "bi-temporal layers of the caption neck (`n_layers`)", ge=1)
    pos_size: int = opt(16, "rows of the learned 2-D position tables (`feat_size`): maps up to 16x16", ge=1)
    decoder_dim: int = opt(512, "caption decoder width (`feature_dim`)", ge=1)
    decoder_layers: int = opt(1, "caption decoder layers (`decoder_n_layers`)", ge=1)
    max_len: int = opt(41, "rows of the caption position table (`max_length`): the longest decode", ge=1)
    dropout: float = opt(0.1, "dropout", ge=0, lt=1)
    num_classes: int = opt(3, "classes of the mask head: background, road, building", choices=(3,))
    datasets: list[str] = opt(help="its one semantic head's dataset", factory=lambda: ["levir_mci"],
                              choices=("levir_mci",), length=1)
    compile: bool = opt(False, "torch.compile each part (state-dict names unchanged)")
    channels_last: bool = opt(False, "NHWC activations (the neck works on token sequences: little gain)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self, key: str) -> None:
        """Checks across fields, run by `changeagent.typed.convert` after the per-field checks."""
        if self.decoder_dim % self.heads:
            fail(f"{key}.heads", f"{self.heads} must divide {key}.decoder_dim={self.decoder_dim}")
        if sorted(self.tasks) != ["caption", "mask"]:
            fail(f"{key}.tasks", f"the reference has exactly the mask and caption heads, got {self.tasks}")
