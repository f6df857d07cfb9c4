"""Tasks as specs (issue 17): one registry of tasks and one table of heads that agree, generic code
that never names a task, typed config sections for every head (no hand re-checks, every key
described), and no import circle in the losses."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from changeagent.errors import ChangeAgentError
from changeagent.models.heads import HEADS, get_head
from changeagent.tasks.registry import REGISTRY, get_task, task_ids
from changeagent.tasks.spec import TaskSpec

PKG = Path(__file__).resolve().parents[2] / "changeagent"

# the modules that run every task the same way: they may not test a task's (or its head's) name
GENERIC = ["engine/trainer.py", "engine/evaluator.py", "engine/optim.py", "engine/schema.py", "engine/loaders.py",
           "engine/runlog.py", "engine/wandb_logger.py", "engine/runs.py", "engine/cli.py", "engine/model_init.py",
           "engine/batches.py", "losses/factory.py", "losses/weighting.py", "losses/gradnorm.py", "tasks/losses.py",
           "tasks/data.py", "tasks/config.py", "tasks/spec.py", "models/bench.py", "models/factory.py",
           "models/change_captioner.py", "models/features.py", "models/hub.py", "models/cli.py",
           "inference/bench.py", "inference/predictor.py"]


def test_every_task_has_a_head_and_a_spec_file():
    assert task_ids()[:3] == ["mask", "caption", "retrieval"] and "qa" in task_ids() and "grounding" in task_ids() \
        and list(HEADS) == task_ids()
    for name in task_ids():
        spec, head = get_task(name), get_head(name)
        assert isinstance(spec, TaskSpec) and spec.name == head.name == name
        assert REGISTRY[name] == f"changeagent.tasks.{name}"
        assert dataclasses.is_dataclass(head.config)
    with pytest.raises(ChangeAgentError, match="unknown task 'nope'; known: mask, caption, retrieval"):
        get_task("nope")


@pytest.mark.parametrize("path", GENERIC)
def test_generic_code_never_names_a_task(path):
    heads = {get_head(n).attr for n in HEADS} | {get_head(n).section for n in HEADS}
    tree = ast.parse((PKG / path).read_text())
    named = [(node.lineno, node.value) for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in {*task_ids(), *heads}]
    # a head's attribute (model.retrieval, model.caption_decoder, ...); the necks' `.mask`/`.caption` are trunk parts
    named += [(node.lineno, node.attr) for node in ast.walk(tree) if isinstance(node, ast.Attribute)
              and node.attr in heads | {"embed_text"}]
    assert not named, f"{path} names tasks or heads: {named}"


def _imports(path: Path, package: str) -> set[str]:
    """Every changeagent module `path` imports (module level or inside a function)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith(package)}


def test_no_import_circle_in_the_losses_and_tasks():
    """The loss section and the losses imported each other (losses/factory <-> losses/multitask)."""
    modules = {}
    for sub in ("losses", "tasks"):
        for f in (PKG / sub).glob("*.py"):
            name = f"changeagent.{sub}.{f.stem}" if f.stem != "__init__" else f"changeagent.{sub}"
            modules[name] = f
    graph = {m: {i for i in _imports(f, "changeagent") if i in modules and i != m} for m, f in modules.items()}

    def reaches(src: str, dst: str, seen: set[str]) -> bool:
        return any(n == dst or (n not in seen and reaches(n, dst, seen | {n})) for n in graph[src])

    circles = sorted(m for m in graph if m != "changeagent.losses" and m != "changeagent.tasks" and reaches(m, m, {m}))
    assert not circles, circles
    assert not (PKG / "losses" / "multitask.py").exists()
    assert all(not i.startswith("changeagent.tasks") for i in _imports(PKG / "losses" / "factory.py", "changeagent"))


def test_every_head_and_model_section_is_typed_and_described():
    """RetrievalConfig and MCIConfig go through the typed schema: no hand `parse`, every key described
    (the generated key reference has no empty cell)."""
    from changeagent.engine.config_docs import render_reference
    from changeagent.models import retrieval
    from changeagent.models.factory import model_configs
    from changeagent.models.mci import config as mci_config

    assert not hasattr(retrieval.RetrievalConfig, "parse") and not hasattr(mci_config, "parse_mci_config")
    for cls in [*(get_head(n).config for n in HEADS), *model_configs().values()]:
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no description"
    for line in render_reference().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if line.startswith("| `"):
            assert cells[4], f"a key without a description in the reference: {line}"


@pytest.mark.parametrize("cfg, message", [
    ({"retrieval": {"dim": "x"}}, "model.retrieval.dim: expected an integer, got 'x'"),
    ({"retrieval": {"heads": 0}}, "model.retrieval.heads: must be >= 1, got 0"),
    ({"retrieval": {"dropout": 1.0}}, r"model.retrieval.dropout: must be in \[0, 1\), got 1.0"),
    ({"retrieval": {"text_dim": 30, "heads": 4}}, "model.retrieval.text_dim: 30 is not divisible by"),
    ({"type": "mci", "heads": 0}, "model.heads: must be >= 1, got 0"),
    ({"type": "mci", "decoder_dim": 30}, "model.heads: 8 must divide model.decoder_dim=30"),
    ({"type": "mci", "dropuot": 0.1}, r"model.dropuot: unknown key \(did you mean 'dropout'\?\)"),
])
def test_head_and_mci_sections_are_checked_by_the_schema(cfg, message):
    from changeagent.models.factory import resolve_config

    with pytest.raises(ChangeAgentError, match=message):
        resolve_config(cfg)
