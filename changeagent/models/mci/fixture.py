"""The reference-output fixture (`shared/fixtures/mci_reference/`): rebuild its checkpoint, compare a model.

    build_reference_checkpoint(reference.json, out.pth)   # reference-layout checkpoint from keys + fill rule
    compare_to_fixture(model_dir, fixture_dir, device)    # max abs errors and greedy-token equality

Used by the fixture test (through the real `convert` CLI) and by GPU checks (CUDA vs CPU).
"""

from __future__ import annotations

import json
import math
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from changeagent.data.constants import END, NULL
from changeagent.errors import ChangeAgentError


def _fill(module: str, key: str, shape: list[int], dtype: str) -> Tensor:
    """One tensor by the fixture's documented fill rule (reference.json "fill_rule")."""
    if dtype.startswith("int"):
        return torch.zeros(shape, dtype=getattr(torch, dtype))
    g = torch.Generator().manual_seed(zlib.crc32(f"{module}/{key}".encode()))
    if key.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=g)
    if key.endswith("running_mean"):
        return 0.1 * torch.randn(shape, generator=g)
    if len(shape) == 1:
        base = 0.1 * torch.randn(shape, generator=g)
        return 1 + base if key.endswith("weight") else base
    numel = math.prod(shape)
    return torch.randn(shape, generator=g) / math.sqrt(numel / shape[0])


def build_reference_checkpoint(reference_json: Path, out_pth: Path) -> None:
    """Write the reference-layout checkpoint `{encoder_dict, encoder_trans_dict, decoder_dict}` that the
    fixture's outputs were computed with: every key of `reference.json` filled by its rule."""
    spec = json.loads(Path(reference_json).read_text())
    dicts: dict[str, OrderedDict[str, Tensor]] = {}
    for entry in spec["keys"]:
        module, key = entry["module"], entry["key"]
        dicts.setdefault(module, OrderedDict())[key] = _fill(module, key, list(entry["shape"]), entry["dtype"])
    torch.save(dicts, out_pth)


def _normalise(images: np.ndarray, norm: dict[str, Any]) -> Tensor:
    """uint8 [N, 2, H, W, 3] -> float32 [N, 2, 3, H, W] with mean/std given as fractions of 255."""
    mean = np.asarray(norm["mean"], np.float32) * 255
    std = np.asarray(norm["std"], np.float32) * 255
    x = (images.astype(np.float32) - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 1, 4, 2, 3)))


def _reference_tokens(seq: list[int]) -> list[int]:
    """A reference greedy result (`<START> ... [<END>]`) -> our form (no `<START>`, cut at `<END>`)."""
    out = []
    for t in seq[1:]:
        if t == END:
            break
        if t != NULL:  # a generated <NULL> reads as padding in our token rows
            out.append(int(t))
    return out


def _ours(row: list[int]) -> list[int]:
    return [int(t) for t in row if t != NULL]


@torch.no_grad()
def compare_to_fixture(model_dir: Path, fixture_dir: Path, device: str = "cpu") -> dict[str, Any]:
    """Run the model folder on the fixture's inputs on `device` and compare with the reference outputs.

    Returns {"mask_max_abs_err", "caption_max_abs_err" (positions t < length-1), "greedy_equal"
    (batched decode and each pair alone, against the reference's batch-1 greedy loop),
    "greedy_tokens", "reference_tokens", "device"}.
    """
    from changeagent.models import load
    from changeagent.models.decoding import greedy_decode

    model_dir, fixture_dir = Path(model_dir), Path(fixture_dir)
    spec = json.loads((fixture_dir / "reference.json").read_text())
    inputs, expected = np.load(fixture_dir / "inputs.npz"), np.load(fixture_dir / "expected.npz")
    loaded = load(model_dir, map_location=device)
    model, norm = loaded.model.eval(), (loaded.norm or {}).get("levir_mci")
    if not norm:
        raise ChangeAgentError(f"{model_dir}/config.json records no levir_mci statistics (`norm`): convert "
                               "writes the reference's")
    image = _normalise(inputs["images_uint8"], norm).to(device)
    captions = torch.from_numpy(inputs["captions"]).long().to(device)
    lengths = inputs["caption_lengths"].tolist()
    # one encoder pass serves all checks: forward() = features + teacher forcing, predict() = features +
    # greedy_decode, so this is exactly what they compute
    _, masks, memory = model.features(image)
    mask = masks["levir_mci"].float().cpu().numpy()
    mask_err = float(np.abs(mask - expected["mask_logits"]).max())
    logits = model.caption_decoder(memory, captions).float().cpu().numpy()  # [B, L-1, V]
    cap_err = 0.0
    for i, n in enumerate(lengths):
        valid = n - 1  # positions t < length-1 predict real tokens
        cap_err = max(cap_err, float(np.abs(logits[i, :valid] - expected["caption_logits"][i, :valid]).max()))
    max_len = int(model.config.get("max_len", 41))
    decoder = model.caption_decoder
    batched = [_ours(r) for r in greedy_decode(decoder, memory, max_len).cpu().tolist()]
    alone = [_ours(greedy_decode(decoder, memory[i:i + 1], max_len)[0].cpu().tolist())
             for i in range(memory.shape[0])]
    ref = [_reference_tokens(seq) for seq in spec["greedy_tokens"]]
    return {"mask_max_abs_err": mask_err, "caption_max_abs_err": cap_err,
            "greedy_equal": batched == ref and alone == ref, "greedy_tokens": batched,
            "reference_tokens": ref, "device": str(device)}
