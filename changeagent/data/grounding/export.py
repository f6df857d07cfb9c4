"""Export derived referring expressions in a QAG-360K-like layout (`changeagent data ground`).

    OUT/summary.json                              what was written (counts per split and type, options)
    OUT/<split>/json/<Split>.json                 {"format": "changeagent-grounding/1", "dataset", "split",
                                                   "seed", "per_pair", "expression": [entry, ...]}
    OUT/<split>/mask/<id>.png                     target mask, 8-bit grey 0/255 (all 0 for an empty target)
    OUT/<split>/image/im1|im2/<img_id>            only with --images copy (the pair's date-1 / date-2 image)

entry = {"id": int (unique in the export), "img_id": the pair's file name, "type": class | transition |
position | instance | empty, "expression": str, "query": Query.to_dict(), "area": target pixels,
"image_a" / "image_b": the images' paths relative to ROOT}. As in QAG-360K (`{"question": [{id,
img_id, type, question, answer}]}` + `mask/<id>.png`) one mask per entry, named by its id.

The folder is written beside OUT under a temporary name and renamed into place when complete, so a
failure leaves no partial export.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from changeagent.data.grounding.expressions import derive, sample_seed
from changeagent.data.grounding.query import EXPRESSION_TYPES
from changeagent.errors import ChangeAgentError
from changeagent.fileio import atomic_dir

FORMAT = "changeagent-grounding/1"
DATASETS = ("levir_mci", "second_cc", "second")
IMAGE_KEYS = {"levir_mci": ("A", "B"), "second_cc": ("A", "B"), "second": ("im1", "im2")}
SPLIT_FILE = {"train": "Train", "val": "Val", "test": "Test"}


def _present_splits(root: Path, dataset: str, splits: tuple[str, ...]) -> list[str]:
    base = root / "images" if dataset == "levir_mci" else root
    return [s for s in splits if (base / s).is_dir()]


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ChangeAgentError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ChangeAgentError(f"output folder {out} is not empty; pass --overwrite to replace it")
        try:
            fmt = json.loads((out / "summary.json").read_text(encoding="utf-8")).get("format")
        except (OSError, ValueError, AttributeError):
            fmt = None
        if fmt != FORMAT:  # --overwrite deletes the old folder: only ever an earlier export
            raise ChangeAgentError(f"refusing to overwrite {out}: it holds no summary.json of a grounding export")


def _maps(ds: Any, dataset: str, index: int) -> np.ndarray:
    raw = ds.load_raw(index)
    return raw[2] if dataset == "levir_mci" else np.stack([raw[2], raw[3]])


def export_expressions(root: str | Path, dataset: str, out: str | Path, splits: list[str] | None = None,
                       per_pair: int = 8, empty_share: float = 0.2, seed: int = 0, images: str = "none",
                       overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Derive `per_pair` expressions for every pair of `splits` of the dataset at `root`; write them to
    `out` (layout in the module docstring); return the summary (also written as OUT/summary.json)."""
    from changeagent.data.registry import get_spec

    t0 = time.perf_counter()
    dataset = dataset.replace("-", "_")
    if dataset not in DATASETS:
        raise ChangeAgentError(f"data ground: --format must be one of {', '.join(DATASETS)} (datasets with "
                               f"class maps), got {dataset!r}")
    if images not in ("none", "copy"):
        raise ChangeAgentError(f"data ground: --images must be 'none' or 'copy', got {images!r}")
    if not isinstance(per_pair, int) or per_pair < 1:
        raise ChangeAgentError(f"data ground: --per-pair must be a positive integer, got {per_pair!r}")
    if not 0 <= empty_share <= 1:
        raise ChangeAgentError(f"data ground: --empty-share must be in [0, 1], got {empty_share}")
    spec = get_spec(dataset)
    root, out = Path(root).expanduser().absolute(), Path(out).expanduser().absolute()
    if not root.is_dir():
        raise ChangeAgentError(f"dataset root {root} does not exist or is not a folder")
    if splits:
        bad = [s for s in splits if s not in spec.splits]
        if bad:
            raise ChangeAgentError(f"data ground: {spec.title} has splits {list(spec.splits)}, not {bad}")
    else:
        splits = _present_splits(root, dataset, spec.splits)
        if not splits:
            raise ChangeAgentError(f"{root} holds no split of {spec.title} ({spec.layout})")
    if out == root or root in out.parents:
        raise ChangeAgentError(f"data ground: write the export outside the dataset root {root}")
    _check_out(out, overwrite)
    readers = {s: spec.reader(root, split=s) for s in splits}  # layout errors before any writing
    per_split: dict[str, Any] = {}
    with atomic_dir(out) as tmp:
        next_id = 0
        bar = tqdm(total=sum(len(d) for d in readers.values()), desc=f"ground {dataset}", unit="pair",
                   disable=None if progress else True)
        for split, ds in readers.items():
            (tmp / split / "json").mkdir(parents=True)
            (tmp / split / "mask").mkdir()
            entries: list[dict[str, Any]] = []
            types: Counter[str] = Counter()
            empty_pairs = 0
            for i in range(len(ds)):
                files = ds.files(i)
                a_path, b_path = (files[k] for k in IMAGE_KEYS[dataset])
                name = a_path.name
                exprs = derive(_maps(ds, dataset, i), dataset, sample_seed(seed, f"{split}/{name}"), n=per_pair,
                               empty_share=empty_share)
                empty_pairs += all(e.type == "empty" for e in exprs)
                for ex in exprs:
                    Image.fromarray(ex.mask.astype(np.uint8) * 255, mode="L").save(tmp / split / "mask" / f"{next_id}.png")
                    entries.append({"id": next_id, "img_id": name, **ex.record(),
                                    "image_a": str(a_path.relative_to(root)), "image_b": str(b_path.relative_to(root))})
                    types[ex.type] += 1
                    next_id += 1
                if images == "copy":
                    for sub, src in (("im1", a_path), ("im2", b_path)):
                        (tmp / split / "image" / sub).mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(src, tmp / split / "image" / sub / name)
                bar.update(1)
            doc = {"format": FORMAT, "dataset": dataset, "split": split, "seed": seed, "per_pair": per_pair,
                   "empty_share": empty_share, "expression": entries}
            (tmp / split / "json" / f"{SPLIT_FILE[split]}.json").write_text(json.dumps(doc), encoding="utf-8")
            per_split[split] = {"pairs": len(ds), "expressions": len(entries), "pairs_without_target": empty_pairs,
                                "per_type": {t: types[t] for t in EXPRESSION_TYPES if types[t]}}
        bar.close()
        summary = {"format": FORMAT, "dataset": dataset, "root": str(root), "out": str(out), "splits": per_split,
                   "total_expressions": sum(s["expressions"] for s in per_split.values()), "seed": seed,
                   "per_pair": per_pair, "empty_share": empty_share, "images": images,
                   "seconds": round(time.perf_counter() - t0, 3)}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
