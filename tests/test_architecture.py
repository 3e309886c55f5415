"""The layering the README promises, checked on the source: data flows one way
(commands -> bot -> integrations), nothing imports in a circle, every module's `__all__`
names what the others import from it, and only integrations/ handles a library's errors."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("integrations", "bot", "commands")  # each may import only the layers before it
LIBRARIES_WITH_ERRORS = ("httpx", "httpx2", "slack_sdk", "pagerduty", "kubernetes", "aiohttp")


def _modules() -> dict[str, Path]:
    found = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            if "migrations" in path.parts:
                continue  # alembic's generated revisions import only alembic and sqlalchemy
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> Iterator[tuple[str, list[str], bool]]:
    """(module, names, at top level) for every import of ours in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    # top level: the module's body, and its `if TYPE_CHECKING:` blocks (names for annotations)
    top = set(map(id, tree.body)) | {id(n) for node in tree.body if isinstance(node, ast.If)
                                     and ast.unparse(node.test) == "TYPE_CHECKING" for n in node.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names], id(node) in top
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], id(node) in top


def _ours(module: str) -> str | None:
    while module:
        if module in MODULES:
            return module
        module = module.rpartition(".")[0]
    return None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        targets = set()
        for module, names, _ in _imports(path):
            # `from bot import escalation` imports the module bot.escalation
            for target in [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES] or [module]:
                ours = _ours(target)
                if ours and ours != name:
                    targets.add(ours)
        graph[name] = targets
    return graph


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = []
    for name, targets in _graph().items():
        layer = LAYERS.index(name.split(".")[0])
        for target in targets:
            if LAYERS.index(target.split(".")[0]) > layer:
                wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_integrations_know_nothing_of_each_other_but_the_shared_error() -> None:
    wrong = [f"{name} imports {target}" for name, targets in _graph().items() if name.startswith("integrations.")
             for target in targets if target != "integrations.errors"]
    assert wrong == []


def test_no_module_imports_in_a_circle() -> None:
    graph, cycles = _graph(), []
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_imports_of_our_modules_are_at_the_top_except_optional_clients() -> None:
    """A late import hides a dependency (and was how circles were papered over). Allowed: the
    CLI's per-command imports and the optional clients the composition root builds on demand."""
    allowed = {"commands.cli", "commands.app"}
    late = [f"{name}: {module}" for name, path in MODULES.items() if name not in allowed
            for module, _, top in _imports(path) if not top and _ours(module)]
    assert late == []


def test_only_the_composition_root_is_built_from_features_and_nothing_imports_it() -> None:
    importers = [name for name, targets in _graph().items() if "commands.app" in targets]
    assert importers == ["commands.cli"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_all_names_what_other_modules_import(name: str) -> None:
    tree = ast.parse(MODULES[name].read_text())
    declared = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                     and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)), None)
    if name in LAYERS:
        return  # a package: `from bot import escalation` imports a module, not a name
    imported = sorted({n for other, path in MODULES.items() if other != name
                       for module, names, _ in _imports(path) if module == name for n in names})
    imported += sorted({n for path in (ROOT / "tests").rglob("*.py")
                        for module, names, _ in _imports(path) if module == name for n in names} - set(imported))
    if declared is None and not imported:
        return
    assert declared is not None, f"{name} has no __all__, but others import {imported}"
    assert sorted(set(imported) - set(declared)) == [], f"{name}.__all__ lacks names other modules import"


def test_nothing_outside_integrations_catches_a_librarys_exception() -> None:
    caught = []
    for name, path in MODULES.items():
        if name.startswith("integrations."):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                text = ast.unparse(node.type)
                if any(f"{lib}." in text or text.startswith(lib) for lib in LIBRARIES_WITH_ERRORS):
                    caught.append(f"{name}:{node.lineno}: except {text}")
    assert caught == []
