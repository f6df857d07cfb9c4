"""Change-Agent checkpoint -> MCIModel: key mapping, safe loading, checks, and the model folder.

The reference `train.py` saves `{"encoder_dict", "encoder_trans_dict", "decoder_dict"}` (the state
dicts of its Encoder, AttentiveEncoder and DecoderTransformer). Every tensor our model uses is mapped
from one reference key; reference modules the reference forward never calls (Q/K/V LayerNorms,
`fuse_conv2`, `PCM`, the caption neck's per-layer Linear, `fc_alpha*`, `embedding_1D`) are dropped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from changeagent.data.constants import LEVIR_MEAN, LEVIR_STD
from changeagent.errors import ChangeAgentError

MODULES = ("encoder_dict", "encoder_trans_dict", "decoder_dict")
DATA_NORM = {"mean": list(LEVIR_MEAN), "std": list(LEVIR_STD)}  # the reference loader's statistics

# our name inside one bi-temporal layer -> the reference's (Transformer in model_encoder_att.py)
_LAYER = {
    "enhance_q.dw3": "Q_d_conv.d_conv_3x3", "enhance_q.dw15": "Q_d_conv.d_conv_1x5",
    "enhance_q.dw51": "Q_d_conv.d_conv_5x1", "enhance_q.bn": "Q_d_conv.BN", "enhance_q.proj": "Q_d_conv.conv_1",
    "enhance_kv.dw3": "K_d_conv.d_conv_3x3", "enhance_kv.dw15": "K_d_conv.d_conv_1x5",
    "enhance_kv.dw51": "K_d_conv.d_conv_5x1", "enhance_kv.bn": "K_d_conv.BN", "enhance_kv.proj": "K_d_conv.conv_1",
    "attn.fuse": "att.fuse_conv", "attn.q": "att.to_q", "attn.k": "att.to_k", "attn.v": "att.to_v",
    "attn.out": "att.to_out.0", "norm1": "norm1", "norm2": "norm2", "ffn": "feedforward.net",
}
# prefixes of our model -> (reference module, reference prefix)
_PREFIXES = [
    ("encoder.body.", "encoder_dict", "cnn.segformer."),
    ("neck.caption.pos.col.", "encoder_trans_dict", "h_embedding."),
    ("neck.caption.pos.row.", "encoder_trans_dict", "w_embedding."),
    ("neck.mask.pos.col.", "encoder_trans_dict", "h_embedding_CD."),
    ("neck.mask.pos.row.", "encoder_trans_dict", "w_embedding_CD."),
    ("mask_decoder.diff.", "encoder_trans_dict", "conv_dif."),
    ("mask_decoder.fuse.", "encoder_trans_dict", "conv_fuse."),
    ("mask_decoder.up.", "encoder_trans_dict", "to_fused."),
    ("mask_decoder.seg.", "encoder_trans_dict", "to_seg."),
    ("caption_decoder.memory_conv.", "decoder_dict", "Conv1."),
    ("caption_decoder.memory_block.body.", "decoder_dict", "LN.left."),
    ("caption_decoder.embed.", "decoder_dict", "vocab_embedding."),
    ("caption_decoder.head.", "decoder_dict", "wdc."),
]
_NECK = re.compile(r"neck\.(mask|caption)\.layers\.(\d+)\.([ab])\.(.+)\.(\w+)$")
_DEC = re.compile(r"caption_decoder\.layers\.(\d+)\.(.+)$")
_DEC_PARTS = {"self_attn.in_proj.weight": "self_attn.in_proj_weight", "self_attn.in_proj.bias": "self_attn.in_proj_bias",
              "cross_attn.in_proj.weight": "multihead_attn.in_proj_weight",
              "cross_attn.in_proj.bias": "multihead_attn.in_proj_bias"}


def reference_key(name: str) -> tuple[str, str]:
    """Our state-dict name -> (reference module, reference key)."""
    if name == "caption_decoder.pos":
        return "decoder_dict", "position_encoding.pe"
    m = _NECK.match(name)
    if m:
        neck, layer, side, sub, leaf = m.groups()
        ours = next(k for k in _LAYER if sub == k or sub.startswith(k + "."))
        ref_sub = _LAYER[ours] + sub[len(ours):]
        group = "Transformer_aug_CD" if neck == "mask" else "Dynamic_DIF_aware_TR"
        return "encoder_trans_dict", f"{group}.{layer}.{0 if side == 'a' else 1}.{ref_sub}.{leaf}"
    m = _DEC.match(name)
    if m:
        layer, rest = m.groups()
        rest = _DEC_PARTS.get(rest, rest.replace("cross_attn.", "multihead_attn."))
        return "decoder_dict", f"transformer.layers.{layer}.{rest}"
    for ours, module, ref in _PREFIXES:
        if name.startswith(ours):
            return module, ref + name[len(ours):]
    raise KeyError(name)


def load_reference_checkpoint(path: Path) -> dict[str, dict[str, Tensor]]:
    """The three state dicts of a Change-Agent checkpoint, read with `weights_only=True` (no code runs)."""
    if not path.is_file():
        raise ChangeAgentError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling refused or a corrupt file: name it, no traceback
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ChangeAgentError(f"cannot read {path} as plain tensors (torch.load weights_only=True; nothing "
                               f"in it was executed): {first}") from None
    if not isinstance(ckpt, dict) or not all(isinstance(ckpt.get(k), dict) for k in MODULES):
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ChangeAgentError(f"{path} is not a Change-Agent checkpoint: expected a dict with {list(MODULES)} "
                               f"state dicts, got {keys}")
    return {k: ckpt[k] for k in MODULES}


def _vocab_size(ref: dict[str, dict[str, Tensor]], path: Path) -> int:
    emb = ref["decoder_dict"].get("vocab_embedding.weight")
    if not isinstance(emb, Tensor) or emb.ndim != 2:
        raise ChangeAgentError(f"{path}: decoder_dict/vocab_embedding.weight is missing or not a matrix")
    return int(emb.shape[0])


def convert_state(model: torch.nn.Module, ref: dict[str, dict[str, Tensor]], path: Path) -> dict[str, int]:
    """Copy every tensor `model` uses from the reference dicts; an absent or mis-shaped key is an error."""
    own = model.state_dict()
    new: dict[str, Tensor] = {}
    used: set[tuple[str, str]] = set()
    for name, target in own.items():
        module, key = reference_key(name)
        value = ref[module].get(key)
        if not isinstance(value, Tensor):
            raise ChangeAgentError(f"{path}: {module}/{key} is missing (needed for {name})")
        if name == "caption_decoder.pos" and value.ndim == 3 and value.shape[1] == 1:
            value = value[:, 0]  # the reference stores [max_len, 1, dim]
        if tuple(value.shape) != tuple(target.shape):
            raise ChangeAgentError(f"{path}: {module}/{key} has shape {tuple(value.shape)}, expected "
                                   f"{tuple(target.shape)} (for {name})")
        if value.dtype.is_floating_point != target.dtype.is_floating_point:
            raise ChangeAgentError(f"{path}: {module}/{key} has dtype {value.dtype}, expected {target.dtype}")
        new[name] = value.to(target.dtype)
        used.add((module, key))
    model.load_state_dict(new, strict=True, assign=True)
    total = sum(len(d) for d in ref.values())
    return {"mapped": len(new), "ignored": total - len(used)}


def convert_change_agent(checkpoint: Path, vocab_path: Path, out: Path) -> dict[str, Any]:
    """Read a Change-Agent checkpoint + its vocab.json, write a model folder at `out` (atomically).

    The folder is the normal `save_pretrained` one, with LEVIR-MCI as the dataset trained on and the
    reference normalisation as its statistics (`norm.levir_mci`). Returns a summary (parameters, mapped / ignored reference tensors).
    """
    from changeagent.data.vocab import Vocabulary
    from changeagent.fileio import atomic_dir
    from changeagent.models import save_pretrained  # the hub, through the package (no import cycle)
    from changeagent.models.factory import create_model

    ref = load_reference_checkpoint(checkpoint)
    vocab = Vocabulary.load(vocab_path)
    size = _vocab_size(ref, checkpoint)
    if len(vocab) != size:
        raise ChangeAgentError(f"{vocab_path} has {len(vocab)} words but {checkpoint} was trained with {size}")
    pe = ref["decoder_dict"].get("position_encoding.pe")
    cfg: dict[str, Any] = {"type": "mci"}
    if isinstance(pe, Tensor) and pe.ndim == 3:
        cfg["max_len"] = int(pe.shape[0])
    emb = ref["encoder_trans_dict"].get("h_embedding.weight")
    if isinstance(emb, Tensor) and emb.ndim == 2:
        cfg["pos_size"] = int(emb.shape[0])
    model = create_model(cfg, size, device="meta")  # no random init: every tensor comes from the file
    counts = convert_state(model, ref, checkpoint)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ChangeAgentError(f"output {out} exists and is not a folder")
    with atomic_dir(out) as tmp:
        # what it learnt from: the real LEVIR-MCI train split (Change-Agent's release); its own selection
        # score is not in the file
        training = {"datasets": {"levir_mci": {"synthetic": False, "root": None}}, "steps": None,
                    "selected_on": None, "run": None, "source": f"converted from {Path(checkpoint).name} (Change-Agent)"}
        save_pretrained(model, tmp, vocab=vocab, norm={"levir_mci": DATA_NORM}, datasets=["levir_mci"],
                        training=training)
    return {"out": str(out), "params": model.param_counts(), "vocab_size": size, **counts}
