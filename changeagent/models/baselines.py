"""Mask-only baselines built from segmentation_models_pytorch parts (`model.type: smp_unet`).

`SiameseUnet`: one smp encoder (ResNet-18 by default, `encoder_weights: null` offline) applied to both
dates with shared weights, the two feature pyramids fused per level (concatenation, as FC-Siam-conc,
or the absolute difference, as FC-Siam-diff), smp's U-Net decoder and one segmentation head whose
channels are the binary change logit plus every semantic head of the run's datasets. There is no
caption head: it trains with `tasks: [mask]` on datasets without captions (LEVIR-CD, WHU-CD,
DSIFN-CD, custom) and is what the real-tile protocol (tools/real_tiles.py) compares `fast` against.

Model contract kept (docs/design.md, "Model"): `config`, `vocab_size`, `vocab`, `datasets`, `tasks`
(`["mask"]`: the model is its own mask head, `head("mask")`), `parts()`, `encoder` (the shared layer
the engine balances GradNorm on), `forward(image, captions=None, dataset=None, *, tasks=None)` and
`predict(image, dataset=None, *, tasks=None, inputs=None, **options)` -> {"change", "masks"},
`param_counts()`. Captions or any other input are errors: there is nothing to decode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from changeagent.data.registry import dataset_ids
from changeagent.errors import ChangeAgentError
from changeagent.models.mask_decoder import head_shapes
from changeagent.models.model_cfg import ModelTypeCfg
from changeagent.typed import fail, opt

NO_CAPTIONS = ("model type smp_unet has no caption head: train it with stage tasks [mask] on datasets "
               "without captions (levir_cd, whu_cd, dsifn_cd, custom)")


@dataclass
class SmpUnetCfg(ModelTypeCfg):
    """`model` with `type: smp_unet`: a Siamese U-Net from smp parts, masks only (no caption head)."""

    type: str = opt("smp_unet", "model type (registry `MODEL_TYPES`; each type has its own keys)")
    encoder: str = opt("resnet18", "smp encoder, shared by both dates (resnet18, resnet34, efficientnet-b0, ...)")
    encoder_weights: str | None = opt(None, "null (offline, from scratch) or imagenet")
    in_channels: int = opt(3, "input bands per date", ge=1)
    tasks: list[str] = opt(help="its task: masks only", factory=lambda: ["mask"], choices=("mask",), length=1)
    fusion: str = opt("concat", "per-level fusion of the dates: concat ([A, B], FC-Siam-conc) or diff (|A - B|)",
                      choices=("concat", "diff"))
    decoder_channels: list[int] = opt(help="U-Net decoder widths, deepest first (5 stages)",
                                      factory=lambda: [256, 128, 64, 32, 16], length=5)
    datasets: list[str] | None = opt(None, "datasets it is built for: their semantic heads (null: the run's "
                                     "data.datasets)", choices=dataset_ids)
    num_classes: dict[str, int] = opt(help="classes of a head whose dataset takes them from its data (custom)",
                                      factory=dict)
    compile: bool = opt(False, "torch.compile the encoder, decoder and head")
    channels_last: bool = opt(True, "NHWC activations: faster convolutions on CPU and GPU")

    def validate(self, key: str) -> None:
        if any(c < 1 for c in self.decoder_channels):
            fail(f"{key}.decoder_channels", f"must be positive, got {self.decoder_channels}")
        if self.datasets is not None and (not self.datasets or len(set(self.datasets)) != len(self.datasets)):
            fail(f"{key}.datasets", f"must be a non-empty list of distinct dataset ids, got {self.datasets}")


class SiameseUnet(nn.Module):
    """Shared smp encoder on A and B -> per-level fusion -> smp UnetDecoder -> change + semantic logits."""

    inputs: tuple[str, ...] = ()  # as the mask task's head: it reads the image pair only

    def __init__(self, config: dict[str, Any], vocab_size: int, heads: dict[str, tuple[int, int]]) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp
        from segmentation_models_pytorch.base import SegmentationHead
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        self.config = config
        self.vocab_size = vocab_size
        self.vocab: Any = None  # a changeagent.data.vocab.Vocabulary (models.hub.attach_vocab)
        try:
            self.encoder = smp.encoders.get_encoder(config["encoder"], in_channels=config["in_channels"], depth=5,
                                                    weights=config["encoder_weights"])
        except (KeyError, ValueError, RuntimeError) as e:
            raise ChangeAgentError(f"model.encoder={config['encoder']!r} (weights "
                                   f"{config['encoder_weights']!r}): {e}") from None
        except OSError as e:  # the download of pretrained weights failed (offline, proxy, ...)
            from changeagent.models.encoder import download_error

            raise download_error(config["encoder"], config["encoder_weights"], e) from None
        widths = list(self.encoder.out_channels)
        fused = [2 * c for c in widths] if config["fusion"] == "concat" else widths
        self.mask_decoder = UnetDecoder(encoder_channels=fused, decoder_channels=list(config["decoder_channels"]),
                                        n_blocks=5)
        self.heads = dict(heads)  # dataset id -> (maps, classes); maps 1 ([B,K,H,W]) or 2 ([B,2,K,H,W])
        outputs = 1 + sum(d * k for d, k in self.heads.values())
        self.segmentation_head = SegmentationHead(config["decoder_channels"][-1], outputs, kernel_size=3)

    @property
    def datasets(self) -> list[str]:
        return list(self.config.get("datasets") or [])

    @property
    def tasks(self) -> list[str]:
        return ["mask"]

    def head(self, task: str) -> Any:
        """The head of `task`: the model itself for `mask` (its decoder and segmentation head)."""
        if task != "mask":
            raise ChangeAgentError(f"model: this model has no {task!r} head (type smp_unet: its tasks: mask)")
        return self

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "mask_decoder": self.mask_decoder, "segmentation_head": self.segmentation_head}

    def features(self, image: Tensor, dataset: Sequence[str] | None = None
                 ) -> tuple[Tensor, dict[str, Tensor], None]:
        """image float [B, 2, C, H, W] (H, W multiples of 32) -> (change [B,1,H,W], masks, None)."""
        from changeagent.models.change_captioner import check_image

        check_image(image)
        b, _, c, h, w = image.shape
        if c != self.config["in_channels"]:
            raise ChangeAgentError(f"model: image has {c} channels, the model expects {self.config['in_channels']}")
        if dataset is not None:
            unknown = sorted({d for d in ([dataset] if isinstance(dataset, str) else dataset) if d not in self.datasets})
            if unknown:
                raise ChangeAgentError(f"model: dataset(s) {unknown} are not among the model's datasets {self.datasets}")
        x = torch.cat([image[:, 0], image[:, 1]], dim=0)  # both dates in one encoder call: shared weights
        if self.config.get("channels_last", True):
            x = x.contiguous(memory_format=torch.channels_last)
        feats = self.encoder(x)
        if self.config["fusion"] == "concat":
            fused = [torch.cat([f[:b], f[b:]], dim=1) for f in feats]
        else:
            fused = [(f[:b] - f[b:]).abs() for f in feats]
        logits = self.segmentation_head(self.mask_decoder(fused))
        change = logits[:, :1]
        masks: dict[str, Tensor] = {}
        start = 1
        for name, (dates, k) in self.heads.items():
            part = logits[:, start : start + dates * k]
            masks[name] = part if dates == 1 else part.reshape(b, dates, k, h, w)
            start += dates * k
        return change, masks, None

    def _check(self, tasks: Sequence[str] | None, inputs: dict[str, Any]) -> None:
        if any(v is not None for v in inputs.values()):
            raise ChangeAgentError(f"{NO_CAPTIONS} (got inputs {sorted(k for k, v in inputs.items() if v is not None)})")
        if tasks is not None and [t for t in tasks if t != "mask"]:
            raise ChangeAgentError(f"model: no head for task(s) {[t for t in tasks if t != 'mask']}; its tasks: mask")

    def forward(self, image: Tensor, captions: Tensor | None = None, dataset: Sequence[str] | None = None,
                *, tasks: Sequence[str] | None = None, **inputs: Any) -> dict[str, Any]:
        self._check(tasks, {"captions": captions, **inputs})
        change, masks, _ = self.features(image, dataset)
        return {"change": change, "masks": masks}

    @torch.no_grad()
    def predict(self, image: Tensor, dataset: Sequence[str] | None = None, *, tasks: Sequence[str] | None = None,
                inputs: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
        """{"change", "masks"} in eval mode (decoding `options` mean nothing here: there is no caption)."""
        self._check(tasks, dict(inputs or {}))
        was_training = self.training
        self.eval()
        try:
            change, masks, _ = self.features(image, dataset)
        finally:
            self.train(was_training)
        return {"change": change, "masks": masks}

    def param_counts(self) -> dict[str, int]:
        """Parameters per part: total, encoder, mask_decoder (decoder + head)."""
        def count(m: nn.Module) -> int:
            return sum(p.numel() for p in m.parameters())
        return {"total": count(self), "encoder": count(self.encoder),
                "mask_decoder": count(self.mask_decoder) + count(self.segmentation_head)}


def build_smp_unet(cfg: dict[str, Any], vocab_size: int, device: str | torch.device | None = None) -> SiameseUnet:
    """`MODEL_TYPES["smp_unet"]` builder: cfg is the resolved config (datasets filled in)."""
    model = SiameseUnet(cfg, vocab_size, head_shapes(cfg))
    if cfg["compile"]:
        for part in (model.encoder, model.mask_decoder, model.segmentation_head):
            part.compile()
    return model.to(device) if device is not None else model
