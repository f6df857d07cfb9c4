"""Tasks as specs: one `TaskSpec` per task (`changeagent/tasks/<name>.py`), one dict registry.

A task's head (its nn.Module) lives in models/ (`changeagent/models/heads.py`); its spec says how
it is trained, scored and predicted (docs/design.md, "Tasks"). This layer sits above losses and
metrics and below the engine and inference, which iterate the registry and never name a task.
"""

from __future__ import annotations

from changeagent.lazy import lazy_getattr

_LAZY = {
    **{n: "changeagent.tasks.spec" for n in ("EvalContext", "StepKey", "TaskContext", "TaskMetric", "TaskSpec",
                                             "TaskTable", "VisMask", "VisText")},
    **{n: "changeagent.tasks.registry" for n in ("REGISTRY", "get_task", "get_tasks", "task_ids")},
    "compute_losses": "changeagent.tasks.losses",
    **{n: "changeagent.tasks.config" for n in ("loss_config", "loss_config_class")},
    **{n: "changeagent.tasks.data" for n in ("TaskTargets", "collate_for")},
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_getattr(__name__, _LAZY, globals())
