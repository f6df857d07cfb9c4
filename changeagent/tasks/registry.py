"""The task registry: task name -> the module that defines its `SPEC` (one file per task).

Adding a task = one file with a `SPEC` (docs/design.md, "Adding a task") + one line here, and its
head: a module in models/ + its line in `changeagent/models/heads.py`. Modules are imported on first
use, so listing the names (config choices) is cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from changeagent.data.spec import DatasetSpec
from changeagent.errors import ChangeAgentError
from changeagent.tasks.spec import TaskSpec

REGISTRY: dict[str, str] = {
    "mask": "changeagent.tasks.mask",
    "caption": "changeagent.tasks.caption",
    "retrieval": "changeagent.tasks.retrieval",
    "qa": "changeagent.tasks.qa",
    "grounding": "changeagent.tasks.grounding",
}


def task_ids() -> list[str]:
    return list(REGISTRY)


def get_task(name: str) -> TaskSpec:
    """The spec of task `name`; an unknown name is an error listing the known ones."""
    if name not in REGISTRY:
        raise ChangeAgentError(f"unknown task {name!r}; known: {', '.join(REGISTRY)}")
    spec = importlib.import_module(REGISTRY[name]).SPEC
    assert isinstance(spec, TaskSpec) and spec.name == name, f"{REGISTRY[name]}.SPEC must be a TaskSpec named {name!r}"
    return spec


def get_tasks(names: list[str] | tuple[str, ...]) -> list[TaskSpec]:
    return [get_task(n) for n in names]


def shared_tasks(tasks: Sequence[str], dataset: DatasetSpec, heads: Sequence[str], where: str,
                 verb: str = "scored") -> tuple[list[str], str]:
    """The one rule for a dataset a model has no heads for (eval, predict): the model's `tasks` that
    serve `dataset` through shared parts (`TaskSpec.own_part` None, e.g. the shared change head of
    binary change masks), and the note saying so. An error naming the dataset and `heads` (the
    datasets the model has heads for) when a task the dataset supplies targets for needs a part
    trained on it (a semantic head, a caption token), or when no task serves it."""
    specs = get_tasks(list(tasks))
    needs = [f"{t.name}: {part}" for t in specs if t.enabled_for(dataset) and (part := t.own_part(dataset))]
    served = [t for t in specs if t.enabled_for(dataset) and t.own_part(dataset) is None and t.shared_part]
    if needs or not served:
        why = f"it needs {'; '.join(needs)}" if needs else f"none of its tasks ({', '.join(tasks)}) applies to it"
        raise ChangeAgentError(f"{where}: the model has no heads for {dataset.id} (it has heads for "
                               f"{list(heads)}) and {why}; fine-tune on it with train.init_from=<model folder>")
    parts = " and ".join(dict.fromkeys(t.shared_part for t in served))
    return [t.name for t in served], f"{dataset.id}: {verb} by {parts}; no semantic head for it"
