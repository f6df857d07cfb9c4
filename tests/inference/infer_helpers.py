"""Helpers for inference tests: a tiny real model saved with save_pretrained, real tiles and rasters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.windows import Window
from shared_data import DATA

from changeagent.data.registry import get_spec
from changeagent.data.vocab import Vocabulary
from changeagent.models import create_model, save_pretrained

TILES = DATA / "real_tiles"
GEOTIFF = DATA / "geotiff"

# fast-like but tiny: resnet18 encoder, diff neck, narrow decoders (CPU tests)
TINY = {
    "encoder": "resnet18",
    "neck": {"name": "diff"},
    "mask_decoder": {"channels": 8},
    "caption_decoder": {"dim": 16, "layers": 1, "heads": 2},
}
WORDS = ["a", "building", "buildings", "road", "new", "is", "built", "the", "scene", "same", "as", "before"]
FAST = {"max_len": 6}  # random weights: keep caption decoding short


def save_tiny(path: Path, seed: int = 0, norm: dict | str | None = "spec", trained: list[str] | dict | None = None,
              **cfg: object) -> Path:
    """A tiny random model folder; `trained`: the datasets recorded as trained on (default: its heads);
    `norm`: the statistics recorded per dataset ("spec": each trained dataset's own, as a run records;
    None: none recorded)."""
    torch.manual_seed(seed)
    vocab = Vocabulary.build([WORDS], min_count=0)
    model = create_model({**TINY, **cfg}, len(vocab))
    datasets = trained if trained is not None else model.datasets
    with torch.no_grad():  # untrained heads predict one class everywhere; spread them so masks vary
        dec = model.mask_decoder
        for conv in [dec.change_head, *dec.heads.values()]:
            conv.weight.normal_(0.0, 2.0)
            conv.bias.zero_()
    if norm == "spec":
        norm = {n: get_spec(n).norm for n in datasets} or None
    save_pretrained(model, path, vocab=vocab, norm=norm, datasets=datasets)
    return path


def crop_tif(src_path: Path, dst: Path, window: Window | None = None, *, paint: tuple | None = None,
             crs: str | None = None, shift: tuple[float, float] = (0.0, 0.0)) -> Path:
    """Copy (a window of) a real raster; `paint=(r0, r1, c0, c1, value)` makes a synthetic change."""
    with rasterio.open(src_path) as src:
        window = window or Window(0, 0, src.width, src.height)
        data = src.read(window=window)
        mask = src.dataset_mask(window=window)
        t = src.window_transform(window)
        prof = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=src.count,
                    dtype=src.dtypes[0], crs=crs or src.crs, nodata=src.nodata, compress="deflate",
                    transform=Affine(t.a, t.b, t.c + shift[0] * t.a, t.d, t.e, t.f + shift[1] * t.e))
    if paint is not None:
        r0, r1, c0, c1, value = paint
        region = data[:, r0:r1, c0:c1]
        region[...] = np.where(mask[r0:r1, c0:c1] > 0, np.asarray(value, data.dtype).reshape(-1, 1, 1), region)
    with rasterio.open(dst, "w", **prof) as out:
        out.write(data)
    return dst


def listing(folder: Path) -> list[str]:
    """Every file name in `folder` (temporary files included)."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
