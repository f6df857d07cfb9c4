"""`changeagent score`: predicted masks against label images, per file and pooled, no dataset folder.

    PRED/   a `changeagent predict` output folder (its `<stem>.json` records name each mask and the
            head), or a folder of mask images `<stem>_mask.png|tif` / `<stem>.png|tif` holding class ids
    LABELS/ one label image per pair, `<stem>.<ext>`, in the dataset's published encoding

Labels are decoded as the dataset readers decode them: binary change (`levir_cd`, `whu_cd`,
`dsifn_cd`, the default) 0/255 or 0/1; `levir_mci` grey 0/128/255 or the colour encoding; `custom`
with the classes of a `classes.yaml`. Predicted pixels of value 255 (nodata) are left out. Each
file gets the scores of its own confusion matrix and the pooled scores come from the summed matrix
(the change-detection papers' protocol): precision, recall, F1 and IoU of the change class and OA for
binary masks; MIoU, per-class IoU and the change scores for class masks (`segmentation_scores`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from changeagent.data.constants import IGNORE_INDEX
from changeagent.errors import ChangeAgentError
from changeagent.metrics.segmentation import binary_scores, segmentation_scores

LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".bmp")  # jpg: lossy, but some releases ship it
MASK_SUFFIXES = (".png", ".tif", ".tiff")
CLASS_FORMATS = ("levir_mci", "custom")


def read_class_map(path: Path) -> np.ndarray:
    """A predicted mask as stored by `predict`: uint8 class ids [H, W] (palette PNG indices or a
    one-band GeoTIFF), 255 = nodata."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        try:
            with rasterio.open(path) as src:
                return src.read(1)
        except rasterio.errors.RasterioIOError as e:
            raise ChangeAgentError(f"cannot read mask {path}: {e}") from None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "1"):
                raise ChangeAgentError(f"mask {path} has PIL mode {im.mode!r}; expected class ids "
                                       "(a palette or grey PNG, as `changeagent predict` writes)")
            return np.asarray(im.convert("L") if im.mode == "1" else im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise ChangeAgentError(f"cannot read mask {path}: {e}") from None


def label_decoder(fmt: str, classes: Path | None) -> tuple[Callable[[Path], np.ndarray], tuple[str, ...]]:
    """(label file -> int64 class ids [H, W], class names) for a dataset format."""
    from changeagent.data.images import read_label
    from changeagent.data.registry import get_spec

    spec = get_spec(fmt)
    if fmt == "custom":
        if classes is None:
            raise ChangeAgentError("--format custom needs --classes DIR (the folder with its classes.yaml)")
        from changeagent.data.custom import decode_custom_label, read_classes

        names, _, table, colour = read_classes(classes)
        return (lambda p: decode_custom_label(read_label(p), table, colour, p)), names
    if classes is not None:
        raise ChangeAgentError("--classes is only used with --format custom")
    if fmt == "levir_mci":
        from changeagent.data.labels import decode_levir_mask

        return (lambda p: decode_levir_mask(read_label(p), p)), spec.classes
    if spec.decoding != "binary":
        raise ChangeAgentError(f"--format {fmt}: its labels are land-cover maps of two dates; score them with "
                               "`changeagent eval` on the dataset folder")
    from changeagent.data.binary_cd import decode_binary_label

    return (lambda p: decode_binary_label(read_label(p), p)), ("no_change", "change")


def find_pairs(pred: Path, labels: Path) -> tuple[list[tuple[str, Path, Path]], str | None, list[str]]:
    """(stem, predicted mask, label) of every label, the head named by the predict records (if any),
    and the stems of predictions without a label; a label without a prediction is an error."""
    for d, flag in ((pred, "--pred"), (labels, "--labels")):
        if not d.is_dir():
            raise ChangeAgentError(f"{flag} {d} is not a folder")
    label_files = sorted(p for p in labels.iterdir() if p.is_file() and p.suffix.lower() in LABEL_SUFFIXES)
    if not label_files:
        raise ChangeAgentError(f"--labels {labels} holds no label images ({', '.join(LABEL_SUFFIXES)})")
    heads, out, missing = set(), [], []
    for lab in label_files:
        mask = None
        record = pred / f"{lab.stem}.json"
        if record.is_file():
            try:
                rec = json.loads(record.read_text())
                mask, head = Path(rec["mask"]), rec.get("head")
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ChangeAgentError(f"cannot read the predict record {record}: {e}") from None
            if not mask.is_absolute():
                mask = pred / mask
            heads.add(head)
        else:
            mask = next((pred / f"{lab.stem}{tail}{s}" for tail in ("_mask", "") for s in MASK_SUFFIXES
                         if (pred / f"{lab.stem}{tail}{s}").is_file()), None)
        if mask is None or not mask.is_file():
            missing.append(lab.name)
            continue
        out.append((lab.stem, mask, lab))
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ChangeAgentError(f"no prediction in {pred} for the label(s) {', '.join(missing[:5])}{more} "
                               "(expected <stem>.json records, <stem>_mask.png|tif or <stem>.png|tif)")
    if len(heads - {None}) > 1:
        raise ChangeAgentError(f"{pred}: its records come from different heads {sorted(heads - {None})}")
    stems = {s for s, _, _ in out}
    extra = sorted(p.stem for p in pred.glob("*.json") if p.stem not in stems and not p.name.startswith(".")
                   and p.name != "summary.json")
    return out, next(iter(heads - {None}), None), extra


def _confusion(pred: np.ndarray, target: np.ndarray, k: int, where: str) -> np.ndarray:
    keep = pred != IGNORE_INDEX
    p, t = pred[keep].astype(np.int64), target[keep]
    if p.size and int(p.max()) >= k:
        raise ChangeAgentError(f"{where} holds class id {int(p.max())}, but the labels have {k} classes "
                               f"(ids 0..{k - 1}); is --format right?")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def _scores(cm: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    scores = segmentation_scores(torch.from_numpy(cm), names)
    out = binary_scores(scores) if len(names) == 2 else scores
    return _finite(out)


def _finite(x: Any) -> Any:
    """NaN (an undefined ratio) -> None, so the JSON says null."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def score_folder(pred: str | Path, labels: str | Path, fmt: str | None = None,
                 classes: str | Path | None = None) -> dict[str, Any]:
    """Scores of every predicted mask in `pred` against its label in `labels` (see the module doc)."""
    from changeagent.data.registry import get_spec

    pairs, head, extra = find_pairs(Path(pred), Path(labels))
    if fmt is None:
        fmt = head if head in CLASS_FORMATS else "levir_cd"
        if head is not None and head not in CLASS_FORMATS and get_spec(head).decoding != "binary":
            fmt = head  # label_decoder says why it cannot
    decode, names = label_decoder(fmt, Path(classes) if classes is not None else None)
    k = len(names)
    total = np.zeros((k, k), np.int64)
    files = []
    for stem, mask_path, label_path in pairs:
        mask, target = read_class_map(mask_path), decode(label_path)
        if mask.shape != target.shape:
            raise ChangeAgentError(f"{mask_path} is {mask.shape[1]}x{mask.shape[0]} but its label {label_path} "
                                   f"is {target.shape[1]}x{target.shape[0]}")
        cm = _confusion(mask, target, k, str(mask_path))
        total += cm
        files.append({"name": stem, "mask": str(mask_path.absolute()), "label": str(label_path.absolute()),
                      "pixels": int(cm.sum()), **_scores(cm, names)})
    return {"format": fmt, "classes": list(names), "head": head, "files": len(files),
            "pixels": int(total.sum()), "pooled": _scores(total, names), "per_file": files,
            "confusion_matrix": total.tolist(), "predictions_without_label": extra}
