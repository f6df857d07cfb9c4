"""Multi-scale mask decoder: FPN-style top-down path over the fused maps of every level.

Outputs a binary change head shared by all datasets and one semantic head per dataset (SPEC §1.4):
LEVIR-MCI 3 classes; SECOND-CC 7 land-cover classes for each of the two dates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from changeagent.data.constants import DATASETS, NUM_CLASSES
from changeagent.errors import ChangeAgentError

# maps per dataset: LEVIR has one change-class map, SECOND one land-cover map per date
DATES = {"levir_mci": 1, "second_cc": 2}


def _conv_bn_relu(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class MaskDecoder(nn.Module):
    """Top-down decoder to logits at input resolution.

    Args:
        in_channels: channels of the fused maps, finest (stride 4) first.
        channels: decoder width.
        datasets: dataset ids that get a semantic head (default: all of `DATASETS`).
        dropout: dropout before the 1x1 heads.
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 64,
                 datasets: Sequence[str] | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        names = list(DATASETS if datasets is None else datasets)
        unknown = [d for d in names if d not in NUM_CLASSES]
        if unknown:
            raise ChangeAgentError(f"mask decoder: unknown dataset(s) {unknown}; known: {list(NUM_CLASSES)}")
        if not isinstance(channels, int) or channels < 1:
            raise ChangeAgentError(f"mask decoder: channels must be a positive integer, got {channels!r}")
        self.lateral = nn.ModuleList(_conv_bn_relu(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(_conv_bn_relu(channels, channels, 3) for _ in in_channels[:-1])
        self.drop = nn.Dropout2d(dropout)
        self.change_head = nn.Conv2d(channels, 1, 1)
        self.heads = nn.ModuleDict(
            {d: nn.Conv2d(channels, DATES.get(d, 1) * NUM_CLASSES[d], 1) for d in names}
        )

    def forward(self, feats: Sequence[Tensor], size: tuple[int, int]) -> tuple[Tensor, dict[str, Tensor]]:
        """feats: fused maps [B, C_l, H_l, W_l], finest first; size: (H, W) of the input.

        Returns change logits [B, 1, H, W] and {dataset: [B, K, H, W] or [B, 2, K, H, W]}.
        """
        p = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            lat = self.lateral[i](feats[i])
            p = lat + F.interpolate(p, size=lat.shape[-2:], mode="bilinear", align_corners=False)
            p = self.smooth[i](p)
        p = self.drop(p)
        # all heads as one 1x1 conv and one upsampling call (one pass over the big output);
        # logits are computed at stride 4 and upsampled, as SegFormer/FPN heads do
        heads = cast(list[nn.Conv2d], [self.change_head, *self.heads.values()])
        weight = torch.cat([h.weight for h in heads])
        bias = torch.cat([cast(Tensor, h.bias) for h in heads])
        logits = F.interpolate(F.conv2d(p, weight, bias), size=size, mode="bilinear", align_corners=False)
        parts = logits.split([h.out_channels for h in heads], dim=1)
        masks = {}
        for name, part in zip(self.heads, parts[1:]):
            masks[name] = part.unflatten(1, (DATES[name], NUM_CLASSES[name])) if DATES.get(name, 1) > 1 else part
        return parts[0], masks
