"""The layering of docs/design.md ("Layers") as a contract over the package's real import graph.

The graph is built statically with `ast` from every module under `changeagent/`: module-level and
function-level imports, relative imports, `from pkg import name` resolved to the submodule `name`
when it is one, lazy package attributes (a package's `lazy_getattr` table: `from changeagent.models
import load` and `changeagent.models.load` are edges to `changeagent.models.hub`), string tables of
module names that are imported by name (`cli.COMMANDS`, the dataset / task / head registries) and
`importlib.import_module("<constant>")`. A dependency that exists only through a lazy attribute is a
dependency all the same, so spelling it differently cannot hide it.

Importing `a.b.c` also runs `a/__init__` and `a/b/__init__`; those implicit edges are left out
(every submodule would otherwise form a cycle with its package's `__init__`).
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "changeagent"

# docs/design.md, "Layers", lowest first: a module may depend on its own layer and the ones below;
# layers of one rank (`a | b`) are independent of each other
LAYERS: tuple[tuple[str, ...], ...] = (
    ("base",),
    ("data",),
    ("models",),
    ("losses", "metrics"),
    ("tasks",),
    ("engine", "inference"),
    ("app",),
    ("cli",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
# the shared bottom layer: the root package and its top-level helper modules
BASE = ("changeagent", "changeagent.config", "changeagent.typed", "changeagent.lazy", "changeagent.errors",
        "changeagent.paths", "changeagent.devices", "changeagent.fileio")
# inside models: the saved-model owner and the tools that read or write model folders sit above the
# model code, which never depends on them (a saved model is rebuilt from its config alone)
HUB = "changeagent.models.hub"
FOLDER_TOOLS: dict[str, str] = {
    HUB: "the saved-model owner (save_pretrained / load)",
    "changeagent.models.export": "reads a model folder, writes an export folder",
    "changeagent.models.mci.convert": "writes a model folder from a Change-Agent checkpoint",
    "changeagent.models.mci.fixture": "loads a converted model folder to write the reference fixture",
}
# explicit exceptions to the layer order: (importer, imported) -> why. Keep this short.
ALLOWED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    """`src` depends on `dst` at `src`'s line `line`; `how` says through what (import, lazy, table)."""

    src: str
    dst: str
    line: int
    how: str

    def __str__(self) -> str:
        return f"{self.src}:{self.line} -> {self.dst} ({self.how})"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file for every module of the package at `root` (its folder)."""
    mods = {}
    for f in sorted(root.rglob("*.py")):
        parts = [root.name, *f.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    return mods


def _static_table(node: ast.expr) -> dict[str, str] | None:
    """The value of a literal name -> module table (dict literals, `**{n: "m" for n in (...)}`)."""
    if isinstance(node, ast.Dict):
        out: dict[str, str] = {}
        for k, v in zip(node.keys, node.values):
            if k is None:  # `**{...}`
                sub = _static_table(v)
                if sub is None:
                    return None
                out.update(sub)
            elif isinstance(k, ast.Constant) and isinstance(v, ast.Constant):
                out[str(k.value)] = str(v.value)
            else:
                return None
        return out
    if isinstance(node, ast.DictComp) and len(node.generators) == 1:
        gen = node.generators[0]
        if (isinstance(node.key, ast.Name) and isinstance(gen.target, ast.Name) and node.key.id == gen.target.id
                and isinstance(node.value, ast.Constant) and isinstance(gen.iter, (ast.Tuple, ast.List))
                and all(isinstance(e, ast.Constant) for e in gen.iter.elts)):
            return {str(e.value): str(node.value.value) for e in gen.iter.elts}  # type: ignore[attr-defined]
    return None


def lazy_table(tree: ast.Module, where: str) -> tuple[dict[str, str], str | None]:
    """A package's lazy attributes (name -> module) and the name of the table's variable: the table
    passed to `lazy_getattr(__name__, TABLE, globals())` at module level."""
    assigns = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
               for t in node.targets if isinstance(t, ast.Name)}
    for node in tree.body:
        call = node.value if isinstance(node, (ast.Assign, ast.Expr)) else None
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "lazy_getattr"
                and len(call.args) >= 2 and isinstance(call.args[1], ast.Name)):
            name = call.args[1].id
            table = _static_table(assigns[name]) if name in assigns else None
            assert table is not None, f"{where}: the lazy table {name} is not a literal name -> module table"
            return table, name
    return {}, None


def _package_of(mod: str, is_package: bool) -> str:
    return mod if is_package else mod.rpartition(".")[0]


def build_graph(root: Path) -> dict[str, list[Edge]]:
    """Module -> its edges to other modules of the package at `root` (see the module docstring)."""
    mods = module_names(root)
    trees = {m: ast.parse(f.read_text(), str(f)) for m, f in mods.items()}
    tables = {m: lazy_table(t, str(mods[m])) for m, t in trees.items()}
    lazy = {m: table for m, (table, _) in tables.items()}

    def known(name: str) -> str | None:
        """The longest prefix of `name` that is a module of the package."""
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in mods:
                return ".".join(parts[:n])
        return None

    graph: dict[str, list[Edge]] = {}
    for mod, tree in trees.items():
        is_pkg = mods[mod].name == "__init__.py"
        edges: list[Edge] = []
        bound: dict[str, str] = {}  # local name -> module it is bound to (module-wide approximation)

        def add(dst: str | None, line: int, how: str, _mod: str = mod, _edges: list[Edge] = edges) -> None:
            if dst is not None and dst != _mod:
                _edges.append(Edge(_mod, dst, line, how))

        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    add(known(a.name), node.lineno, "import")
                    if a.asname:
                        bound[a.asname] = a.name
                    else:
                        bound[a.name.split(".")[0]] = a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = _package_of(mod, is_pkg).split(".")
                    base = base[: len(base) - (node.level - 1)]
                    src = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    src = node.module or ""
                if known(src) is None:
                    continue  # outside the package
                for a in node.names:
                    sub = f"{src}.{a.name}"
                    if sub in mods:
                        add(sub, node.lineno, "import")
                        bound[a.asname or a.name] = sub
                    elif a.name in lazy.get(src, {}):
                        add(lazy[src][a.name], node.lineno, f"lazy attribute {src}.{a.name}")
                    else:
                        add(known(src), node.lineno, "import")
            elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)
                  and (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
                       or isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))):
                add(known(node.args[0].value), node.lineno, "import_module")
        # module names in module-level tables that are imported by name (registries, cli.COMMANDS);
        # the lazy table is the package's own attributes, not something the package imports
        lazy_var = tables[mod][1]
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == lazy_var for t in targets):
                    continue
                for c in ast.walk(node.value):
                    if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value in mods:
                        add(c.value, c.lineno, "module name in a table")
        # attribute chains on bound modules: `changeagent.models.load(...)`, `m.create_model`
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            chain: list[str] = []
            cur: ast.expr = node
            while isinstance(cur, ast.Attribute):
                chain.insert(0, cur.attr)
                cur = cur.value
            if not isinstance(cur, ast.Name) or cur.id not in bound:
                continue
            at = bound[cur.id]
            for attr in chain:
                if f"{at}.{attr}" in mods:
                    at = f"{at}.{attr}"
                    add(at, node.lineno, "attribute")
                    continue
                if attr in lazy.get(at, {}):
                    add(lazy[at][attr], node.lineno, f"lazy attribute {at}.{attr}")
                break
        # one edge per target: the first line that makes it
        first: dict[str, Edge] = {}
        for e in sorted(edges, key=lambda e: e.line):
            first.setdefault(e.dst, e)
        graph[mod] = sorted(first.values(), key=lambda e: (e.dst, e.line))
    return graph


def layer_of(mod: str) -> str:
    """The docs/design.md layer of a module: `cli` for every command-line module, else its concern."""
    parts = mod.split(".")
    if parts[-1] in ("cli", "__main__") or parts[-1].endswith("_cli"):
        return "cli"
    if mod in BASE:
        return "base"
    assert len(parts) > 1 and parts[1] in RANK, f"{mod}: in no layer of docs/design.md; add it to the table"
    return parts[1]


def allowed(src: str, dst: str) -> bool:
    a, b = layer_of(src), layer_of(dst)
    return a == b or RANK[b] < RANK[a] or (src, dst) in ALLOWED


def chain_to(graph: dict[str, list[Edge]], start: str, goal: str | set[str]) -> list[Edge] | None:
    """The shortest edge chain start -> ... -> goal (one of a set of goals), breadth first; None if
    no goal is reached."""
    goals = {goal} if isinstance(goal, str) else goal
    seen, frontier = {start}, [[e] for e in graph.get(start, [])]
    while frontier:
        nxt: list[list[Edge]] = []
        for path in frontier:
            dst = path[-1].dst
            if dst in goals:
                return path
            if dst not in seen:
                seen.add(dst)
                nxt.extend([*path, e] for e in graph.get(dst, []))
        frontier = nxt
    return None


def layer_violations(graph: dict[str, list[Edge]]) -> list[str]:
    """One line per edge from a module to one of a higher (or a parallel) layer."""
    return [f"{e}: layer {layer_of(e.src)} must not depend on layer {layer_of(e.dst)}"
            for edges in graph.values() for e in edges if not allowed(e.src, e.dst)]


def hub_violations(graph: dict[str, list[Edge]], tools: Iterable[str] = (HUB,)) -> list[str]:
    """Model code (models/*, except the hub, the folder `tools` and the cli modules) that reaches the
    hub or a folder tool, directly or through other modules: one line each, with the chain."""
    above = set(tools) | {HUB}
    out = []
    for mod in graph:
        if mod.startswith("changeagent.models.") and mod not in above and layer_of(mod) == "models":
            path = chain_to(graph, mod, above)
            if path:
                out.append(f"{mod} reaches {path[-1].dst}: " + "; ".join(map(str, path)))
    return out


def cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """One cycle (as its edges) per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[set[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the module count (~200)
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for e in graph.get(v, []):
            if e.dst not in index:
                visit(e.dst)
                low[v] = min(low[v], low[e.dst])
            elif e.dst in on:
                low[v] = min(low[v], index[e.dst])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for comp in comps:
        start = min(comp)
        inside = {m: [e for e in graph[m] if e.dst in comp] for m in comp}
        back = next(e for e in sorted((e for es in inside.values() for e in es), key=str) if e.dst == start)
        path = chain_to(inside, start, back.src) or []
        out.append([*path, back])
    return out


def _fmt(cycle: Iterable[Edge]) -> str:
    return "import cycle: " + "; ".join(map(str, cycle))


# --- the contract over changeagent/ ----------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> dict[str, list[Edge]]:
    return build_graph(ROOT)


def test_every_module_has_a_layer(graph):
    for mod in graph:
        layer_of(mod)


def test_lower_layers_never_depend_on_higher_ones(graph):
    bad = layer_violations(graph)
    assert not bad, "layering of docs/design.md broken:\n" + "\n".join(bad)


def test_model_code_never_reaches_the_hub(graph):
    """Not even through a lazy attribute of `changeagent.models` (which maps the hub's names)."""
    bad = hub_violations(graph, FOLDER_TOOLS)
    assert not bad, "\n".join(bad)


def test_folder_tools_exist(graph):
    assert set(FOLDER_TOOLS) <= set(graph), set(FOLDER_TOOLS) - set(graph)


def test_no_import_cycles(graph):
    found = cycles(graph)
    assert not found, "\n".join(map(_fmt, found))


def test_the_graph_sees_lazy_attributes(graph):
    """A known edge that exists only through a lazy attribute: the engine loads a model folder
    through `changeagent.models`'s table, which maps the hub's names."""
    hub_users = {e.src for es in graph.values() for e in es if e.dst == HUB and e.how.startswith("lazy")}
    assert hub_users, "no module reaches the hub through a lazy attribute: is the lazy table read?"


def test_allowed_exceptions_are_still_needed(graph):
    """An exception whose edge is gone is removed, so the list stays short and true."""
    edges = {(e.src, e.dst) for es in graph.values() for e in es}
    stale = [pair for pair in ALLOWED if pair not in edges]
    assert not stale, f"exceptions no longer needed: {stale}"


# --- the checker finds what it must (a planted package) -------------------------------------------


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "changeagent"
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(textwrap.dedent(text))
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        (d / "__init__.py").touch()
    return root


LAZY_MODELS = """\
    from changeagent.lazy import lazy_getattr
    _LAZY = {"create_model": "changeagent.models.factory",
             **{n: "changeagent.models.hub" for n in ("load", "save_pretrained")}}
    __getattr__ = lazy_getattr(__name__, _LAZY, globals())
    """


def test_checker_finds_a_lower_layer_importing_a_higher_one_in_a_function(tmp_path):
    root = _plant(tmp_path, {
        "engine/trainer.py": "X = 1\n",
        "data/reader.py": "import os\n\n\ndef f():\n    from ..engine import trainer\n    return trainer.X\n",
    })
    bad = layer_violations(build_graph(root))
    assert len(bad) == 1 and "changeagent.data.reader:5 -> changeagent.engine.trainer" in bad[0], bad


def test_checker_finds_parallel_layers_and_spares_the_cli(tmp_path):
    root = _plant(tmp_path, {
        "engine/schema.py": "X = 1\n",
        "inference/index.py": "from changeagent.engine.schema import X\n",
        "inference/cli.py": "from changeagent.engine import schema\n",  # cli composes the layers
    })
    bad = layer_violations(build_graph(root))
    assert [b.split(" (")[0] for b in bad] == ["changeagent.inference.index:1 -> changeagent.engine.schema"]


def test_checker_follows_lazy_attributes_to_the_hub(tmp_path):
    """Both spellings reach the hub: `from pkg import name` and `pkg.name`, and so does a module that
    reaches it through another one (the chain is named)."""
    root = _plant(tmp_path, {
        "lazy.py": "def lazy_getattr(*a): ...\n",
        "models/__init__.py": LAZY_MODELS,
        "models/hub.py": "def load(): ...\ndef save_pretrained(): ...\n",
        "models/factory.py": "def create_model(): ...\n",
        "models/a.py": "from changeagent.models import load\n",
        "models/b.py": "import changeagent.models\n\n\ndef f():\n    return changeagent.models.save_pretrained\n",
        "models/c.py": "from changeagent.models import a\n",
        "models/d.py": "from changeagent.models import create_model\n",
    })
    graph = build_graph(root)
    bad = hub_violations(graph)
    assert sorted(b.split(" reaches")[0] for b in bad) == [
        "changeagent.models.a", "changeagent.models.b", "changeagent.models.c"], bad
    c = next(b for b in bad if b.startswith("changeagent.models.c"))
    assert "changeagent.models.c:1 -> changeagent.models.a" in c and "changeagent.models.a:1 -> " + HUB in c
    assert [e.dst for e in graph["changeagent.models.d"]] == ["changeagent.models.factory"]
    assert [e.dst for e in graph["changeagent.models.b"]] == ["changeagent.models", HUB]


def test_checker_finds_a_cycle_and_names_it(tmp_path):
    root = _plant(tmp_path, {
        "losses/factory.py": "def f():\n    from changeagent.losses.multitask import M\n",
        "losses/multitask.py": "from . import factory\nM = 1\n",
        "losses/mask.py": "from changeagent.losses import factory\n",  # depends on it, not in the cycle
    })
    found = cycles(build_graph(root))
    assert len(found) == 1, found
    text = _fmt(found[0])
    assert ("changeagent.losses.factory:2 -> changeagent.losses.multitask" in text
            and "changeagent.losses.multitask:1 -> changeagent.losses.factory" in text
            and "mask" not in text), text


def test_checker_follows_tables_of_module_names(tmp_path):
    root = _plant(tmp_path, {
        "models/heads.py": 'HEADS = {"mask": "changeagent.tasks.mask"}\n',
        "tasks/mask.py": "X = 1\n",
    })
    bad = layer_violations(build_graph(root))
    assert len(bad) == 1 and "changeagent.models.heads:1 -> changeagent.tasks.mask (module name in a table)" in bad[0]


def test_checker_finds_model_code_reaching_a_folder_tool(tmp_path):
    root = _plant(tmp_path, {
        "models/hub.py": "X = 1\n",
        "models/export.py": "from changeagent.models import hub\n",  # a folder tool: may use the hub
        "models/bench.py": "def f():\n    import changeagent.models.export as e\n    return e\n",
    })
    graph = build_graph(root)
    assert hub_violations(graph) == [  # without the tool listed, export itself is model code
        "changeagent.models.bench reaches changeagent.models.hub: changeagent.models.bench:2 -> "
        "changeagent.models.export (import); changeagent.models.export:1 -> changeagent.models.hub (import)",
        "changeagent.models.export reaches changeagent.models.hub: changeagent.models.export:1 -> "
        "changeagent.models.hub (import)"]
    assert hub_violations(graph, ["changeagent.models.export"]) == [
        "changeagent.models.bench reaches changeagent.models.export: changeagent.models.bench:2 -> "
        "changeagent.models.export (import)"]
