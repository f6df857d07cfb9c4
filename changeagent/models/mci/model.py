"""`MCIModel`: the reference MCI of Change-Agent, number for number, behind the ChangeCaptioner contract.

    image [B, 2, C, H, W] -> shared MiT-B1 (smp) on both dates -> stage maps 64/128/320/512 @ /4../32
      stage 4 -> detection neck -> with stages 1-3: MCIMaskHead -> "masks"["levir_mci"] [B, 3, H, W]
      stage 4 -> caption neck -> MCICaptionDecoder memory (h*w tokens) -> captions
    "change" [B, 1, H, W] = logsumexp(road, building) - background: the log-odds of "changed" under
    the 3-class softmax (the reference has no separate binary head).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from changeagent.errors import ChangeAgentError
from changeagent.models.change_captioner import ChangeCaptioner, check_image
from changeagent.models.encoder import Encoder, build_on
from changeagent.models.mci.config import MCIConfig, parse_mci_config
from changeagent.models.mci.heads import MCICaptionDecoder, MCIMaskHead
from changeagent.models.mci.neck import MCINecks


def change_logit(logits: Tensor) -> Tensor:
    """3-class logits [B, 3, H, W] -> binary change logit [B, 1, H, W] = log P(changed) - log P(background)."""
    return torch.logsumexp(logits[:, 1:], dim=1, keepdim=True) - logits[:, :1]


class MCIModel(ChangeCaptioner):
    """Parts: `encoder` (smp MiT), `neck` (`.mask`, `.caption`), `mask_decoder`, `caption_decoder`."""

    neck: MCINecks  # type: ignore[assignment]
    mask_decoder: MCIMaskHead  # type: ignore[assignment]
    caption_decoder: MCICaptionDecoder  # type: ignore[assignment]

    def __init__(self, cfg: MCIConfig, vocab_size: int, encoder: Encoder) -> None:
        torch.nn.Module.__init__(self)
        channels = list(encoder.out_channels)  # mit_b1: 64, 128, 320, 512 (the reference's)
        dim = channels[-1]
        if len(channels) != 4 or dim % cfg.heads:
            raise ChangeAgentError(f"model config (arch mci): encoder {cfg.encoder!r} gives stages {channels}; "
                                   f"MCI needs 4 stages, the last divisible by heads={cfg.heads}")
        self.encoder = encoder
        self.neck = MCINecks(dim, cfg.mask_neck_layers, cfg.caption_neck_layers, cfg.heads, cfg.dropout,
                             cfg.pos_size)
        self.mask_decoder = MCIMaskHead(channels, cfg.num_classes)
        self.caption_decoder = MCICaptionDecoder(vocab_size, dim, cfg.decoder_dim, cfg.decoder_layers, cfg.heads,
                                                 cfg.dropout, cfg.max_len)
        self.retrieval = None  # the reference has no text-retrieval head
        self.config: dict[str, Any] = cfg.to_dict()
        self.vocab_size = vocab_size
        self.vocab: Any = None

    def features(self, image: Tensor, dataset: Sequence[str] | None = None
                 ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """One encoder pass: image [B, 2, C, H, W] -> change [B,1,H,W], masks, caption memory [B, h*w, d].

        `dataset` is accepted for the common contract; MCI has no dataset token.
        """
        check_image(image)
        b, _, c, _, _ = image.shape
        if c != self.config["in_channels"]:
            raise ChangeAgentError(f"model: image has {c} channels, the model expects {self.config['in_channels']}")
        x = torch.cat([image[:, 0], image[:, 1]], dim=0)  # both dates in one encoder call
        if self.config.get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.encoder(x)
        feats_a = [f[:b] for f in feats]
        feats_b = [f[b:] for f in feats]
        mask_a, mask_b = self.neck.mask(feats_a[-1], feats_b[-1])
        cap_a, cap_b = self.neck.caption(feats_a[-1], feats_b[-1])
        logits = self.mask_decoder([*feats_a[:-1], mask_a], [*feats_b[:-1], mask_b])
        memory = self.caption_decoder.memory(cap_a, cap_b)
        return change_logit(logits), {"levir_mci": logits}, memory


def build_mci(cfg: dict[str, Any], vocab_size: int, device: str | torch.device | None = None) -> MCIModel:
    """The faithful MCI from a plain config dict (see `MCIConfig`); `device="meta"` for shapes only."""
    conf = parse_mci_config(cfg)
    with build_on(device):  # "meta": shapes only, nothing initialised (models.hub loads weights into it)
        encoder = Encoder(conf.encoder, in_channels=conf.in_channels, weights=conf.encoder_weights)
        model = MCIModel(conf, vocab_size, encoder)
    if conf.compile:
        from changeagent.models.factory import compile_model

        compile_model(model)
    return model
