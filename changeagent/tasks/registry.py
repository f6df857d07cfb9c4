"""The task registry: task name -> the module that defines its `SPEC` (one file per task).

Adding a task = one file with a `SPEC` (docs/design.md, "Adding a task") + one line here, and its
head: a module in models/ + its line in `changeagent/models/heads.py`. Modules are imported on first
use, so listing the names (config choices) is cheap.
"""

from __future__ import annotations

import importlib

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
