"""Synthetic data in the other published layouts: render the LEVIR-MCI or SECOND-CC benchmark once,
then write its pairs in the target layout (`relayout`), so every layout's loader reads real files."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from changeagent.data.images import read_image, read_label
from changeagent.data.synth.writer import generate_with_summary
from changeagent.data.vocab import read_karpathy
from changeagent.errors import ChangeAgentError
from changeagent.fileio import swap_dir_into_place

# one pair as the target writer sees it: split, file name, A, B, labels (class ids), 5 captions
Pair = dict[str, Any]


def save_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr)).save(path, format="PNG")


def relayout(source: str, out: str | Path, write: Callable[[Path, list[Pair]], None], n_train: int, n_val: int,
             n_test: int, size: int, seed: int, overwrite: bool = False, progress: bool = True,
             mask_variant: str = "grey", difficulty: str = "default") -> dict[str, Any]:
    """Generate `source` ("levir-mci" | "second-cc", at `difficulty`) and hand its decoded pairs to
    `write(root, pairs)`.

    Pairs carry `label` (LEVIR class ids [H, W]) or `sem` (SECOND class ids [2, H, W]). The output
    folder appears atomically; an existing non-empty `out` needs `overwrite`.
    """
    from changeagent.data.labels import decode_levir_mask, decode_second_sem

    out = Path(out).expanduser().absolute()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ChangeAgentError(f"output folder {out} is not empty (use --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        summary = generate_with_summary(source, work / "src", n_train, n_val, n_test, size=size, seed=seed,
                                        mask_variant=mask_variant, progress=progress, difficulty=difficulty)
        src = work / "src"
        cap_file = "LevirCCcaptions.json" if source == "levir-mci" else "SECOND-CC-AUG.json"
        pairs: list[Pair] = []
        for info in read_karpathy(src / cap_file):
            if source == "levir-mci":
                base = src / "images" / info.split
                pair: Pair = {"a": read_image(base / "A" / info.name), "b": read_image(base / "B" / info.name),
                        "label": decode_levir_mask(read_label(base / "label" / info.name))}
            else:
                base = src / info.split
                sem = [decode_second_sem(read_label(base / "sem" / d / info.name)) for d in ("A", "B")]
                pair = {"a": read_image(base / "rgb" / "A" / info.name),
                        "b": read_image(base / "rgb" / "B" / info.name), "sem": np.stack(sem)}
            pair.update(split=info.split, name=info.name, captions=info.captions, tokens=info.tokens)
            pairs.append(pair)
        root = work / "out"
        root.mkdir()
        write(root, pairs)
        swap_dir_into_place(root, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary["out"] = str(out)
    return summary


def karpathy_json(pairs: list[Pair]) -> str:
    """The caption JSON (Karpathy schema) of `pairs`."""
    images, sentid = [], 0
    for imgid, p in enumerate(pairs):
        sents = []
        for raw, tokens in zip(p["captions"], p["tokens"]):
            sents.append({"raw": raw, "tokens": list(tokens), "imgid": imgid, "sentid": sentid})
            sentid += 1
        images.append({"filename": p["name"], "filepath": p["split"], "split": p["split"], "imgid": imgid,
                       "sentences": sents, "sentids": [s["sentid"] for s in sents]})
    return json.dumps({"images": images})
