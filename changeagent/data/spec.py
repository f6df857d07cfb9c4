"""`DatasetSpec`: everything that makes one dataset different from another, in one object.

Each dataset file (`changeagent/data/<id>.py`) defines one `SPEC`; `changeagent.data.registry` maps
dataset ids to those files. Models, losses, metrics, the engine and inference read these fields
instead of testing dataset names:

- `targets` says which batch keys an item supplies: `change` (binary change map), `mask` (one class
  map, `classes` ids), `sem` (one land-cover map per date, class 0 = unchanged, labelled on changed
  pixels only), `captions`, `questions` (one item per question: `question`, `question_type`, `answer`,
  `answer_id`; changeagent/data/qa/reader.py), `answer_masks` (`answer_mask`, the answer's region).
  A loss uses only the items that have its target.
- `dates` is the number of semantic maps its head predicts: 0 (no semantic head: binary change
  only, or captions only), 1 (`mask`), 2 (`sem`). With `classes` it fixes the head's shape and how
  predictions are decoded (`decoding`).
- `metrics` names the metric families the evaluator computes for it (captions are added when the
  dataset supplies captions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from changeagent.typed import fail, opt

RGB = tuple[int, int, int]
TARGETS = ("change", "mask", "sem", "captions", "questions", "answer_masks")
METRICS = ("binary", "segmentation", "scd")  # binary change (P/R/F1/IoU/OA), class maps (MIoU), SECOND SCD
CHANGE_PALETTE: tuple[RGB, ...] = ((0, 0, 0), (255, 255, 255))


@dataclass
class DatasetCfg:
    """Config section `data.<id>` shared by every dataset (a spec may name a subclass with more keys)."""

    root: str | None = opt(None, "folder in the published layout (required unless synthetic)")
    synthetic: bool = opt(False, "use the generated synthetic benchmark (data.synth) instead of root")
    weight: float = opt(1.0, "mixing weight in the joint sampler (shares of each epoch)", gt=0)
    train_split: str = opt("train", "split used for training")
    val_split: str = opt("val", "split used for validation")
    captions_file: str | None = opt(None, "caption JSON relative to root (null: the published name)")
    mean: list[float] | None = opt(None, "normalisation mean per band, fraction of 255 (null: the dataset's own "
                                   "statistics, its spec's `mean`; filled in when the config is validated)")
    std: list[float] | None = opt(None, "normalisation std per band (null: the dataset's own, its spec's `std`)",
                                  gt=0)

    def validate(self, key: str) -> None:
        if self.synthetic and self.root:
            fail(f"{key}.synthetic", f"is true but {key}.root={self.root} is set too; choose one")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            fail(f"{key}.std", f"has {len(self.std)} values but {key}.mean has {len(self.mean)}")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: id, layout reader, classes, palette, targets, statistics, metrics, config, synth.

    reader: `reader(root, split=..., vocab=..., max_len=..., mean=..., std=..., transforms=...,
        canonical_no_change=..., **options)` -> a map-style dataset of docs/design.md samples;
        `options` are the extra keys of its config section (`config`).
    classes: class names of its semantic maps (index = class id); `("no_change", "change")` for a
        binary change dataset, () for captions only.
    palette: RGB per class id, used for label files, prediction PNGs and dashboards.
    synth: `synth(out, n_train, n_val, n_test, size, seed, overwrite, progress, difficulty)` writes the
        synthetic benchmark in this layout (None: no synthetic form).
    bind: for layouts whose classes live in the data folder (custom): `bind(spec, root)` -> the spec
        with those classes filled in.
    """

    id: str
    title: str
    reader: Callable[..., Any]
    targets: tuple[str, ...]
    classes: tuple[str, ...] = ()
    palette: tuple[RGB, ...] = ()
    dates: int = 0
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # ImageNet unless the dataset publishes its own
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    metrics: tuple[str, ...] = ()
    splits: tuple[str, ...] = ("train", "val", "test")
    captions_file: str | None = None  # the published caption JSON name, when it has captions
    layout: str = ""  # one-line description for docs and error messages
    config: type = DatasetCfg
    synth: Callable[..., Any] | None = None
    bind: Callable[[DatasetSpec, Path], DatasetSpec] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        bad = [t for t in self.targets if t not in TARGETS]
        if bad or not self.targets:
            raise ValueError(f"dataset {self.id}: targets {self.targets} must be from {TARGETS}")
        if self.dates not in (0, 1, 2):
            raise ValueError(f"dataset {self.id}: dates must be 0, 1 or 2")
        if [m for m in self.metrics if m not in METRICS]:
            raise ValueError(f"dataset {self.id}: metrics {self.metrics} must be from {METRICS}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def has_captions(self) -> bool:
        return "captions" in self.targets

    @property
    def has_mask(self) -> bool:
        """True when the dataset supervises change (binary or semantic)."""
        return "change" in self.targets

    @property
    def head(self) -> tuple[int, int] | None:
        """(maps, classes) of its semantic head, None when it has none (binary change, captions)."""
        return (self.dates, self.num_classes) if self.dates else None

    @property
    def decoding(self) -> str:
        """How predictions are decoded: `classes` (argmax of the head), `semantic_pair` (change-gated
        land cover of both dates), `binary` (the shared change head)."""
        return {0: "binary", 1: "classes", 2: "semantic_pair"}[self.dates]

    def with_classes(self, classes: tuple[str, ...], palette: tuple[RGB, ...]) -> DatasetSpec:
        """This spec with other classes (a custom folder's classes.yaml)."""
        binary = len(classes) <= 2
        targets = tuple(t for t in self.targets if t != "mask") if binary else \
            tuple(dict.fromkeys([*self.targets, "mask"]))
        return replace(self, classes=classes, palette=palette, dates=0 if binary else 1, targets=targets,
                       metrics=("binary",) if binary else ("segmentation",))

    @property
    def norm(self) -> dict[str, list[float]]:
        """{"mean": [...], "std": [...]}: its normalisation statistics (fractions of 255, per band)."""
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts saved with a trained model (inference decodes and colours from these)."""
        return {"classes": list(self.classes), "palette": [list(c) for c in self.palette],
                "dates": self.dates, "targets": list(self.targets)}
