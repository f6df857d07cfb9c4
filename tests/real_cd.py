"""A LEVIR-CD crop-layout folder (A/ B/ label/ list/{train,val,test}.txt) built from the real tiles in
shared/data/real_tiles by the real-tile protocol's own split (tools/real_tiles.py: crops of LEVIR-CD,
WHU-CD and DSIFN-CD source images, split by parent image, checked for leakage), so the engine tests
and `make real-tiles` train and test on the same held-out images."""

from __future__ import annotations

from pathlib import Path

from shared_data import DATA
from tool_loader import load_tool

TILES = DATA / "real_tiles"




def build_real_levir_cd(root: Path, crop: int = 256, limit: int | None = None) -> Path:
    """Write the protocol's split under `root` and return its crop-layout folder (`root/all`).
    `limit` keeps at most that many crops per split, taken evenly over the list (small tests)."""
    load_tool("real_tiles").build_split(TILES, root, crop, limit)
    return root / "all"
