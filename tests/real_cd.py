"""A LEVIR-CD crop-layout folder (A/ B/ label/ list/{train,val,test}.txt) built from the real tiles in
shared/data/real_tiles: LEVIR-CD 256-px crops, the 1024-px LEVIR-CD and WHU-CD parents cut into
256-px crops, and DSIFN-CD 256-px tiles. Splits are made per parent image (no crop of a held-out
image is trained on)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from shared_data import DATA

TILES = DATA / "real_tiles"


def _sources(crop: int) -> list[tuple[str, str, dict[str, np.ndarray]]]:
    """(parent id, crop name, {"A", "B", "label"} arrays) of every real crop; LEVIR-CD 256-px tiles whose
    1024-px parent is present are skipped (they are crops of it)."""
    out = []
    parents_1024 = {p.stem for p in (TILES / "LEVIR-CD-1024" / "A").glob("*.png")}
    for folder, prefix in (("LEVIR-CD-1024", "levir"), ("WHU-CD", "whu")):
        for a in sorted((TILES / folder / "A").glob("*.png")):
            arrays = {k: np.asarray(Image.open(TILES / folder / k / a.name)) for k in ("A", "B", "label")}
            h, w = arrays["label"].shape[:2]
            for r in range(0, h - crop + 1, crop):
                for c in range(0, w - crop + 1, crop):
                    cut = {k: v[r:r + crop, c:c + crop] for k, v in arrays.items()}
                    out.append((f"{prefix}_{a.stem}", f"{prefix}_{a.stem}_{r:04d}_{c:04d}.png", cut))
    for folder, prefix in (("LEVIR-CD", "levir"), ("DSIFN-CD", "dsifn")):
        for a in sorted((TILES / folder / "A").glob("*.png")):
            parent = "_".join(a.stem.split("_")[:2])
            if folder == "LEVIR-CD" and parent in parents_1024:
                continue
            arrays = {k: np.asarray(Image.open(TILES / folder / k / a.name)) for k in ("A", "B", "label")}
            cut = {k: v[:crop, :crop] for k, v in arrays.items()}
            out.append((f"{prefix}_{parent}", f"{prefix}_{a.stem}.png", cut))
    return out


# held out for test (and val): one 1024-px LEVIR-CD and one WHU-CD image (16 crops each), 2 LEVIR-CD
# and 2 DSIFN-CD tiles; the rest (2 + 2 parents cut into crops, 7 + 8 tiles) trains
HELD_OUT = ("levir_test_7", "whu_000241", "levir_test_77", "levir_val_27", "dsifn_8_3", "dsifn_9_3")


def build_real_levir_cd(root: Path, crop: int = 256, limit: int | None = None) -> Path:
    """Write the crop-layout folder at `root` (train: the other images; val = test: `HELD_OUT`).
    `limit` keeps at most that many crops per split, taken evenly over the list (small tests)."""
    items = _sources(crop)
    held = set(HELD_OUT)
    if limit is not None:
        train = [i for i in items if i[0] not in held]
        test = [i for i in items if i[0] in held]
        pick = lambda xs: [xs[j] for j in np.linspace(0, len(xs) - 1, min(limit, len(xs))).round().astype(int)]  # noqa: E731
        items = pick(train) + pick(test)
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for parent, name, arrays in items:
        split = "test" if parent in held else "train"
        for k, v in arrays.items():
            (root / k).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(v)).save(root / k / name)
        lists[split].append(name)
    lists["val"] = list(lists["test"])  # the real samples are few: validate on the held-out images
    (root / "list").mkdir(parents=True, exist_ok=True)
    for split, names in lists.items():
        (root / "list" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return root
