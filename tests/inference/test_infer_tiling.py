"""Sliding windows, blending weights and the row-strip blender (no model)."""

import numpy as np
import pytest

from changeagent.errors import ChangeAgentError
from changeagent.inference.tiling import Grid, StripBlender, axis_starts, blend_weights, ceil_to, pad_to


def test_axis_starts_cover_and_stay_inside():
    assert axis_starts(1024, 256, 0) == ([0, 256, 512, 768], 256)
    assert axis_starts(256, 256, 32) == ([0], 256)
    assert axis_starts(100, 256, 32) == ([0], 128)  # small: one padded window
    for size in (257, 300, 511, 777, 1000):
        starts, win = axis_starts(size, 256, 32)
        assert starts[0] == 0 and starts[-1] == size - 256 and win == 256
        assert all(b - a <= 256 - 32 for a, b in zip(starts, starts[1:]))  # overlap at least 32
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + win] = True
        assert covered.all()


def test_grid_rejects_bad_tiles():
    with pytest.raises(ChangeAgentError, match="multiple of 32"):
        Grid(100, 100, 100, 0)
    with pytest.raises(ChangeAgentError, match="overlap"):
        Grid(100, 100, 256, 200)


def test_blend_weights():
    assert (blend_weights(64, 96, 0) == 1).all()
    w = blend_weights(64, 64, 16)
    assert w.min() > 0 and w.max() == 1 and w[32, 32] == 1 and w[0, 0] < w[0, 16] <= 1
    assert np.allclose(w, w[::-1, ::-1])


def test_pad_and_ceil():
    assert ceil_to(1) == 32 and ceil_to(64) == 64 and ceil_to(65) == 96
    a = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    p = pad_to(a, 5, 6)
    assert p.shape == (1, 5, 6) and (p[:, :3, :4] == a).all() and (p[:, 4, 5] == a[0, 2, 3]).all()


def _blend_reference(grid, window_logits):
    """Whole-image accumulation (what the strip blender must reproduce)."""
    c = next(iter(window_logits.values())).shape[0]
    acc = np.zeros((c, grid.height, grid.width))
    ws = np.zeros((grid.height, grid.width))
    wt = blend_weights(grid.win_h, grid.win_w, grid.overlap)
    for (r, col), lg in window_logits.items():
        h, w = min(grid.win_h, grid.height - r), min(grid.win_w, grid.width - col)
        acc[:, r : r + h, col : col + w] += lg[:, :h, :w] * wt[:h, :w]
        ws[r : r + h, col : col + w] += wt[:h, :w]
    return acc / ws


@pytest.mark.parametrize("h,w,tile,overlap", [(300, 200, 64, 16), (128, 128, 64, 0), (50, 300, 64, 32),
                                               (257, 97, 96, 40)])
def test_strip_blender_matches_whole_image_blend(h, w, tile, overlap):
    rng = np.random.default_rng(0)
    grid = Grid(h, w, tile, overlap)
    logits = {rc: rng.normal(size=(3, grid.win_h, grid.win_w)).astype(np.float32) for rc in grid.windows()}
    blender = StripBlender(grid, 3)
    got = np.full((3, h, w), np.nan, np.float32)
    for r in grid.rows:
        for c in grid.cols:
            blender.add(r, c, logits[(r, c)])
        first, lg, wsum = blender.flush()
        assert (wsum > 0).all()
        got[:, first : first + lg.shape[1]] = lg
    assert not np.isnan(got).any()
    assert np.allclose(got, _blend_reference(grid, logits), atol=1e-5)
    # memory is one band of rows, whatever the height
    assert blender.acc.shape == (3, grid.win_h, w)


def test_constant_field_is_seamless_and_disjoint_windows_exact():
    grid = Grid(200, 300, 64, 24)
    blender = StripBlender(grid, 1)
    rows = []
    for r in grid.rows:
        for c in grid.cols:
            blender.add(r, c, np.full((1, 64, 64), 2.5, np.float32))
        rows.append(blender.flush()[1])
    assert np.allclose(np.concatenate(rows, axis=1), 2.5, atol=1e-6)
    # overlap 0 on a multiple of the tile: each pixel is exactly its window's logit
    grid = Grid(128, 128, 64, 0)
    blender = StripBlender(grid, 1)
    wins = {rc: np.random.default_rng(1).normal(size=(1, 64, 64)).astype(np.float32) for rc in grid.windows()}
    for r in grid.rows:
        for c in grid.cols:
            blender.add(r, c, wins[(r, c)])
        first, lg, _ = blender.flush()
        for c in grid.cols:
            assert np.array_equal(lg[:, :, c : c + 64], wins[(first, c)])


@pytest.mark.parametrize("width,max_width", [(1000, 256), (700, 512), (300, 4096)])
def test_column_bands_reproduce_the_whole_blend(width, max_width):
    """Wide scenes run in column bands; each owned column gets exactly the whole-grid blend."""
    rng = np.random.default_rng(2)
    grid = Grid(150, width, 64, 16)
    logits = {rc: rng.normal(size=(2, grid.win_h, grid.win_w)).astype(np.float32) for rc in grid.windows()}
    bands = grid.col_bands(max_width)
    assert bands[0].own0 == 0 and bands[-1].own1 == width
    assert all(a.own1 == b.own0 for a, b in zip(bands, bands[1:]))
    assert len(bands) == -(-width // max(256, max_width // 256 * 256))
    got = np.full((2, grid.height, width), np.nan, np.float32)
    for band in bands:
        assert band.span1 - band.span0 <= band.own1 - band.own0 + 2 * grid.win_w
        blender = StripBlender(grid, 2, band.span0, band.span1)
        for r in grid.rows:
            for c in band.cols:
                blender.add(r, c, logits[(r, c)])
            first, lg, _ = blender.flush()
            got[:, first : first + lg.shape[1], band.own0 : band.own1] = lg[:, :, band.own0 - band.span0 : band.own1 - band.span0]
    assert np.allclose(got, _blend_reference(grid, logits), atol=1e-5)
