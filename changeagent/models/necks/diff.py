"""Cheap bi-temporal fusion of one feature level: both dates, |A-B| and their cosine similarity."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DiffFusion(nn.Module):
    """Fuse A and B maps: conv(concat[A, B, |A-B|, cos(A, B)]) -> BN -> ReLU.

    The `diff` neck is this at every level with no temporal block; the other necks use it after
    their block. Args: in_channels C, out_channels C_out, kernel_size 1 or 3.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3 * in_channels + 1, out_channels, kernel_size,
                              padding=kernel_size // 2, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, xa: Tensor, xb: Tensor) -> Tensor:
        """xa, xb: [B, C, H, W] -> fused [B, C_out, H, W]."""
        # the cosine similarity is a one-channel "how much did this pixel change" cue that
        # is independent of feature scale (the reference mask head uses it too)
        cos = F.cosine_similarity(xa.float(), xb.float(), dim=1, eps=1e-6).unsqueeze(1).to(xa.dtype)
        x = torch.cat([xa, xb, (xa - xb).abs(), cos], dim=1)
        return F.relu(self.norm(self.conv(x)), inplace=True)
