"""`MCIModel`: the reference MCI of Change-Agent, number for number, behind the ChangeCaptioner contract.

    image [B, 2, C, H, W] -> shared MiT-B1 (smp) on both dates -> stage maps 64/128/320/512 @ /4../32
      stage 4 -> detection neck -> with stages 1-3: MCIMaskHead -> "masks"["levir_mci"] [B, 3, H, W]
      stage 4 -> caption neck -> MCICaptionDecoder memory (h*w tokens) -> captions
    "change" [B, 1, H, W] = logsumexp(road, building) - background: the log-odds of "changed" under
    the 3-class softmax (the reference has no separate binary head).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from changeagent.errors import ChangeAgentError
from changeagent.models.change_captioner import ChangeCaptioner, compile_model
from changeagent.models.encoder import Encoder, build_on
from changeagent.models.features import Features
from changeagent.models.mci.config import MCIConfig
from changeagent.models.mci.heads import MCICaptionDecoder, MCIMaskHead
from changeagent.models.mci.neck import MCINecks
from changeagent.typed import convert


class MCIModel(ChangeCaptioner):
    """Parts: `encoder` (smp MiT), `neck` (`.mask`, `.caption`), and the heads `mask_decoder` (MCIMaskHead)
    and `caption_decoder` (MCICaptionDecoder, which also builds the memory the reference's way)."""

    neck: MCINecks  # type: ignore[assignment]
    mask_decoder: MCIMaskHead
    caption_decoder: MCICaptionDecoder

    def __init__(self, cfg: MCIConfig, vocab_size: int, encoder: Encoder) -> None:
        channels = list(encoder.out_channels)  # mit_b1: 64, 128, 320, 512 (the reference's)
        dim = channels[-1]
        if len(channels) != 4 or dim % cfg.heads:
            raise ChangeAgentError(f"model config (arch mci): encoder {cfg.encoder!r} gives stages {channels}; "
                                   f"MCI needs 4 stages, the last divisible by heads={cfg.heads}")
        neck = MCINecks(dim, cfg.mask_neck_layers, cfg.caption_neck_layers, cfg.heads, cfg.dropout, cfg.pos_size)
        heads = {"mask": MCIMaskHead(channels, cfg.num_classes),
                 "caption": MCICaptionDecoder(vocab_size, dim, cfg.decoder_dim, cfg.decoder_layers, cfg.heads,
                                              cfg.dropout, cfg.max_len)}
        super().__init__(encoder, neck, heads, cfg.to_dict(), vocab_size,
                         attrs={"mask": "mask_decoder", "caption": "caption_decoder"})

    def _providers(self, image: Tensor, dataset_index: Tensor | None) -> dict[str, Callable[[Features], Any]]:
        """One encoder pass; the necks run when a head reads their output. MCI has no dataset token."""
        b = image.shape[0]
        x = torch.cat([image[:, 0], image[:, 1]], dim=0)  # both dates in one encoder call
        if self.config.get("channels_last"):
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.encoder(x)
        feats_a = [f[:b] for f in feats]
        feats_b = [f[b:] for f in feats]

        def pyramids(f: Features) -> tuple[list[Tensor], list[Tensor]]:
            mask_a, mask_b = self.neck.mask(feats_a[-1], feats_b[-1])
            return [*feats_a[:-1], mask_a], [*feats_b[:-1], mask_b]

        def memory(f: Features) -> Tensor:
            return self.caption_decoder.memory(*self.neck.caption(feats_a[-1], feats_b[-1]))

        return {"pyramids": pyramids, "memory": memory}


def build_mci(cfg: dict[str, Any], vocab_size: int, device: str | torch.device | None = None) -> MCIModel:
    """The faithful MCI from a plain config dict (see `MCIConfig`); `device="meta"` for shapes only."""
    conf = convert(MCIConfig, cfg, "model")
    with build_on(device):  # "meta": shapes only, nothing initialised (models.hub loads weights into it)
        encoder = Encoder(conf.encoder, in_channels=conf.in_channels, weights=conf.encoder_weights)
        model = MCIModel(conf, vocab_size, encoder)
    if conf.compile:
        compile_model(model)
    return model
