"""`TaskSpec`: everything that makes one task different from another, in one object (docs/design.md, "Tasks").

A task is a head of the model (its `nn.Module` lives in models/, listed in `models/heads.py`) plus
this spec, which says how the head is trained, scored and used for predictions: the targets it
derives from a raw sample, how its batch keys collate, the model inputs it gives the head at a
training step and at evaluation, its loss, its metric accumulator with the keys it adds to
`metrics.json[<dataset>]` and the eval table, the fields it adds to a `predict` record, and which
datasets it applies to. Each task file (`changeagent/tasks/<name>.py`) defines `SPEC`, an instance
of a `TaskSpec` subclass; `changeagent.tasks.registry` maps task names to those files. The engine,
the losses' sum, the weighting, the wandb logger, the eval table and the predictor iterate the
registry and never test a task's name.

The hooks and the objects they see:

    spec.enabled_for(dataset: DatasetSpec) -> bool          # items of this dataset carry its target
    spec.own_part(dataset) -> str | None                    # a part trained on that dataset its head needs
    spec.derive(sample, rng, ctx: TaskContext) -> dict      # keys it adds to a raw sample (numpy/tensors)
    spec.collate_pad: {key: pad value}                      # variable-shape keys it adds, padded per batch
    spec.train_inputs(batch, key: StepKey, ctx) -> dict     # model inputs of a training step
    spec.loss(out, batch, inputs, cfg) -> {name: scalar, "name/part": scalar}
    spec.eval_inputs(batch, ctx) -> dict                    # model inputs at evaluation
    spec.metric(ctx: EvalContext) -> TaskMetric | None      # update(pred, batch) per batch, compute() at the end
    spec.visual(pred, batch, i, ctx) -> dict                # fields of one wandb record
    spec.predict_inputs(user, batch, ctx) -> dict           # model inputs of `predict` from the user's
    spec.dense(pred, dataset) / dense_channels(dataset)     # per-pixel logits `predict` blends over windows
    spec.window(pred, i, ctx) -> dict                       # fields it adds to a `predict` record
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor

from changeagent.data.spec import DatasetSpec


@dataclass(frozen=True)
class StepKey:
    """One micro-step of one rank: seeds a task's per-step draws (e.g. which caption of an item is
    trained on) off the global RNG, so they are reproducible and survive a resume."""

    seed: int
    step: int
    micro: int
    rank: int

    def generator(self, tag: str = "") -> torch.Generator:
        """A torch generator keyed on (tag, seed, step, micro, rank)."""
        text = f"{self.seed}/{self.step}/{self.micro}/{self.rank}"
        key = hashlib.blake2b((f"{tag}/{text}" if tag else text).encode(), digest_size=8).digest()
        return torch.Generator().manual_seed(int.from_bytes(key, "little") & (2**63 - 1))


@dataclass(frozen=True)
class TaskContext:
    """What a task's data and input hooks see: the run's vocabulary and caption length, whether the
    data is for training, and (in `derive`) the spec of the item's dataset."""

    vocab: Any = None
    max_len: int = 41
    train: bool = True
    dataset: DatasetSpec | None = None


class Sync(Protocol):
    """Collectives of an evaluation (one process: identities). Every rank calls them in the same order."""

    is_main: bool

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""


@dataclass
class EvalContext:
    """What a task's metric sees for one dataset.

    options: the evaluation options (`engine.evaluator.EvalOptions`: decoding, meteor, caption
    level, ...); predictions_dir: this dataset's folder for prediction files (None: write none).
    """

    dataset: DatasetSpec
    vocab: Any
    options: Any
    device: torch.device
    sync: Sync
    predictions_dir: Path | None = None


class TaskMetric(Protocol):
    """A task's accumulator over one dataset; exact under DDP: summed states (torchmetrics) or items
    gathered to rank 0 with `EvalContext.sync`."""

    def update(self, pred: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        """One batch: `pred` is `model.predict`'s dict (every head's outputs), `batch` the collated batch."""

    def compute(self) -> dict[str, Any]:
        """Called on every rank once; the keys it adds to `metrics.json[<dataset>]` (rank 0's count)."""


@dataclass(frozen=True)
class TaskTable:
    """A table of the eval print-out beside the main one: a row per (dataset, row key) whose value in
    the dataset's metrics is a dict of `columns`. Tasks that give the same title share the table."""

    title: str
    columns: tuple[tuple[str, str], ...]  # (key in the row's dict, header)
    rows: tuple[tuple[str, str], ...]  # (metrics key, row label)
    count: tuple[str, str] | None = None  # (key, header) of a count column


@dataclass
class VisMask:
    """A class map in a visual record (wandb: an overlay on image B and a table image), int [H, W]."""

    mask: np.ndarray
    role: str  # "prediction" | "ground_truth"


@dataclass
class VisText:
    """A text in a visual record (wandb: a table cell; predictions also caption the overlay)."""

    text: str
    role: str = "prediction"  # "prediction" | "reference"


class TaskSpec:
    """One task. Subclass it, set the class attributes, override the hooks it needs, and make one
    instance the `SPEC` of its file (docs/design.md, "Adding a task").

    name: the registry id, the name of its head in models/heads.py, its key for the weighting
    strategies (`loss/<name>`, `weight/<name>` in the logs, wandb) and of its `loss.<name>` section.
    targets: what a dataset must supply for it, in words (error messages); loss_config: dataclass of
    `loss.<name>` (None: no options); collate_pad: keys its `derive` adds whose arrays vary in shape
    between items, with their pad value (the batch holds them padded to the largest); columns:
    (metrics key, header) of the main eval table; tables: extra tables (`TaskTable`).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    targets: ClassVar[str] = ""
    loss_config: ClassVar[type | None] = None
    collate_pad: ClassVar[Mapping[str, int]] = {}
    columns: ClassVar[tuple[tuple[str, str], ...]] = ()
    tables: ClassVar[tuple[TaskTable, ...]] = ()
    shared_part: ClassVar[str] = ""  # what serves a dataset the model was not trained on ("": nothing)

    # -- data ------------------------------------------------------------------------------------
    def enabled_for(self, dataset: DatasetSpec) -> bool:
        """Whether items of `dataset` carry this task's target (directly or through `derive`)."""
        return True

    def own_part(self, dataset: DatasetSpec) -> str | None:
        """The part its head needs trained on `dataset` itself (e.g. "a semantic head"), or None when
        `shared_part` serves it: a model not trained on `dataset` can score it only through tasks
        that return None. The default is conservative: heads that read the token memory see the
        dataset's own token."""
        return f"a {self.name} head trained on it"

    def derive(self, sample: dict[str, Any], rng: np.random.Generator, ctx: TaskContext) -> dict[str, Any]:
        """Targets derived from a raw sample (its keys: docs/design.md "Samples"), before collate.

        Runs in the data pipeline (DataLoader workers) for the items of datasets it is enabled for;
        `rng` is seeded by (run seed, epoch, item, task) when training and (item, task) for
        evaluation, so draws are reproducible and independent of workers and order.
        """
        return {}

    # -- training --------------------------------------------------------------------------------
    def train_inputs(self, batch: Mapping[str, Any], key: StepKey, ctx: TaskContext) -> dict[str, Tensor]:
        """The model inputs its head reads in a training step (the batch is on the device)."""
        return {}

    def loss(self, out: Mapping[str, Any], batch: Mapping[str, Any], inputs: Mapping[str, Tensor],
             cfg: Any) -> dict[str, Tensor]:
        """{name: float32 scalar} (and "<name>/<part>" scalars for the logs); {} when `out` lacks its
        head's outputs. `cfg` is its typed `loss.<name>` section (None without `loss_config`)."""
        return {}

    # -- evaluation ------------------------------------------------------------------------------
    def eval_inputs(self, batch: Mapping[str, Any], ctx: TaskContext) -> dict[str, Tensor]:
        """The model inputs its head reads at evaluation (`model.predict(inputs=...)`)."""
        return {}

    def metric(self, ctx: EvalContext) -> TaskMetric | None:
        """Its accumulator for one dataset (None: it reports nothing there)."""
        return None

    def visual(self, pred: Mapping[str, Any], batch: Mapping[str, Any], i: int, ctx: EvalContext) -> dict[str, Any]:
        """Fields of item i's visual record (wandb): column name -> `VisMask`, `VisText`, number or bool."""
        return {}

    def note(self, options: Any) -> str | None:
        """A remark for the eval table's header about how its numbers were computed (or None)."""
        return None

    # -- predict ---------------------------------------------------------------------------------
    def predict_inputs(self, user: Mapping[str, Any], batch: int, ctx: TaskContext) -> dict[str, Tensor]:
        """The model inputs of `predict` from what the user gave (`Predictor(inputs=...)`, e.g.
        {"question": "was a road built?"}), for a batch of `batch` windows; {} without them."""
        return {}

    def dense_channels(self, dataset: DatasetSpec) -> int:
        """Channels of its per-pixel logits (`dense`) for the head of `dataset`; 0: none."""
        return 0

    def dense(self, pred: Mapping[str, Any], dataset: DatasetSpec) -> Tensor | None:
        """float [B, dense_channels, h, w] logits that `predict` blends over overlapping windows."""
        return None

    def window(self, pred: Mapping[str, Any], i: int, ctx: TaskContext) -> dict[str, Any]:
        """Fields it adds to the `predict` record of item (window) i, e.g. {"caption": text}."""
        return {}
