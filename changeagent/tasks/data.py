"""The tasks' part of the data pipeline: targets derived from each sample, and how their keys collate."""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from changeagent.data.joint import collate
from changeagent.data.spec import DatasetSpec
from changeagent.tasks.spec import TaskContext, TaskSpec


def _derives(spec: TaskSpec) -> bool:
    return type(spec).derive is not TaskSpec.derive


class TaskTargets(Dataset):
    """`base`'s items plus every task's derived targets (`TaskSpec.derive`), for the items of datasets
    the task is enabled for. Each task's draws come from a generator seeded by (run seed, epoch, item,
    task) when training and (item, task) for evaluation, so they do not depend on the worker count,
    the order, the other tasks or a resume. `epoch` is `base`'s (the engine's EpochSeeded)."""

    def __init__(self, base: Dataset, tasks: Sequence[TaskSpec], specs: Mapping[str, DatasetSpec], *, vocab: Any,
                 max_len: int, train: bool, seed: int = 0) -> None:
        self.base, self.specs, self.train, self.seed = base, dict(specs), train, seed
        self.tasks = [t for t in tasks if _derives(t)]
        self.vocab, self.max_len = vocab, max_len

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    @property
    def epoch(self) -> int:
        return int(getattr(self.base, "epoch", 0))

    @epoch.setter
    def epoch(self, value: int) -> None:  # the loader sets it each epoch: the wrapped EpochSeeded's too
        self.base.epoch = value  # type: ignore[attr-defined]

    def __getitem__(self, index: int) -> Any:
        sample = self.base[index]
        if not self.tasks:
            return sample
        dataset = self.specs.get(sample.get("dataset", ""))
        epoch = self.epoch
        for task in self.tasks:
            if dataset is None or not task.enabled_for(dataset):
                continue
            tag = zlib.crc32(task.name.encode())
            key = [self.seed, epoch, int(index), tag] if self.train else [int(index), tag]
            ctx = TaskContext(vocab=self.vocab, max_len=self.max_len, train=self.train, dataset=dataset)
            sample.update(task.derive(sample, np.random.default_rng(key), ctx))
        return sample


def collate_for(tasks: Sequence[TaskSpec]) -> Callable[[Sequence[dict[str, Any]]], dict[str, Any]]:
    """`data.joint.collate` with the tasks' variable-shape keys padded (`TaskSpec.collate_pad`)."""
    pad: dict[str, int] = {}
    for t in tasks:
        pad.update(t.collate_pad)
    return functools.partial(collate, pad=pad) if pad else collate
