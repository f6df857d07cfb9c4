"""ChangeCaptioner: shared encoder on both dates -> fusion neck(s) -> mask decoder + caption decoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from changeagent.errors import ChangeAgentError
from changeagent.models.caption_decoder import CaptionDecoder
from changeagent.models.decode_cfg import DECODE
from changeagent.models.decoding import beam_search, greedy_decode
from changeagent.models.encoder import STRIDE, Encoder
from changeagent.models.mask_decoder import MaskDecoder
from changeagent.models.necks import FusionNeck
from changeagent.models.retrieval import RetrievalHead


class Necks(nn.Module):
    """The fusion neck(s): one shared by both heads, or a mask neck and a caption-only neck.

    forward(feats_a, feats_b) -> (fused maps of every level for the mask decoder,
                                  fused maps of the `caption_levels` deepest levels for captions)
    """

    def __init__(self, mask: FusionNeck, caption: FusionNeck | None, caption_levels: int) -> None:
        super().__init__()
        self.mask = mask
        self.caption = caption
        self.caption_levels = caption_levels

    def forward(self, feats_a: Sequence[Tensor], feats_b: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        fused = self.mask(feats_a, feats_b)
        if self.caption is None:
            return fused, fused[-self.caption_levels:]
        return fused, self.caption(feats_a, feats_b)


def dataset_ids(dataset: Sequence[str] | str | None, batch: int, device: torch.device,
                known: Sequence[str]) -> Tensor | None:
    """list[str] of dataset ids -> int64 [B] positions in `known` (the model's datasets); None stays None.

    An id the model was not built (trained) for is an error: its caption token would be untrained."""
    if dataset is None:
        return None
    if isinstance(dataset, str):
        dataset = [dataset] * batch
    if len(dataset) != batch:
        raise ChangeAgentError(f"model: got {len(dataset)} dataset names for a batch of {batch}")
    unknown = sorted({d for d in dataset if d not in known})
    if unknown:
        raise ChangeAgentError(f"model: dataset(s) {unknown} are not among the model's datasets {list(known)}")
    return torch.tensor([list(known).index(d) for d in dataset], dtype=torch.long, device=device)


def check_image(image: Any) -> None:
    """Raise ChangeAgentError unless image is float [B, 2, C, H, W] with H, W multiples of 32."""
    if not isinstance(image, Tensor) or image.ndim != 5 or image.shape[1] != 2:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ChangeAgentError(f"model: image must be a tensor [B, 2, C, H, W], got {shape}")
    if not image.is_floating_point():
        raise ChangeAgentError(f"model: image must be a float tensor, got {image.dtype}")
    h, w = image.shape[-2:]
    if h % STRIDE or w % STRIDE or h == 0 or w == 0:
        raise ChangeAgentError(f"model: image height and width must be positive multiples of {STRIDE}, got {h}x{w}")


class ChangeCaptioner(nn.Module):
    """Joint change-mask and change-caption model (see docs/design.md, "Model").

    Build it with `create_model(cfg, vocab_size)`; `config` is the resolved model dict it came from.
    """

    def __init__(self, encoder: Encoder, neck: Necks, mask_decoder: MaskDecoder,
                 caption_decoder: CaptionDecoder, config: dict[str, Any], vocab_size: int,
                 retrieval: RetrievalHead | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.neck = neck
        self.mask_decoder = mask_decoder
        self.caption_decoder = caption_decoder
        self.retrieval = retrieval  # None: a model without the text-retrieval head
        self.config = config
        self.vocab_size = vocab_size
        self.vocab: Any = None  # a changeagent.data.vocab.Vocabulary (models.hub.attach_vocab)

    @property
    def datasets(self) -> list[str]:
        """The dataset ids this model was built for (its semantic heads and caption tokens)."""
        return list(self.config.get("datasets") or [])

    def features(self, image: Tensor, dataset: Sequence[str] | None = None
                 ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """One encoder pass: image [B, 2, C, H, W] -> change [B,1,H,W], masks, caption memory [B,M,d]."""
        check_image(image)
        b, _, c, h, w = image.shape
        in_ch = self.config.get("in_channels", 3)
        if c != in_ch:
            raise ChangeAgentError(f"model: image has {c} channels, the model expects {in_ch}")
        # both dates in one batch: one encoder call, shared (Siamese) weights
        x = torch.cat([image[:, 0], image[:, 1]], dim=0)
        if self.config.get("channels_last", True):
            x = x.contiguous(memory_format=torch.channels_last)
        with_fine = self.mask_decoder.fine is not None
        feats = self.encoder(x, fine=with_fine)
        fine = (feats[0][:b], feats[0][b:]) if with_fine else None
        feats = feats[1:] if with_fine else feats
        feats_a = [f[:b] for f in feats]
        feats_b = [f[b:] for f in feats]
        mask_feats, caption_maps = self.neck(feats_a, feats_b)
        change, masks = self.mask_decoder(mask_feats, (h, w), fine)
        memory = self.caption_decoder.memory(caption_maps, dataset_ids(dataset, b, image.device, self.datasets))
        return change, masks, memory

    def forward(self, image: Tensor, captions: Tensor | None = None,
                dataset: Sequence[str] | None = None,
                retrieval_captions: Tensor | None = None) -> dict[str, Any]:
        """Teacher-forced pass.

        image float [B, 2, C, H, W]; captions int64 [B, L] (`<START> ... <END> <NULL>...`);
        dataset list[str] of length B. Returns {"change": [B,1,H,W], "masks": {name: logits},
        "caption": [B, L-1, V] (position t predicts captions[:, t+1]; only with captions)}; with a
        retrieval head and captions also "pair_emb" [B, D], "text_emb" [B, D] (L2-normalised) and
        "logit_scale" (scalar, the contrastive loss's inverse temperature); `retrieval_captions`
        int64 [B, L'] replaces `captions` as the text side of the retrieval head when given.
        """
        change, masks, memory = self.features(image, dataset)
        out: dict[str, Any] = {"change": change, "masks": masks}
        if captions is not None:
            if not isinstance(captions, Tensor) or captions.ndim != 2 or captions.shape[0] != image.shape[0] \
                    or captions.shape[1] < 2 or captions.dtype != torch.long:
                shape = tuple(captions.shape) if isinstance(captions, Tensor) else type(captions).__name__
                raise ChangeAgentError(f"model: captions must be int64 [B={image.shape[0]}, L>=2], got {shape}")
            if int(captions.max()) >= self.vocab_size or int(captions.min()) < 0:
                raise ChangeAgentError(f"model: caption ids must be in [0, {self.vocab_size}), "
                                       f"got {int(captions.min())}..{int(captions.max())}")
            out["caption"] = self.caption_decoder(memory, captions)
            if self.retrieval is not None:
                out["pair_emb"] = self.retrieval.pair(memory)
                out["text_emb"] = self.retrieval.text(captions if retrieval_captions is None else retrieval_captions)
                out["logit_scale"] = self.retrieval.scale()
        return out

    def embed_text(self, caption_ids: Tensor) -> Tensor:
        """Caption ids int64 [B, L] -> L2-normalised [B, D] in the pair-embedding space."""
        if self.retrieval is None:
            raise ChangeAgentError("model: this model has no retrieval head (model.retrieval.enabled: false)")
        return self.retrieval.text(caption_ids)

    @torch.no_grad()
    def predict(self, image: Tensor, dataset: Sequence[str] | None = None, method: str = DECODE.method,
                beam_size: int = DECODE.beam_size, max_len: int = DECODE.max_len,
                length_penalty: float = DECODE.length_penalty, min_len: int = 0) -> dict[str, Any]:
        """Masks and captions from one encoder pass, in eval mode (the previous mode is restored).

        Returns {"change", "masks"} as in `forward` and "tokens": int64 [B, T] without `<START>`,
        cut at `<END>` (excluded), padded with `<NULL>`. `min_len` forbids `<END>` before that
        many tokens (benchmarks use it to decode a fixed length). With a retrieval head also
        "pair_emb": float [B, D] (L2-normalised) from the same pass.
        """
        if method not in ("greedy", "beam"):
            raise ChangeAgentError(f"predict: method must be 'greedy' or 'beam', got {method!r}")
        was_training = self.training
        self.eval()
        try:
            change, masks, memory = self.features(image, dataset)
            if method == "greedy":
                tokens = greedy_decode(self.caption_decoder, memory, max_len, min_len)
            else:
                tokens = beam_search(self.caption_decoder, memory, beam_size, max_len, length_penalty, min_len)
            out = {"change": change, "masks": masks, "tokens": tokens}
            if self.retrieval is not None:
                out["pair_emb"] = self.retrieval.pair(memory)
        finally:
            self.train(was_training)
        return out

    def param_counts(self) -> dict[str, int]:
        """Parameters per part: total, encoder, neck, mask_decoder, caption_decoder (shared counted once)."""
        def count(m: nn.Module) -> int:
            return sum(p.numel() for p in m.parameters())
        counts = {"total": count(self), "encoder": count(self.encoder), "neck": count(self.neck),
                  "mask_decoder": count(self.mask_decoder), "caption_decoder": count(self.caption_decoder)}
        if self.retrieval is not None:
            counts["retrieval"] = count(self.retrieval)
        return counts
