"""The label decoders of LEVIR-MCI and SECOND: raw label pixels -> class ids, any illegal value named.

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

from pathlib import Path

import numpy as np

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
