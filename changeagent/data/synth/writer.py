"""Write synthetic pairs in the exact LEVIR-MCI and SECOND-CC release layouts (SPEC §1.1, §1.2).

Everything goes into a temporary folder beside the target and is renamed into place at the end, so
an interrupted or failed run leaves nothing behind. Same arguments -> byte-identical files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from changeagent.data.synth import captions as cap
from changeagent.data.synth import scenes
from changeagent.errors import ChangeAgentError
from changeagent.fileio import atomic_dir

FORMATS = ("levir-mci", "second-cc")
MASK_VARIANTS = ("grey", "colour")
# default: the demo's benchmark (unchanged, so its numbers hold); hard: docs/synthetic.md, "The hard benchmark"
DIFFICULTIES = ("default", "hard")
SPLITS = ("train", "val", "test")
CAPTION_FILE = {"levir-mci": "LevirCCcaptions.json", "second-cc": "SECOND-CC-AUG.json"}

# LEVIR class id -> label colour: grey release (all channels equal) and the colour release
LEVIR_LUT = {
    "grey": np.array([[0, 0, 0], [128, 128, 128], [255, 255, 255]], dtype=np.uint8),
    "colour": np.array([[0, 0, 0], [255, 255, 0], [255, 0, 0]], dtype=np.uint8),
}
# SECOND class id -> palette colour (SPEC §1.2); unchanged is white
SECOND_LUT = np.array(
    [[255, 255, 255], [0, 0, 255], [128, 128, 128], [0, 128, 0], [0, 255, 0], [128, 0, 0], [255, 0, 0]],
    dtype=np.uint8,
)
MIN_SIZE, MAX_SIZE = 32, 2048


def _ids(rng: np.random.Generator, n: int, start: int) -> list[int]:
    """`n` increasing file ids from `start` with gaps, like the real releases (one gap always)."""
    ids, nxt = [], start
    for i in range(n):
        if i == 1 or rng.random() < 0.08:
            nxt += int(rng.integers(1, 4))
        ids.append(nxt)
        nxt += 1
    return ids


def _save_png(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr).save(path, format="PNG", compress_level=6)


def _entry(filename: str, split: str, filepath: str, imgid: int, sentid: int, sents: list[str], flag: int | None):
    """One Karpathy-style `images[]` record; `flag=None` omits `changeflag` (as some SECOND-CC entries do)."""
    sentences = [
        {"raw": cap.raw_form(s), "tokens": s.split(), "imgid": imgid, "sentid": sentid + k} for k, s in enumerate(sents)
    ]
    rec = {"filename": filename, "filepath": filepath, "split": split, "imgid": imgid, "sentences": sentences,
           "sentids": [sentid + k for k in range(len(sents))]}
    if flag is not None:
        rec["changeflag"] = flag
    return rec


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ChangeAgentError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ChangeAgentError(f"output folder {out} is not empty; pass --overwrite to replace it")
        if not any((out / f).is_file() for f in CAPTION_FILE.values()):
            # --overwrite deletes the old folder: only ever do that to a dataset folder
            raise ChangeAgentError(
                f"refusing to overwrite {out}: it holds no {' or '.join(CAPTION_FILE.values())}, "
                "so it does not look like a dataset folder"
            )


def _validate(fmt: str, counts: dict[str, int], size: int, mask_variant: str, seed: int, difficulty: str) -> None:
    if fmt not in FORMATS:
        raise ChangeAgentError(f"unknown synthetic format {fmt!r}; expected one of {FORMATS}")
    if difficulty not in DIFFICULTIES:
        raise ChangeAgentError(f"unknown difficulty {difficulty!r}; expected one of {DIFFICULTIES}")
    if mask_variant not in MASK_VARIANTS:
        raise ChangeAgentError(f"unknown mask variant {mask_variant!r}; expected one of {MASK_VARIANTS}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ChangeAgentError(f"size must be between {MIN_SIZE} and {MAX_SIZE} px, got {size}")
    if seed < 0:
        raise ChangeAgentError(f"seed must be >= 0, got {seed}")
    if any(n < 0 for n in counts.values()) or sum(counts.values()) == 0:
        raise ChangeAgentError(f"pair counts must be >= 0 with at least one pair, got {counts}")


def _drawers(fmt: str, difficulty: str) -> tuple[Callable[..., scenes.Pair], Callable[..., list[str]]]:
    """(scene drawer(rng, size, change, split), caption writer(rng, events)) of a format and difficulty."""
    if difficulty == "hard":
        from changeagent.data.synth import hard, hard_captions, hard_second

        hard_draw = hard.levir_pair if fmt == "levir-mci" else hard_second.second_pair
        # label/caption disagreements only in the training split (SPEC §1.1: ~5 % of train pairs)
        return (lambda rng, size, change, split: hard_draw(rng, size, change, noisy=split == "train"),
                hard_captions.captions)
    draw = scenes.levir_pair if fmt == "levir-mci" else scenes.second_pair
    return (lambda rng, size, change, split: draw(rng, size, change)), cap.captions


def _write_pairs(fmt: str, root: Path, counts: dict[str, int], size: int, seed: int, variant: str,
                 progress: bool, difficulty: str = "default") -> tuple[list[dict], dict[str, int]]:
    """Render and save every pair under `root`; return the JSON records and change pairs per split."""
    fcode = FORMATS.index(fmt)
    draw, write_captions = _drawers(fmt, difficulty)
    records: list[dict] = []
    changed = dict.fromkeys(SPLITS, 0)
    imgid = sentid = 0
    next_second_id = 1
    bar = tqdm(total=sum(counts.values()), desc=f"synth {fmt}", unit="pair", disable=None if progress else True)
    for scode, split in enumerate(SPLITS):
        n = counts[split]
        srng = np.random.default_rng([seed, fcode, scode])
        flags = np.zeros(n, bool)
        flags[: int(round(n * 0.5))] = True
        srng.shuffle(flags)
        if fmt == "levir-mci":
            names = [f"{split}_{i:06d}.png" for i in _ids(srng, n, 1)]
            dirs = [root / "images" / split / d for d in ("A", "B", "label")]
        else:
            ids = _ids(srng, n, next_second_id)
            next_second_id = ids[-1] + 1 if ids else next_second_id
            names = [f"{i:05d}.png" for i in ids]
            dirs = [root / split / k / d for k in ("rgb", "sem") for d in ("A", "B")]
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(names):
            # the hard benchmark's pairs draw from their own streams (a 5th key), never the default's
            key = [seed, fcode, scode, i] + ([DIFFICULTIES.index(difficulty)] if difficulty != "default" else [])
            rng = np.random.default_rng(key)
            pair = draw(rng, size, bool(flags[i]), split)
            sents = write_captions(rng, pair.events)
            arrays: tuple[np.ndarray, ...]
            flag: int | None
            if fmt == "levir-mci":
                arrays = (pair.image_a, pair.image_b, LEVIR_LUT[variant][pair.label])
                split_name, flag = split, int(bool(pair.events))
            else:
                arrays = (pair.image_a, pair.image_b, SECOND_LUT[pair.sem_a], SECOND_LUT[pair.sem_b])
                # like the AUG release: a fifth of train is "restval", some entries lack changeflag
                split_name = "restval" if split == "train" and i % 5 == 1 else split
                flag = None if i % 7 == 3 else int(bool(pair.events))
            for d, arr in zip(dirs, arrays):
                _save_png(d / name, arr)
            records.append(_entry(name, split_name, split, imgid, sentid, sents, flag))
            changed[split] += int(bool(pair.events))
            imgid += 1
            sentid += len(sents)
            bar.update(1)
    bar.close()
    return records, changed


def generate_with_summary(
    format: str, out: str | Path, n_train: int, n_val: int, n_test: int, size: int = 256, seed: int = 0,
    mask_variant: str = "grey", overwrite: bool = False, progress: bool = False, difficulty: str = "default",
) -> dict:
    """Generate a synthetic dataset at `out`; return a summary (pairs and change pairs per split, seconds)."""
    t0 = time.perf_counter()
    counts = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    _validate(format, counts, size, mask_variant, int(seed), difficulty)
    out = Path(out).expanduser().absolute()
    _check_out(out, overwrite)
    with atomic_dir(out) as tmp:
        records, changed = _write_pairs(format, tmp, counts, size, seed, mask_variant, progress, difficulty)
        (tmp / CAPTION_FILE[format]).write_text(json.dumps({"images": records}), encoding="utf-8")
    total = sum(counts.values())
    words = {t for r in records for s in r["sentences"] for t in s["tokens"]}
    return {
        "format": format, "out": str(out), "size": size, "seed": seed, "difficulty": difficulty,
        "mask_variant": mask_variant if format == "levir-mci" else None,
        "pairs": counts, "change_pairs": changed, "total_pairs": total,
        "change_fraction": sum(changed.values()) / total, "distinct_words": len(words),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def generate(
    format: str, out: str | Path, n_train: int, n_val: int, n_test: int, size: int = 256, seed: int = 0,
    mask_variant: str = "grey", overwrite: bool = False, progress: bool = False, difficulty: str = "default",
) -> Path:
    """Generate a synthetic LEVIR-MCI or SECOND-CC dataset in its real layout; return its folder.

    format: "levir-mci" or "second-cc"; size: tile side in px (32..2048); mask_variant: LEVIR label
    encoding, "grey" (3-channel 0/128/255) or "colour" (black/yellow/red); difficulty: "default" (the
    demo's benchmark) or "hard" (docs/synthetic.md). Deterministic from `seed`.
    """
    summary = generate_with_summary(format, out, n_train, n_val, n_test, size, seed, mask_variant, overwrite, progress,
                                    difficulty)
    return Path(summary["out"])
