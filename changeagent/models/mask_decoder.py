"""Multi-scale mask decoder: FPN-style top-down path over the fused maps of every level.

Outputs a binary change head shared by all datasets and one semantic head per dataset that has
semantic maps (SPEC §1.4; shapes from the dataset registry, `head_shapes`): e.g.
LEVIR-MCI 3 classes; SECOND-CC 7 land-cover classes for each of the two dates. Binary change and
caption-only datasets use the shared change head alone.

Optionally (`fine` channels > 0) a stride-2 refinement stage: the encoder's stride-2 maps of both
dates are fused (A, B, |A-B|) and added to the upsampled stride-4 decoder output, so the heads see
edges at twice the resolution. Small objects gain most: a 10x10-pixel building covers 2.5x2.5 cells
of a stride-4 map, and bilinear upsampling of stride-4 logits rounds its corners off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from changeagent.data.registry import get_spec
from changeagent.errors import ChangeAgentError
from changeagent.models.features import HeadContext, HeadSpec
from changeagent.typed import opt, to_plain


@dataclass
class MaskDecoderCfg:
    """`model.mask_decoder`: the FPN-style decoder and its heads."""

    channels: int = opt(64, "decoder width", gt=0)
    dropout: float = opt(0.0, "dropout before the 1x1 heads", ge=0, lt=1)
    fine: int = opt(0, "width of the stride-2 refinement stage (0: off)", ge=0)



def _conv_bn_relu(c_in: int, c_out: int, k: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class FineStage(nn.Module):
    """Stride-2 refinement: fuse(A2, B2, |A2-B2|) + up(reduce(p4)) -> depth-wise separable 3x3 conv.

    The depth-wise separable conv (MobileNet style) keeps the cost of the 4x larger map small.
    """

    def __init__(self, enc_channels: int, channels: int, out_channels: int) -> None:
        super().__init__()
        self.fuse = _conv_bn_relu(3 * enc_channels, out_channels, 1)
        self.reduce = _conv_bn_relu(channels, out_channels, 1)
        self.smooth = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels, bias=False),
            _conv_bn_relu(out_channels, out_channels, 1),
        )

    def forward(self, p: Tensor, fa: Tensor, fb: Tensor) -> Tensor:
        """p [B, channels, H/4, W/4]; fa, fb encoder maps [B, enc_channels, H/2, W/2] -> [B, out, H/2, W/2]."""
        f = self.fuse(torch.cat([fa, fb, (fa - fb).abs()], dim=1))
        up = F.interpolate(self.reduce(p), size=f.shape[-2:], mode="bilinear", align_corners=False)
        return self.smooth(f + up)


class MaskDecoder(nn.Module):
    """Top-down decoder to logits at input resolution.

    Args:
        in_channels: channels of the fused maps, finest (stride 4) first.
        channels: decoder width.
        heads: {dataset id: (maps, classes)}: one semantic head per entry, `maps` class maps per item
            (1: one map, 2: one per date).
        dropout: dropout before the 1x1 heads.
        fine: width of the stride-2 refinement stage (0: off, heads at stride 4).
        fine_in: channels of the encoder's stride-2 maps (needed when `fine` > 0).
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 64,
                 heads: dict[str, tuple[int, int]] | None = None, dropout: float = 0.0,
                 fine: int = 0, fine_in: int = 0) -> None:
        super().__init__()
        self.head_shapes = dict(heads or {})
        bad = {d: s for d, s in self.head_shapes.items() if len(s) != 2 or s[0] not in (1, 2) or s[1] < 2}
        if bad:
            raise ChangeAgentError(f"mask decoder: head shapes {bad} must be (1 or 2 maps, >= 2 classes)")
        if not isinstance(channels, int) or channels < 1:
            raise ChangeAgentError(f"mask decoder: channels must be a positive integer, got {channels!r}")
        if not isinstance(fine, int) or fine < 0:
            raise ChangeAgentError(f"mask decoder: fine must be a non-negative integer, got {fine!r}")
        if fine and fine_in < 1:
            raise ChangeAgentError("mask decoder: fine > 0 needs an encoder with stride-2 features "
                                   "(mit_* has none); set model.mask_decoder.fine=0")
        self.lateral = nn.ModuleList(_conv_bn_relu(c, channels, 1) for c in in_channels)
        self.fine = FineStage(fine_in, channels, fine) if fine else None
        head_in = fine or channels
        self.smooth = nn.ModuleList(_conv_bn_relu(channels, channels, 3) for _ in in_channels[:-1])
        self.drop = nn.Dropout2d(dropout)
        self.change_head = nn.Conv2d(head_in, 1, 1)
        self.heads = nn.ModuleDict(
            {d: nn.Conv2d(head_in, maps * k, 1) for d, (maps, k) in self.head_shapes.items()}
        )

    inputs: tuple[str, ...] = ()  # the mask head reads the shared maps only

    def forward(self, feats: Sequence[Tensor], size: tuple[int, int], fine: tuple[Tensor, Tensor] | None = None,
                return_features: bool = False) -> Any:
        """feats: fused maps [B, C_l, H_l, W_l], finest first; size: (H, W) of the input;
        fine: the encoder's stride-2 maps of date A and B [B, C, H/2, W/2] (used when `self.fine`).

        Returns change logits [B, 1, H, W] and {dataset: [B, K, H, W] or [B, 2, K, H, W]}; with
        `return_features` also the top-down map the 1x1 heads read [B, head_in, H/4, W/4] (H/2 with
        the fine stage).
        """
        p = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            lat = self.lateral[i](feats[i])
            p = lat + F.interpolate(p, size=lat.shape[-2:], mode="bilinear", align_corners=False)
            p = self.smooth[i](p)
        if self.fine is not None:
            if fine is None:
                raise ChangeAgentError("mask decoder: the fine stage needs the encoder's stride-2 maps")
            p = self.fine(p, *fine)
        p = self.drop(p)
        # all heads as one 1x1 conv and one upsampling call (one pass over the big output);
        # logits are computed at stride 4 (2 with the fine stage) and upsampled, as SegFormer/FPN heads do
        heads = cast(list[nn.Conv2d], [self.change_head, *self.heads.values()])
        weight = torch.cat([h.weight for h in heads])
        bias = torch.cat([cast(Tensor, h.bias) for h in heads])
        logits = F.interpolate(F.conv2d(p, weight, bias), size=size, mode="bilinear", align_corners=False)
        parts = logits.split([h.out_channels for h in heads], dim=1)
        masks = {}
        for name, part in zip(self.heads, parts[1:]):
            maps, k = self.head_shapes[name]
            masks[name] = part.unflatten(1, (maps, k)) if maps > 1 else part
        return (parts[0], masks, p) if return_features else (parts[0], masks)

    # -- the task-head protocol (models/heads.py) ------------------------------------------------
    @property
    def uses_fine(self) -> bool:
        """Whether it reads feats["fine"] (the model then asks its encoder for the stride-2 maps)."""
        return self.fine is not None

    @property
    def feature_channels(self) -> int:
        """Channels of the published "decoder" feature."""
        return self.change_head.in_channels

    def _run(self, feats: Any) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        return feats.memo("mask_decoder", lambda: self(feats["levels"], feats.size, feats["fine"],
                                                       return_features=True))

    def publish(self, feats: Any) -> None:
        """feats["decoder"]: the top-down map [B, feature_channels, H/4, W/4] (H/2 with the fine stage),
        computed once with the masks (the grounding of a text needs the same multi-level features)."""
        feats.provide("decoder", lambda f: self._run(f)[2])

    def outputs(self, feats: Any, inputs: Mapping[str, Tensor]) -> dict[str, Any]:
        """{"change": float [B, 1, H, W], "masks": {dataset: [B, K, H, W] or [B, 2, K, H, W]}}."""
        change, masks, _ = self._run(feats)
        return {"change": change, "masks": masks}

    def predictions(self, feats: Any, inputs: Mapping[str, Tensor], options: Mapping[str, Any]) -> dict[str, Any]:
        return self.outputs(feats, inputs)


def head_shapes(cfg: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """{dataset id: (maps, classes)} of the semantic heads of a resolved model config (registry specs)."""
    names = cfg["datasets"]
    if not isinstance(names, list) or not names or len(set(names)) != len(names):
        raise ChangeAgentError(f"model config: datasets must be a non-empty list of distinct ids, got {names!r}")
    overrides = cfg.get("num_classes") or {}
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


def class_maps(change: Tensor, logits: Tensor | None, decoding: str) -> tuple[Tensor, Tensor]:
    """The one rule from mask-head logits to class maps: evaluation and `predict` both decode with it.

    change: float [..., H, W] binary change logits; logits: the dataset head's float [..., K, H, W]
    (`classes`) or [..., 2, K, H, W] (`semantic_pair`), None for `binary` (`DatasetSpec.decoding`).
    Returns (changed int64 [..., H, W]: 1 where the change logit is > 0, maps): `binary` -> changed;
    `classes` -> int64 [..., H, W] argmax over the K classes; `semantic_pair` -> int64 [..., 2, H, W]:
    0 (unchanged) where not changed, else 1 + the argmax over classes 1..K-1 (class 0 is never a
    target of a land-cover head, SPEC §1.2).
    """
    changed = (change > 0).long()
    if decoding == "binary":
        return changed, changed
    if logits is None:
        raise ChangeAgentError(f"mask decoding {decoding!r} needs the dataset's head logits")
    if decoding == "classes":
        return changed, logits.argmax(-3)
    if decoding == "semantic_pair":
        land = logits[..., 1:, :, :].argmax(-3) + 1  # [..., 2, H, W]
        return changed, torch.where(changed.unsqueeze(-3) > 0, land, torch.zeros_like(land))
    raise ChangeAgentError(f"unknown mask decoding {decoding!r} (binary, classes, semantic_pair)")


def _build(ctx: HeadContext, cfg: MaskDecoderCfg) -> MaskDecoder:
    return MaskDecoder(ctx.level_channels, heads=head_shapes(ctx.config), fine_in=ctx.fine_channels, **to_plain(cfg))


HEAD = HeadSpec(name="mask", section="mask_decoder", config=MaskDecoderCfg, attr="mask_decoder", build=_build,
                default=True)
