"""A picture of a dataset folder: rows of date A | date B | label(s) with the first captions beside them.

Reads the layout the writer produced (or a real release), so it doubles as a visual check of both.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from changeagent.data.synth.writer import CAPTION_FILE
from changeagent.errors import ChangeAgentError
from changeagent.fileio import atomic_path


def _tiles(root: Path, fmt: str, rec: dict) -> list[Path]:
    name, folder = rec["filename"], rec["filepath"]
    if fmt == "levir-mci":
        return [root / "images" / folder / d / name for d in ("A", "B", "label")]
    return [root / folder / k / d / name for k in ("rgb", "sem") for d in ("A", "B")]


def montage(root: str | Path, fmt: str, out: str | Path, n: int = 6, tile: int = 128, n_captions: int = 2,
            change_only: bool = False, names: Sequence[str] | None = None) -> Path:
    """Write a PNG grid of the first `n` pairs of `root` to `out`.

    `change_only` skips no-change pairs; `names` picks pairs by file name instead.
    """
    root = Path(root)
    js = root / CAPTION_FILE[fmt]
    if not js.is_file():
        raise ChangeAgentError(f"{js} does not exist")
    recs = json.loads(js.read_text())["images"]
    if names is not None:
        by_name = {r["filename"]: r for r in recs}
        missing = [x for x in names if x not in by_name]
        if missing:
            raise ChangeAgentError(f"{js} lists no pair named {missing}")
        recs = [by_name[x] for x in names]
    if change_only:
        recs = [r for r in recs if not r["sentences"][0]["raw"].lower().startswith("there is no difference")]
    recs = recs[:n]
    if not recs:
        raise ChangeAgentError(f"{js} lists no pairs to show")
    ncol = len(_tiles(root, fmt, recs[0]))
    text_w, pad = 330, 4
    width = ncol * (tile + pad) + text_w
    canvas = Image.new("RGB", (width, len(recs) * (tile + pad)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    for r, rec in enumerate(recs):
        y = r * (tile + pad)
        for c, path in enumerate(_tiles(root, fmt, rec)):
            with Image.open(path) as im:
                canvas.paste(im.convert("RGB").resize((tile, tile), Image.Resampling.NEAREST), (c * (tile + pad), y))
        lines = [rec["filename"]]
        for s in rec["sentences"][:n_captions]:
            lines += textwrap.wrap("- " + " ".join(s["tokens"]), 50, subsequent_indent="  ")
        lines = lines[: max(2, tile // 16)]  # never spill into the next row
        draw.multiline_text((ncol * (tile + pad) + 4, y + 4), "\n".join(lines), fill=(0, 0, 0), font=font)
    out = Path(out)
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG", optimize=True)
    return out
