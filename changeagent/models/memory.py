"""The token memory: the fused bi-temporal maps of the deepest level(s) as tokens [B, M, d].

Every head that reads the scene as a sequence (caption decoder, retrieval pooling, question
answering...) cross-attends to the same memory, so it belongs to the trunk: a model builds it when
one of its heads reads it (`HeadSpec.memory`). Per level: a linear projection to width d plus a 2-D
sine position code (and a learned level embedding with several levels); then, optionally, one learned
token per dataset in front (each dataset's caption style) and a LayerNorm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from changeagent.models.caption_decoder import position_2d
from changeagent.typed import opt


@dataclass
class MemoryCfg:
    """`model.memory`: the token memory every sequence head reads (old configs: in `caption_decoder`)."""

    dim: int = opt(256, "token width d (the caption decoder's width too)", gt=0)
    levels: int = opt(1, "how many of the deepest fused levels become tokens", ge=1)
    dataset_token: bool = opt(True, "prepend a learned per-dataset token (one decoder, each dataset's style)")


class TokenMemory(nn.Module):
    """Fused maps [B, C_l, h, w] (deepest last) -> tokens [B, M, dim] (+1 dataset token in front).

    num_datasets: the model's datasets; the dataset embedding has one more row for "no dataset given".
    """

    def __init__(self, in_channels: Sequence[int], dim: int = 256, dataset_token: bool = True,
                 num_datasets: int = 2) -> None:
        super().__init__()
        self.dim = dim
        self.proj = nn.ModuleList(nn.Linear(c, dim) for c in in_channels)
        self.norm = nn.LayerNorm(dim)
        self.level_embed = nn.Parameter(torch.zeros(len(in_channels), dim)) if len(in_channels) > 1 else None
        self.num_datasets = num_datasets
        self.dataset_embed = nn.Embedding(num_datasets + 1, dim) if dataset_token else None

    def forward(self, maps: Sequence[Tensor], dataset_ids: Tensor | None = None) -> Tensor:
        """maps: fused [B, C_l, h, w]; dataset_ids: int64 [B] or None -> [B, M, dim]."""
        tokens = []
        for i, (m, proj) in enumerate(zip(maps, self.proj)):
            _, _, h, w = m.shape
            t = proj(m.flatten(2).transpose(1, 2)) + position_2d(h, w, self.dim, m.device).to(m.dtype)
            if self.level_embed is not None:
                t = t + self.level_embed[i]
            tokens.append(t)
        mem = torch.cat(tokens, dim=1)
        if self.dataset_embed is not None:
            if dataset_ids is None:  # the extra last row means "unknown dataset"
                dataset_ids = torch.full((mem.shape[0],), self.num_datasets, dtype=torch.long, device=mem.device)
            mem = torch.cat([self.dataset_embed(dataset_ids)[:, None].to(mem.dtype), mem], dim=1)
        return self.norm(mem)


# parameters of the memory in models saved before it was its own module (it lived in the caption
# decoder): old name prefix -> new one (ChangeCaptioner renames them when loading a state dict)
LEGACY_NAMES = {
    "caption_decoder.memory_proj.": "memory.proj.",
    "caption_decoder.memory_norm.": "memory.norm.",
    "caption_decoder.level_embed": "memory.level_embed",
    "caption_decoder.dataset_embed.": "memory.dataset_embed.",
}
