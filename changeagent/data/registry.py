"""The dataset registry: dataset id -> the module that defines its `SPEC` (one file per dataset).

Adding a dataset = one file with a `SPEC` (see docs/design.md, "Adding a dataset") + one line here.
Modules are imported on first use, so listing the ids (argparse choices, config schemas) is cheap.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from changeagent.data.spec import DatasetSpec
from changeagent.errors import ChangeAgentError

REGISTRY: dict[str, str] = {
    "levir_mci": "changeagent.data.levir_mci",
    "second_cc": "changeagent.data.second_cc",
    "levir_cd": "changeagent.data.levir_cd",
    "whu_cd": "changeagent.data.whu_cd",
    "dsifn_cd": "changeagent.data.dsifn_cd",
    "levir_cc": "changeagent.data.levir_cc",
    "second": "changeagent.data.second",
    "custom": "changeagent.data.custom",
    "cdvqa": "changeagent.data.cdvqa",
    "qag360k": "changeagent.data.qag360k",
}


def dataset_ids() -> list[str]:
    return list(REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset `name`; an unknown name is an error listing the valid ids."""
    if name not in REGISTRY:
        raise ChangeAgentError(f"unknown dataset {name!r}; known: {list(REGISTRY)}")
    spec = importlib.import_module(REGISTRY[name]).SPEC
    assert isinstance(spec, DatasetSpec) and spec.id == name, f"{REGISTRY[name]}.SPEC must have id {name!r}"
    return spec


def bind_spec(name: str, root: str | Path | None) -> DatasetSpec:
    """The spec for the data at `root` (a custom folder fills in the classes of its classes.yaml)."""
    spec = get_spec(name)
    if spec.bind is not None and root is not None:
        return spec.bind(spec, Path(root))
    return spec


def spec_from_summary(name: str, summary: dict | None) -> DatasetSpec:
    """The spec of a trained model's dataset, with the classes saved beside its weights."""
    spec = get_spec(name)
    if summary and list(summary.get("classes", [])) != list(spec.classes):
        palette = tuple(tuple(int(v) for v in c) for c in summary.get("palette", []))
        return spec.with_classes(tuple(summary["classes"]), palette)  # type: ignore[arg-type]
    return spec
