"""Caption loss: teacher-forced token cross-entropy, `<NULL>` padding ignored."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from changeagent.data.constants import NULL
from changeagent.errors import ChangeAgentError
from changeagent.typed import opt


@dataclass
class CaptionLossCfg:
    """`loss.caption`: the teacher-forced token cross-entropy."""

    label_smoothing: float = opt(0.0, "label smoothing", ge=0, lt=1)


def caption_loss(logits: Tensor, caption_ids: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy over non-padding target tokens.

    logits: float [B, L-1, V], position t predicts caption_ids[:, t+1].
    caption_ids: int64 [B, L] (`<START> w... <END> <NULL>...`), one caption per item (the engine
    picks one of the five before the forward pass).
    label_smoothing: in [0, 1); the smoothing mass is spread over all V classes (torch semantics),
    padding positions stay excluded from both terms.
    Returns a float32 scalar; 0 (graph-connected) when every target is padding.
    """
    if caption_ids.dim() != 2:
        raise ChangeAgentError(
            f"caption loss: caption_ids must be [B, L] (one caption per item), got {tuple(caption_ids.shape)}"
        )
    if logits.dim() != 3 or logits.shape[0] != caption_ids.shape[0] or logits.shape[1] != caption_ids.shape[1] - 1:
        raise ChangeAgentError(
            f"caption loss: logits {tuple(logits.shape)} do not match caption_ids {tuple(caption_ids.shape)} "
            "(expected logits [B, L-1, V])"
        )
    if not 0.0 <= label_smoothing < 1.0:
        raise ChangeAgentError(f"caption loss: label_smoothing must be in [0, 1), got {label_smoothing}")
    target = caption_ids[:, 1:]
    vocab = logits.shape[2]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= vocab):
        raise ChangeAgentError(
            f"caption loss: token ids span {int(target.min())}..{int(target.max())}, outside 0..{vocab - 1}"
        )
    logits = logits.float()
    if not bool((target != NULL).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(
        logits.reshape(-1, vocab),
        target.reshape(-1).to(torch.long),
        ignore_index=NULL,
        label_smoothing=label_smoothing,
    )
