"""Users' own data (SPEC §1.8), no code to write::

    <root>/classes.yaml                 class names with label colours or grey ids (first = no change)
    <root>/A/<name>.png  <root>/B/<name>.png
    <root>/label/<name>.png             optional: change labels in the colours/ids of classes.yaml
    <root>/captions.json                optional: Karpathy-style captions (filename, split, sentences)
    <root>/list/{train,val,test}.txt    split lists (one file name per line); without them the
                                        splits come from captions.json

classes.yaml::

    classes:
      - {name: no_change, colour: [0, 0, 0]}      # or {name: no_change, id: 0}
      - {name: building, colour: [255, 0, 0]}     # two classes: binary change detection
      - {name: road, colour: [255, 255, 0]}       # more: a semantic change head with these classes

`changeagent data check ROOT --format custom` lists every problem at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import Dataset

from changeagent.data.constants import CANONICAL_NO_CHANGE, NO_CHANGE_SENTENCES
from changeagent.data.images import check_same_size, read_image, read_label
from changeagent.data.levir_mci import binary_change
from changeagent.data.spec import DatasetSpec
from changeagent.data.synth.layouts import Pair, karpathy_json, relayout, save_png
from changeagent.data.vocab import SPLITS, PairInfo, Vocabulary, read_karpathy
from changeagent.errors import ChangeAgentError

CLASSES_FILE, CAPTIONS_FILE = "classes.yaml", "captions.json"


def read_classes(root: Path) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...], dict[Any, int], bool]:
    """classes.yaml -> (names, palette, {label value or colour: class id}, is_colour)."""
    path = root / CLASSES_FILE
    if not path.is_file():
        raise ChangeAgentError(f"custom dataset {root}: {CLASSES_FILE} is missing (see docs/data.md, custom layout)")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ChangeAgentError(f"cannot read {path}: {err}") from None
    entries = doc.get("classes") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or len(entries) < 2:
        raise ChangeAgentError(f"{path}: needs `classes:`, a list of at least 2 entries (first = no change)")
    names, palette, table, kinds = [], [], {}, set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not (("colour" in e) ^ ("id" in e)):
            raise ChangeAgentError(f"{path}: class {i} must be {{name: str, colour: [r, g, b]}} or {{name: str, id: int}}")
        if "colour" in e:
            c = e["colour"]
            if not (isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)):
                raise ChangeAgentError(f"{path}: class {e['name']!r}: colour must be [r, g, b] in 0..255, got {c!r}")
            key: Any = tuple(c)
            kinds.add("colour")
            palette.append(tuple(c))
        else:
            key = e["id"]
            if not isinstance(key, int) or not 0 <= key <= 255:
                raise ChangeAgentError(f"{path}: class {e['name']!r}: id must be an integer 0..255, got {key!r}")
            kinds.add("id")
            palette.append((0, 0, 0) if i == 0 else tuple(int(v) for v in np.random.default_rng(i).integers(64, 256, 3)))
        if key in table:
            raise ChangeAgentError(f"{path}: class {e['name']!r} repeats the label value {key!r}")
        names.append(e["name"])
        table[key] = i
    if len(kinds) > 1:
        raise ChangeAgentError(f"{path}: give every class a colour or every class an id, not a mix")
    if len(set(names)) != len(names):
        raise ChangeAgentError(f"{path}: class names repeat: {names}")
    return tuple(names), tuple(palette), table, kinds == {"colour"}  # type: ignore[return-value]


def decode_custom_label(label: np.ndarray, table: dict[Any, int], colour: bool, path: Path) -> np.ndarray:
    """Label image -> int64 [H, W] class ids; a value/colour not in classes.yaml is an error naming it."""
    if colour:
        if label.ndim != 3 or label.shape[2] < 3:
            raise ChangeAgentError(f"label {path} is single-channel, but classes.yaml gives colours")
        codes = (label[..., 0].astype(np.int32) << 16) | (label[..., 1].astype(np.int32) << 8) | label[..., 2]
        lut = {(r << 16) | (g << 8) | b: v for (r, g, b), v in table.items()}
    else:
        if label.ndim == 3:
            raise ChangeAgentError(f"label {path} is a colour image, but classes.yaml gives grey ids")
        codes, lut = label.astype(np.int32), dict(table)
    out = np.zeros(codes.shape, np.int64)
    for u in np.unique(codes).tolist():
        if u not in lut:
            shown = f"colour {((u >> 16) & 255, (u >> 8) & 255, u & 255)}" if colour else f"value {u}"
            raise ChangeAgentError(f"label {path} has {shown}, which classes.yaml does not list")
        out[codes == u] = lut[u]
    return out


def split_names(root: Path, split: str, pairs: dict[str, PairInfo]) -> list[str]:
    lst = root / "list" / f"{split}.txt"
    if (root / "list").is_dir():
        if not lst.is_file():
            raise ChangeAgentError(f"split list {lst} does not exist")
        names = [ln.strip() for ln in lst.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return [n if Path(n).suffix else f"{n}.png" for n in names]  # a bare stem means <stem>.png
    if pairs:
        return [n for n, p in pairs.items() if p.split == split]
    raise ChangeAgentError(f"custom dataset {root}: no list/{split}.txt and no {CAPTIONS_FILE} to take splits from")


class Custom(Dataset):
    """A split of a custom folder; targets depend on what the folder holds (label/, captions.json)."""

    dataset_id = "custom"

    def __init__(self, root: str | Path, split: str = "train", vocab: Vocabulary | None = None, max_len: int = 41,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 transforms: Any = None, canonical_no_change: bool = False, captions_file: str | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ChangeAgentError(f"dataset root {self.root} does not exist or is not a folder")
        if split not in SPLITS:
            raise ChangeAgentError(f"split must be one of {SPLITS}, got {split!r}")
        self.classes, self.palette, self.table, self.colour = read_classes(self.root)
        cap = self.root / (captions_file or CAPTIONS_FILE)
        self.pairs = {p.name: p for p in read_karpathy(cap)} if cap.is_file() else {}
        if captions_file and not self.pairs:
            raise ChangeAgentError(f"caption file {cap} does not exist or lists no pairs")
        self.split, self.names = split, split_names(self.root, split, self.pairs)
        if not self.names:
            raise ChangeAgentError(f"custom dataset {self.root} has no {split} pairs")
        self.has_label = (self.root / "label").is_dir()
        for folder in ("A", "B"):
            if not (self.root / folder).is_dir():
                raise ChangeAgentError(f"custom dataset {self.root}: folder {folder}/ is missing")
        if self.pairs:
            missing = [n for n in self.names if n not in self.pairs]
            if missing:
                raise ChangeAgentError(f"{cap} has no captions for {len(missing)} {split} pair(s), e.g. {missing[0]}")
        self.vocab, self.max_len, self.transforms = vocab, max_len, transforms
        self.canonical_no_change = canonical_no_change
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    def __len__(self) -> int:
        return len(self.names)

    def files(self, index: int) -> dict[str, Path]:
        keys = ("A", "B", "label") if self.has_label else ("A", "B")
        return {k: self.root / k / self.names[index] for k in keys}

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        f = self.files(index)
        arrays = {k: (read_label(p) if k == "label" else read_image(p)) for k, p in f.items()}
        check_same_size(arrays, f)
        label = decode_custom_label(arrays["label"], self.table, self.colour, f["label"]) if self.has_label else None
        return arrays["A"], arrays["B"], label

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.names[index]
        a, b, label = self.load_raw(index)
        info = self.pairs.get(name)
        captions = list(info.captions) if info is not None else []
        if captions and self.canonical_no_change and CANONICAL_NO_CHANGE in captions:
            captions = [CANONICAL_NO_CHANGE] * len(captions)
        if label is not None:
            flag = int((label > 0).any())
        elif info is not None and info.changeflag is not None:
            flag = info.changeflag
        else:
            flag = int(not all(c in NO_CHANGE_SENTENCES for c in captions))
        masks = {"mask": label} if label is not None else {}
        if self.transforms is not None:
            out = self.transforms({"image_a": a, "image_b": b, "masks": masks, "captions": captions})
            a, b, captions = out["image_a"], out["image_b"], list(out["captions"])
            masks = {k: np.asarray(out["masks"][k], np.int64) for k in masks}
        img = np.stack([a, b]).transpose(0, 3, 1, 2).astype(np.float32)
        img = (img / 255.0 - self.mean.reshape(1, -1, 1, 1)) / self.std.reshape(1, -1, 1, 1)
        sample: dict[str, Any] = {"image": torch.from_numpy(img.astype(np.float32)), "dataset": self.dataset_id,
                                  "name": name, "changeflag": flag}
        if "mask" in masks:
            mask = np.ascontiguousarray(masks["mask"])
            sample["change"] = binary_change(mask)
            if len(self.classes) > 2:
                sample["mask"] = torch.from_numpy(mask)
        if captions:
            sample["captions"] = captions
            if self.vocab is not None:
                sample["caption_ids"] = torch.tensor([self.vocab.encode(c.split(), self.max_len) for c in captions],
                                                     dtype=torch.int64)
        return sample


def bind(spec: DatasetSpec, root: Path) -> DatasetSpec:
    """The custom spec of the folder at `root`: its classes, and the targets its files supply."""
    classes, palette, _, _ = read_classes(root)
    out = spec.with_classes(classes, palette)
    targets = list(out.targets)
    if not (root / "label").is_dir():
        targets = [t for t in targets if t not in ("change", "mask")]
        out = replace(out, dates=0, metrics=())
    if (root / CAPTIONS_FILE).is_file():
        targets.append("captions")
    if not targets:
        raise ChangeAgentError(f"custom dataset {root} has neither label/ nor {CAPTIONS_FILE}: nothing to learn")
    return replace(out, targets=tuple(dict.fromkeys(targets)), captions_file=CAPTIONS_FILE)


def _write(root: Path, pairs: list[Pair]) -> None:
    """Synthetic LEVIR pairs as a custom folder with 3 colour classes, captions and split lists."""
    colours = np.asarray([(0, 0, 0), (255, 255, 0), (255, 0, 0)], np.uint8)
    lists: dict[str, list[str]] = {s: [] for s in SPLITS}
    for p in pairs:
        save_png(root / "A" / p["name"], p["a"])
        save_png(root / "B" / p["name"], p["b"])
        save_png(root / "label" / p["name"], colours[p["label"]])
        lists[p["split"]].append(p["name"])
    (root / "list").mkdir()
    for split, names in lists.items():
        (root / "list" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    (root / CAPTIONS_FILE).write_text(karpathy_json(pairs), encoding="utf-8")
    (root / CLASSES_FILE).write_text(
        "classes:\n  - {name: no_change, colour: [0, 0, 0]}\n  - {name: road, colour: [255, 255, 0]}\n"
        "  - {name: building, colour: [255, 0, 0]}\n", encoding="utf-8")


def _synth(out: Path, n_train: int, n_val: int, n_test: int, size: int, seed: int, overwrite: bool = False,
           progress: bool = True, difficulty: str = "default", **_: Any) -> dict[str, Any]:
    return relayout("levir-mci", out, _write, n_train, n_val, n_test, size, seed, overwrite, progress, difficulty=difficulty)


SPEC = DatasetSpec(
    id="custom",
    title="custom folder",
    reader=Custom,
    targets=("change",),
    classes=("no_change", "change"),
    palette=((0, 0, 0), (255, 255, 255)),
    dates=0,
    metrics=("binary",),
    captions_file=CAPTIONS_FILE,
    layout="classes.yaml + A/ B/ [label/] [captions.json] [list/{train,val,test}.txt]",
    synth=_synth,
    bind=bind,
)
