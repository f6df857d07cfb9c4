"""Reading inputs: plain images (PIL) and rasters (rasterio windows), band selection, grid checks,
WarpedVRT alignment, nodata masks, and the intensity scaling rule.

Scaling rule (`--scale`): ONE stretch for both dates, so radiometric change between A and B is kept
(separate stretches would erase a real brightening or invent one). `auto` = uint8 divided by 255, any
other dtype a per-band 2-98 % percentile stretch of the valid pixels of A and B together (A and B of
different dtypes: give --scale); `percentile[:LO,HI]` = per-band stretch of the LO-HI percentiles of
the valid pixels of A and B together to [0, 1]; `divide:N` = x / N (e.g. `divide:10000` for
Sentinel-2 L2A reflectance). Values are clipped to [0, 1] before the mean/std normalisation.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from PIL import Image
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from changeagent.data.images import decode_image
from changeagent.errors import ChangeAgentError

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MAX_PAIR_PIXELS = 4096 * 4096  # pair mode holds the whole pair in memory; bigger goes to --scene
STATS_SIDE = 1024  # long side of the decimated read used for scene percentiles


@dataclass
class Picture:
    """One input image: raw `data` [C, H, W] (selected bands), `valid` bool [H, W] or None."""

    data: np.ndarray
    valid: np.ndarray | None
    path: str
    crs: Any = None
    transform: Any = None

    @property
    def georeferenced(self) -> bool:
        return self.crs is not None


def both_valid(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """Pixels valid on both dates: bool [H, W] (None means every pixel of that date is valid)."""
    if a is None:
        return b
    return a if b is None else a & b


def parse_bands(text: str | None) -> list[int] | None:
    """`"3,2,1"` -> [3, 2, 1] (1-based band numbers)."""
    if text is None or text == "":
        return None
    try:
        bands = [int(t) for t in str(text).split(",")]
    except ValueError:
        raise ChangeAgentError(f"--bands {text!r} must be comma-separated band numbers like 3,2,1") from None
    if any(b < 1 for b in bands):
        raise ChangeAgentError(f"--bands {text!r}: band numbers start at 1")
    return bands


def bands_hint(count: int, in_channels: int) -> str:
    """A `--bands` value that works for a file of `count` bands and a model of `in_channels`."""
    if count >= in_channels:  # e.g. 3,2,1: RGB from a B02,B03,B04,B08 stack
        return ",".join(str(i) for i in range(in_channels, 0, -1))
    return ",".join(str(min(i, count)) for i in range(1, in_channels + 1))  # e.g. 1,2,2


def select_bands(count: int, bands: Sequence[int] | None, in_channels: int, path: str) -> list[int]:
    """1-based band numbers to read from a file with `count` bands for a model of `in_channels`.

    One band (a grey file, or `--bands N`) is repeated to every band of the model: the rule the dataset
    readers follow for grey images (`changeagent.data.images.read_image`), so a grey pair is seen as in training.
    """
    if bands is None:
        if count == 1:
            return [1] * in_channels
        if count != in_channels:
            raise ChangeAgentError(
                f"{path} has {count} band(s) but the model takes {in_channels}; "
                f"choose bands with --bands (e.g. --bands {bands_hint(count, in_channels)})"
            )
        return list(range(1, count + 1))
    if len(bands) == 1:
        bands = list(bands) * in_channels
    if len(bands) != in_channels:
        raise ChangeAgentError(f"--bands selects {len(bands)} band(s) but the model takes {in_channels}; give "
                               f"{in_channels} band numbers (e.g. --bands {bands_hint(count, in_channels)}) or one")
    bad = [b for b in bands if b > count]
    if bad:
        raise ChangeAgentError(f"{path} has {count} band(s); --bands asks for band {bad[0]} "
                               f"(e.g. --bands {bands_hint(count, in_channels)})")
    return list(bands)


class Scaler:
    """The `--scale` rule: raw values -> float32 in [0, 1] per band."""

    def __init__(self, spec: str = "auto") -> None:
        self.spec = spec
        kind, _, arg = spec.partition(":")
        self.kind = kind
        try:
            if kind == "percentile":
                lo, hi = (float(v) for v in (arg or "2,98").split(","))
                if not 0 <= lo < hi <= 100:
                    raise ValueError
                self.pct = (lo, hi)
            elif kind == "divide":
                self.divisor = float(arg)
                if self.divisor <= 0:
                    raise ValueError
            elif kind != "auto":
                raise ValueError
        except ValueError:
            raise ChangeAgentError(
                f"--scale {spec!r} is not one of auto, percentile[:LO,HI], divide:N"
            ) from None

    def fit(self, data: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Per-band (low, high) float32 [C] from raw `data` [C, H, W] (valid pixels only)."""
        c = data.shape[0]
        kind = self.kind
        if kind == "auto":
            kind = "divide" if data.dtype == np.uint8 else "percentile"
        if kind == "divide":
            div = self.divisor if self.kind == "divide" else 255.0
            return np.zeros(c, np.float32), np.full(c, div, np.float32)
        lo_p, hi_p = getattr(self, "pct", (2.0, 98.0))
        pix = data.reshape(c, -1)
        if valid is not None:
            pix = pix[:, valid.reshape(-1)]
        if pix.shape[1] == 0:
            return np.zeros(c, np.float32), np.ones(c, np.float32)
        lo, hi = np.percentile(pix, [lo_p, hi_p], axis=1).astype(np.float32)
        return lo, np.maximum(hi, lo + 1e-6)

    def fit_pair(self, a: np.ndarray, a_valid: np.ndarray | None, b: np.ndarray,
                 b_valid: np.ndarray | None, names: tuple[str, str] = ("A", "B")) -> tuple[np.ndarray, np.ndarray]:
        """One per-band (low, high) float32 [C] for both dates, from the valid pixels of A and B
        together (`a`, `b` raw [C, H, W], any sizes); see the module docstring."""
        if self.kind == "auto" and a.dtype != b.dtype:
            raise ChangeAgentError(f"{names[0]} is {a.dtype} and {names[1]} is {b.dtype}: --scale auto needs one "
                                   "dtype for both dates; give --scale percentile[:LO,HI] or divide:N")
        c = a.shape[0]
        flat = [x.reshape(c, -1) for x in (a, b)]
        masks = [np.ones(x.shape[1], bool) if v is None else v.reshape(-1) for x, v in zip(flat, (a_valid, b_valid))]
        both = np.concatenate([x[:, m] for x, m in zip(flat, masks)], axis=1)
        return self.fit(both[:, :, None], None)

    @staticmethod
    def apply(data: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """float32 [C, H, W] in [0, 1]."""
        x = (data.astype(np.float32) - lo[:, None, None]) / (hi - lo)[:, None, None]
        return np.clip(x, 0.0, 1.0, out=x)


def is_raster(path: str | Path) -> bool:
    return Path(path).suffix.lower() in RASTER_SUFFIXES


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise ChangeAgentError(f"input {p} does not exist")
    if not p.is_file():
        raise ChangeAgentError(f"input {p} is not a file")
    return p


def read_plain(path: str | Path, bands: Sequence[int] | None, in_channels: int) -> Picture:
    """PNG/JPEG/...: [C, H, W] through the dataset readers' decoder (`data.images.decode_image`);
    an alpha band marks validity."""
    p = _check_file(path)
    arr, mode = decode_image(p, "image", MAX_PAIR_PIXELS, too_big=": too big for pair mode, use --scene")
    data = np.ascontiguousarray(arr.transpose(2, 0, 1))
    valid = None
    if mode in ("RGBA", "LA") and bands is None:
        valid = data[-1] > 0  # the alpha band is a validity mask, not a model input
        data = data[:-1]
    idx = select_bands(data.shape[0], bands, in_channels, str(p))
    return Picture(data[[i - 1 for i in idx]], valid, str(p))


def open_raster(path: str | Path) -> rasterio.DatasetReader:
    p = _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(p)
    except RasterioIOError as e:
        raise ChangeAgentError(f"cannot read raster {p}: {e}") from None


def check_grids(a: Any, b: Any, pa: str, pb: str) -> str | None:
    """None when A and B share CRS, transform and size, else what differs."""
    if a.crs != b.crs:
        return f"CRS differ: {pa} has {a.crs or 'no CRS'}, {pb} has {b.crs or 'no CRS'}"
    if (a.width, a.height) != (b.width, b.height):
        return f"sizes differ: {pa} is {a.width}x{a.height}, {pb} is {b.width}x{b.height}"
    if not a.transform.almost_equals(b.transform, precision=1e-6 * abs(a.transform.a or 1.0)):
        return f"grids differ: {pa} has transform {tuple(a.transform)[:6]}, {pb} has {tuple(b.transform)[:6]}"
    return None


@contextlib.contextmanager
def open_pair(a_path: str | Path, b_path: str | Path, align: bool) -> Iterator[tuple[Any, Any]]:
    """Open A and B as rasterio datasets on one grid; B warped onto A's grid when `align`."""
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(open_raster(a_path))
        b = stack.enter_context(open_raster(b_path))
        problem = check_grids(a, b, str(a_path), str(b_path))
        if problem is not None:
            if not align:
                raise ChangeAgentError(f"{problem}; pass --align to warp B onto A's grid")
            if a.crs is None or b.crs is None:
                raise ChangeAgentError(f"{problem}; --align needs both rasters georeferenced")
            extra = {"add_alpha": True} if b.nodata is None else {}
            b = stack.enter_context(WarpedVRT(
                b, crs=a.crs, transform=a.transform, width=a.width, height=a.height,
                resampling=Resampling.bilinear, **extra,
            ))
        yield a, b


def data_count(src: Any) -> int:
    """Bands of the source file (a WarpedVRT may have added an alpha band)."""
    return getattr(src, "src_dataset", src).count


def read_window(src: Any, window: Window, bands: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Raw [C, h, w] data and bool [h, w] validity (GDAL dataset mask) of one window."""
    try:
        data = src.read(indexes=list(bands), window=window)
        if all(flags == [MaskFlags.all_valid] for flags in src.mask_flag_enums):
            valid = np.ones(data.shape[1:], bool)  # no nodata, no mask: skip a second decode
        else:
            valid = src.dataset_mask(window=window) > 0
    except RasterioIOError as e:
        raise ChangeAgentError(f"cannot read {src.name} at {window}: {e}") from None
    return data, valid


def _decimated(src: Any, bands: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """A whole raster read at reduced resolution (bounded memory): data [C, h, w], valid [h, w]."""
    f = max(1, -(-max(src.width, src.height) // STATS_SIDE))
    shape = (max(1, src.height // f), max(1, src.width // f))
    try:
        data = src.read(indexes=list(bands), out_shape=(len(bands), *shape), resampling=Resampling.nearest)
        valid = src.dataset_mask(out_shape=shape, resampling=Resampling.nearest) > 0
    except RasterioIOError as e:
        raise ChangeAgentError(f"cannot read {src.name}: {e}") from None
    return data, valid


def raster_stats(src_a: Any, bands_a: Sequence[int], src_b: Any, bands_b: Sequence[int],
                 scaler: Scaler) -> tuple[np.ndarray, np.ndarray]:
    """The one scaler (low, high) of a scene pair, from decimated reads of both rasters."""
    (da, va), (db, vb) = _decimated(src_a, bands_a), _decimated(src_b, bands_b)
    return scaler.fit_pair(da, va, db, vb, names=(src_a.name, src_b.name))


def read_raster_pair(a_path: str, b_path: str, bands: Sequence[int] | None, in_channels: int,
                     align: bool) -> tuple[Picture, Picture]:
    """Both rasters whole (pair mode), on A's grid."""
    with open_pair(a_path, b_path, align) as (a, b):
        if a.width * a.height > MAX_PAIR_PIXELS:
            raise ChangeAgentError(f"{a_path} is {a.width}x{a.height}: too big for pair mode, use --scene")
        pics = []
        for src, path in ((a, a_path), (b, b_path)):
            idx = select_bands(data_count(src), bands, in_channels, path)
            data, valid = read_window(src, Window(0, 0, a.width, a.height), idx)
            pics.append(Picture(data, valid, path, a.crs, a.transform))
        return pics[0], pics[1]


def read_plain_pair(a_path: str, b_path: str, bands: Sequence[int] | None, in_channels: int,
                    align: bool) -> tuple[Picture, Picture]:
    """Two plain images; with `align` B is resized to A's size (no georeference to warp with)."""
    pa, pb = read_plain(a_path, bands, in_channels), read_plain(b_path, bands, in_channels)
    if pa.data.shape[1:] != pb.data.shape[1:]:
        if not align:
            raise ChangeAgentError(
                f"sizes differ: {a_path} is {pa.data.shape[2]}x{pa.data.shape[1]}, {b_path} is "
                f"{pb.data.shape[2]}x{pb.data.shape[1]}; pass --align to resize B to A"
            )
        h, w = pa.data.shape[1:]
        pb.data = np.stack([np.asarray(Image.fromarray(ch).resize((w, h), Image.Resampling.BILINEAR))
                            for ch in pb.data])
        if pb.valid is not None:
            pb.valid = np.asarray(Image.fromarray(pb.valid).resize((w, h), Image.Resampling.NEAREST))
    return pa, pb


def read_pair(a_path: str, b_path: str, bands: Sequence[int] | None, in_channels: int,
              align: bool = False) -> tuple[Picture, Picture]:
    """A and B for pair mode (GeoTIFFs via rasterio, other images via PIL)."""
    ra, rb = is_raster(a_path), is_raster(b_path)
    if ra or rb:
        return read_raster_pair(a_path, b_path, bands, in_channels, align)
    return read_plain_pair(a_path, b_path, bands, in_channels, align)
