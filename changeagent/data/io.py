"""Image and label reading with clear errors, and the label decoders of LEVIR-MCI and SECOND.

Every reader raises `ChangeAgentError` naming the file: missing, not an image, truncated, or of a
mode we cannot read. Decoders turn raw label pixels into class ids and name any illegal value.

LEVIR-MCI masks (SPEC §1.1) come in two encodings; the decoder recognises each file's encoding from
the set of colours it contains (``mask_mode="auto"``):

- one-channel (grey): 0 background, 128 road, 255 building. A LEVIR-CD style 0/255 label is
  therefore legal and reads as building change.
- three-channel: every colour must be one of

  ========================  =========  ==========================================
  colour                    class      encoding it comes from
  ========================  =========  ==========================================
  (0, 0, 0)                 background both
  (128, 128, 128)           road       (a) grey stored as RGB
  (255, 255, 255)           building   (a) grey stored as RGB
  (128, 0, 0)               road       (a) value in channel 0 only
  (255, 0, 0)               building   (a) channel 0 only, and (b) red: same class
  (255, 255, 0)             road       (b) yellow
  ========================  =========  ==========================================

  (255, 255, 0) is the one colour the two encodings would read differently (channel 0 says
  building); it only exists in the colour release, so it is road. A file holding yellow together
  with a colour only encoding (a) uses (grey 128/255 or (128, 0, 0)) follows neither encoding and is
  an error, as is any colour outside the table.

``mask_mode="binary"`` is the explicit LEVIR-CD reading: only 0 and 255 (grey, or equal channels)
are legal and 255 becomes building (2).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from changeagent.errors import ChangeAgentError

MASK_MODES = ("auto", "binary")

# LEVIR grey values -> class id
_LEVIR_GREY = {0: 0, 128: 1, 255: 2}
# LEVIR 3-channel colours -> class id (see module docstring)
_LEVIR_COLOURS = {
    (0, 0, 0): 0,
    (128, 128, 128): 1,
    (255, 255, 255): 2,
    (128, 0, 0): 1,
    (255, 0, 0): 2,
    (255, 255, 0): 1,
}
_YELLOW = (255, 255, 0)
_GREY_ONLY = {(128, 128, 128), (255, 255, 255), (128, 0, 0)}

# SECOND palette (SPEC §1.2) -> class id; black is accepted as unchanged too
SECOND_PALETTE = {
    (255, 255, 255): 0,
    (0, 0, 0): 0,
    (0, 0, 255): 1,
    (128, 128, 128): 2,
    (0, 128, 0): 3,
    (0, 255, 0): 4,
    (128, 0, 0): 5,
    (255, 0, 0): 6,
}

_LEVIR_CODES = {(r << 16) | (g << 8) | b: v for (r, g, b), v in _LEVIR_COLOURS.items()}
_SECOND_CODES = {(r << 16) | (g << 8) | b: v for (r, g, b), v in SECOND_PALETTE.items()}

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error)


def _open(path: str | Path, what: str) -> Image.Image:
    """Open and fully decode `path` (PIL is lazy: truncation only shows on load)."""
    path = Path(path)
    if not path.is_file():
        raise ChangeAgentError(f"{what} {path} does not exist")
    try:
        im = Image.open(path)
        im.load()
    except _DECODE_ERRORS as e:
        raise ChangeAgentError(f"{what} {path} cannot be read (truncated or not an image): {e}") from None
    return im


def read_image(path: str | Path) -> np.ndarray:
    """Read an optical image as uint8 [H, W, 3].

    RGB is taken as is, RGBA drops alpha, palette images are expanded and grey images (with or
    without alpha) are repeated to three channels, the rule `predict` follows too
    (`inference.raster.select_bands`); 16-bit, float, CMYK and other modes are rejected.
    """
    with _open(path, "image") as im:
        if im.mode in ("RGB", "RGBA", "P", "L", "LA"):
            rgb = im.convert("RGB")
        else:
            raise ChangeAgentError(
                f"image {path} has PIL mode {im.mode!r}; expected 8-bit RGB, RGBA, palette or grey"
            )
    return np.asarray(rgb, dtype=np.uint8)


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


def _codes(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> int32 [H, W] colour codes r<<16 | g<<8 | b."""
    c = rgb.astype(np.int32)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]


def _code(colour: tuple[int, int, int]) -> int:
    return (colour[0] << 16) | (colour[1] << 8) | colour[2]


def _uncode(code: int) -> tuple[int, int, int]:
    return (code >> 16) & 255, (code >> 8) & 255, code & 255


def _map_codes(
    codes: np.ndarray, table: dict[int, int], path: str | Path, what: str, colour: bool
) -> np.ndarray:
    """Map grey values or colour codes to class ids via `table`; an unknown one is an error naming it."""
    if codes.dtype == np.uint8:  # grey: a histogram and a 256-entry lookup table
        uniq = np.flatnonzero(np.bincount(codes.ravel(), minlength=256)).tolist()
    else:  # colour codes: hash-based unique without inverse; labels hold few colours
        uniq = np.unique(codes).tolist()
    for u in uniq:
        if u not in table:
            shown = f"colour {_uncode(u)}" if colour else f"value {u}"
            raise ChangeAgentError(f"{what} {path} has illegal {shown}")
    if codes.dtype == np.uint8:
        lut = np.zeros(256, dtype=np.int64)
        for u in uniq:
            lut[u] = table[u]
        return lut[codes]
    out = np.zeros(codes.shape, dtype=np.int64)
    for u in uniq:
        if table[u]:
            out[codes == u] = table[u]
    return out


def _as_grey_or_codes(label: np.ndarray, path: str | Path) -> tuple[np.ndarray, bool]:
    """Return (array, is_colour): grey [H, W] values, or int32 colour codes [H, W]."""
    if label.ndim == 2:
        return label, False
    if label.ndim == 3 and label.shape[2] == 3:
        return _codes(label), True
    raise ChangeAgentError(f"label {path} has shape {label.shape}; expected [H, W] or [H, W, 3]")


def decode_levir_mask(label: np.ndarray, path: str | Path = "<array>", mask_mode: str = "auto") -> np.ndarray:
    """Raw LEVIR label (uint8 [H, W] or [H, W, 3]) -> int64 [H, W] with 0 bg, 1 road, 2 building."""
    if mask_mode not in MASK_MODES:
        raise ChangeAgentError(f"mask_mode must be one of {MASK_MODES}, got {mask_mode!r}")
    arr, colour = _as_grey_or_codes(label, path)
    if mask_mode == "binary":
        table = {0: 0, 255: 2} if not colour else {0: 0, _code((255, 255, 255)): 2}
        try:
            return _map_codes(arr, table, path, "label", colour)
        except ChangeAgentError as e:
            raise ChangeAgentError(f"{e} (mask_mode='binary' accepts only 0 and 255)") from None
    if not colour:
        return _map_codes(arr, _LEVIR_GREY, path, "label", False)
    present = {_uncode(int(u)) for u in np.unique(arr)}
    if _YELLOW in present and present & _GREY_ONLY:
        raise ChangeAgentError(
            f"label {path} mixes the two LEVIR-MCI mask encodings: yellow (255, 255, 0) with "
            f"{sorted(present & _GREY_ONLY)}"
        )
    return _map_codes(arr, _LEVIR_CODES, path, "label", True)


def levir_mask_encoding(label: np.ndarray) -> str:
    """Name the encoding of a raw LEVIR label: 'grey', 'colour' (yellow present) or 'grey-rgb'.

    'grey-rgb' is 3-channel without yellow: encoding (a), or a colour file with no road (same decoding).
    """
    if label.ndim == 2:
        return "grey"
    codes = np.unique(_codes(label))
    return "colour" if _code(_YELLOW) in codes.tolist() else "grey-rgb"


def decode_second_sem(label: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
    """SECOND colour-coded land cover (uint8 [H, W, 3]) -> int64 [H, W], 0 unchanged, 1..6 classes."""
    if label.ndim != 3:
        raise ChangeAgentError(
            f"semantic label {path} is single-channel; SECOND labels are RGB colour-coded (SPEC §1.2)"
        )
    arr, _ = _as_grey_or_codes(label, path)
    return _map_codes(arr, _SECOND_CODES, path, "semantic label", True)


def check_same_size(arrays: Mapping[str, np.ndarray], paths: Mapping[str, Path | str]) -> None:
    """Raise when the [H, W] of the named arrays differ, naming every file and its size."""
    sizes = {k: tuple(a.shape[:2]) for k, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{paths[k]} is {sizes[k][1]}x{sizes[k][0]}" for k in sizes)
        raise ChangeAgentError(f"pair files differ in size: {detail}")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same folder, so a failure leaves nothing partial."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise ChangeAgentError(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the rename must not land before the data (power loss mid-run)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs should read like any other
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise ChangeAgentError(f"cannot write {path}: {e.strerror}") from None


def swap_dir_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished folder `tmp` to `final`, replacing an old `final` only once `tmp` is complete.

    The old folder is moved aside first (rename cannot replace a non-empty folder), then removed,
    so at every moment `final` is either the old or the new complete folder.
    """
    old = None
    if final.is_dir() and any(final.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
