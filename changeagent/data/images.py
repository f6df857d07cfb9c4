"""Image and label file reading with clear errors.

Every reader raises `ChangeAgentError` naming the file: missing, not an image, truncated, or of a
mode we cannot read."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from changeagent.errors import ChangeAgentError

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error)


def _open(path: str | Path, what: str, max_pixels: int | None = None, too_big: str = "") -> Image.Image:
    """Open and fully decode `path` (PIL is lazy: truncation only shows on load).

    `max_pixels` refuses larger images from the header alone, before any pixel is decoded; `too_big`
    is the hint that message ends with."""
    path = Path(path)
    if not path.exists():
        raise ChangeAgentError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ChangeAgentError(f"{what} {path} is not a file")
    try:
        im = Image.open(path)
        if max_pixels is not None and im.width * im.height > max_pixels:
            im.close()
            raise ChangeAgentError(f"{what} {path} is {im.width}x{im.height}: more than {max_pixels:,} pixels{too_big}")
        im.load()
    except Image.DecompressionBombError:
        raise ChangeAgentError(f"{what} {path} is too big to decode as one image{too_big}") from None
    except _DECODE_ERRORS as e:
        raise ChangeAgentError(f"cannot read {what} {path} (truncated or not an image): {e}") from None
    return im


def decode_image(path: str | Path, what: str = "image", max_pixels: int | None = None,
                 too_big: str = "") -> tuple[np.ndarray, str]:
    """The one decoder of plain (non-GeoTIFF) image files: -> (pixels [H, W, C], mode).

    Palette images are expanded (to RGBA when they carry transparency, else RGB); every other mode
    keeps its bands and dtype (8- or 16-bit), `mode` says what they are. The dataset readers
    (`read_image`) and `predict` (`inference.raster.read_plain`) both start here, so a file reads the
    same everywhere; they differ only in what they accept next (datasets: 8-bit RGB).
    """
    with _open(path, what, max_pixels, too_big) as src:
        im: Image.Image = src
        if src.mode == "P":
            im = src.convert("RGBA" if "transparency" in src.info else "RGB")
        mode = im.mode
        arr = np.asarray(im)
    return (arr[..., None] if arr.ndim == 2 else arr), mode


def read_image(path: str | Path) -> np.ndarray:
    """Read an optical image as uint8 [H, W, 3].

    RGB is taken as is, RGBA drops alpha, palette images are expanded and grey images (with or
    without alpha) are repeated to three channels, the rule `predict` follows too
    (`inference.raster.select_bands`); 16-bit, float, CMYK and other modes are rejected.
    """
    arr, mode = decode_image(path)
    if mode in ("RGB", "RGBA"):
        return np.ascontiguousarray(arr[..., :3])
    if mode in ("L", "LA"):
        return np.ascontiguousarray(np.repeat(arr[..., :1], 3, axis=-1))
    raise ChangeAgentError(f"image {path} has PIL mode {mode!r}; expected 8-bit RGB, RGBA, palette or grey")


def read_label(path: str | Path) -> np.ndarray:
    """Read a label image as uint8: [H, W] for grey/1-bit files, [H, W, 3] for colour files.

    RGBA drops alpha and palette images are expanded to RGB, so decoders see the drawn colours.
    """
    with _open(path, "label") as im:
        if im.mode in ("L", "1", "LA"):
            out = im.convert("L")
        elif im.mode in ("RGB", "RGBA", "P", "PA"):
            out = im.convert("RGB")
        else:
            raise ChangeAgentError(f"label {path} has PIL mode {im.mode!r}; expected 8-bit grey, RGB or palette")
    return np.asarray(out, dtype=np.uint8)


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) from the file header, without decoding pixels."""
    path = Path(path)
    if not path.is_file():
        raise ChangeAgentError(f"file {path} does not exist")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except _DECODE_ERRORS as e:
        raise ChangeAgentError(f"file {path} is not a readable image: {e}") from None
    return h, w


def check_same_size(arrays: Mapping[str, np.ndarray], paths: Mapping[str, Path | str]) -> None:
    """Raise when the [H, W] of the named arrays differ, naming every file and its size."""
    sizes = {k: tuple(a.shape[:2]) for k, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{paths[k]} is {sizes[k][1]}x{sizes[k][0]}" for k in sizes)
        raise ChangeAgentError(f"pair files differ in size: {detail}")


def normalise(pixels: np.ndarray, mean: np.ndarray, std: np.ndarray, scale: float | np.ndarray = 255.0,
              axis: int = -3) -> np.ndarray:
    """Raw pixel values -> float32 (x / scale - mean) / std, as x * (1 / (scale * std)) - mean / std
    (two in-place passes). The one normalisation: the dataset readers and `predict` both use it, so
    eval and predict see the same numbers for the same file. `mean`, `std` (and an array `scale`) are
    per band, the band axis of `pixels` is `axis` (channels first: -3)."""
    shape = [1] * pixels.ndim
    shape[axis] = -1
    std = np.asarray(std, np.float32).reshape(shape)
    mean = np.asarray(mean, np.float32).reshape(shape)
    factor = np.asarray(scale, np.float32).reshape(shape) if np.ndim(scale) else np.float32(scale)
    out = pixels.astype(np.float32)
    out *= 1.0 / (factor * std)
    out -= mean / std
    return out

