"""Sliding windows, blending weights, padding to multiples of 32, and a row-strip logit blender.

The blender keeps logits for one band of rows (one window height) only, so memory does not grow with
the image height: windows are added one window-row at a time and the rows no later window can touch
are handed back ("flushed") before the next window-row starts. Pair mode and scene mode share it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from changeagent.errors import ChangeAgentError

MULTIPLE = 32  # every encoder we offer downsamples by 32


def ceil_to(n: int, m: int = MULTIPLE) -> int:
    """Smallest multiple of `m` that is >= n."""
    return -(-n // m) * m


def axis_starts(size: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """Window starts along one axis and the window length.

    size <= tile: one window of `ceil_to(size)` pixels (the input is padded, then cropped back).
    Otherwise windows of `tile` pixels every `tile - overlap`, the last one aligned to the end, so
    every window lies inside the image and with overlap 0 and size % tile == 0 they are disjoint.
    """
    if size <= tile:
        return [0], ceil_to(size)
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts, tile


@dataclass(frozen=True)
class ColumnBand:
    """Columns [own0, own1) are written from this band; its windows (`cols`) span [span0, span1)."""

    own0: int
    own1: int
    cols: list[int]
    span0: int
    span1: int


@dataclass(frozen=True)
class Grid:
    """The window layout of an image of `height` x `width` pixels."""

    height: int
    width: int
    tile: int
    overlap: int

    def __post_init__(self) -> None:
        if self.tile <= 0 or self.tile % MULTIPLE:
            raise ChangeAgentError(f"tile size {self.tile} must be a positive multiple of {MULTIPLE}")
        if not 0 <= self.overlap < self.tile // 2 + 1:
            raise ChangeAgentError(f"overlap {self.overlap} must be in [0, tile/2] (tile {self.tile})")
        if self.height <= 0 or self.width <= 0:
            raise ChangeAgentError(f"image has no pixels ({self.height}x{self.width})")

    @property
    def rows(self) -> list[int]:
        return axis_starts(self.height, self.tile, self.overlap)[0]

    @property
    def cols(self) -> list[int]:
        return axis_starts(self.width, self.tile, self.overlap)[0]

    @property
    def win_h(self) -> int:
        return axis_starts(self.height, self.tile, self.overlap)[1]

    @property
    def win_w(self) -> int:
        return axis_starts(self.width, self.tile, self.overlap)[1]

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def windows(self) -> Iterator[tuple[int, int]]:
        """(row, col) of every window's top-left corner, row-major."""
        for r in self.rows:
            for c in self.cols:
                yield r, c

    def col_bands(self, max_width: int, align: int = 256) -> list[ColumnBand]:
        """Split the columns into bands of at most `max_width` owned columns (multiples of `align`).

        Each band lists every window that touches its owned columns, so its pixels get exactly the
        blend of the whole-image grid; windows on a boundary are run by both neighbours. One band
        when the image is narrow enough (the usual case).
        """
        step = max(align, max_width // align * align)
        cols = self.cols
        bands = []
        for own0 in range(0, self.width, step):
            own1 = min(self.width, own0 + step)
            touch = [c for c in cols if c < own1 and c + self.win_w > own0]
            bands.append(ColumnBand(own0, own1, touch, touch[0], min(self.width, touch[-1] + self.win_w)))
        return bands

    def flush_end(self, row_index: int) -> int:
        """Rows [.., end) are final once window-row `row_index` has been added."""
        rows = self.rows
        return rows[row_index + 1] if row_index + 1 < len(rows) else self.height


def blend_weights(h: int, w: int, overlap: int) -> np.ndarray:
    """float32 [h, w] weights: 1 inside, a linear ramp over the `overlap` pixels at each edge.

    Never zero, so a pixel at the image border (seen by one window only) keeps its logits; with
    overlap 0 all ones, so disjoint windows give exactly the per-window logits.
    """
    def ramp(n: int) -> np.ndarray:
        if overlap <= 0:
            return np.ones(n, np.float32)
        d = np.minimum(np.arange(n), np.arange(n)[::-1]).astype(np.float32)
        return np.clip((d + 1.0) / (overlap + 1.0), 0.0, 1.0)

    return np.outer(ramp(h), ramp(w)).astype(np.float32)


def pad_to(arr: np.ndarray, h: int, w: int) -> np.ndarray:
    """Pad the last two axes of `arr` at the bottom/right to (h, w) by repeating edge pixels."""
    ph, pw = h - arr.shape[-2], w - arr.shape[-1]
    if ph < 0 or pw < 0:
        raise ValueError(f"cannot pad {arr.shape} to {h}x{w}")
    if ph == 0 and pw == 0:
        return arr
    width = [(0, 0)] * (arr.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(arr, width, mode="edge")


class StripBlender:
    """Accumulates weighted logits of one window-row band; flushes finished rows.

    The buffer covers image columns [x0, x1) (default: all). Memory: (channels + 1) x win_h x
    (x1 - x0) float32, independent of the image height.
    """

    def __init__(self, grid: Grid, channels: int, x0: int = 0, x1: int | None = None) -> None:
        self.grid = grid
        self.channels = channels
        self.x0 = x0
        width = (grid.width if x1 is None else x1) - x0
        self.top = 0  # image row of buffer row 0
        self.acc = np.zeros((channels, grid.win_h, width), np.float32)
        self.wsum = np.zeros((grid.win_h, width), np.float32)
        self.weights = blend_weights(grid.win_h, grid.win_w, grid.overlap)
        self._row_index = 0

    def add(self, row: int, col: int, logits: np.ndarray) -> None:
        """Add float32 [channels, win_h, win_w] logits of the window at (row, col).

        Windows of a padded image (size < window) are cropped back to the image here.
        """
        r0 = row - self.top
        h = min(self.grid.win_h, self.grid.height - row)
        w = min(self.grid.win_w, self.grid.width - col)
        wt = self.weights[:h, :w]
        c0 = col - self.x0
        self.acc[:, r0 : r0 + h, c0 : c0 + w] += logits[:, :h, :w] * wt
        self.wsum[r0 : r0 + h, c0 : c0 + w] += wt

    def flush(self) -> tuple[int, np.ndarray, np.ndarray]:
        """Finish the current window-row: (first image row, logits [C, n, w], weight sum [n, w]).

        Logits are the weighted mean; pixels no window covered (skipped windows) have weight 0
        and logits 0, the caller marks them nodata.
        """
        end = self.grid.flush_end(self._row_index)
        n = end - self.top
        w = self.wsum[:n].copy()
        logits = self.acc[:, :n] / np.maximum(w, 1e-12)
        first = self.top
        # shift the unfinished rows to the top of the buffer for the next window-row
        keep = self.grid.win_h - n
        if keep > 0:
            self.acc[:, :keep] = self.acc[:, n:].copy()
            self.wsum[:keep] = self.wsum[n:].copy()
        self.acc[:, keep:] = 0.0
        self.wsum[keep:] = 0.0
        self.top = end
        self._row_index += 1
        return first, logits, w
