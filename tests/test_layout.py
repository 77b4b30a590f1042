"""The package is laid out as the pipeline's stages (docs/ARCHITECTURE.md): every import
between sub-packages goes to a stage below, so there is no cycle. Run alone with
``pytest tests/test_layout.py``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "edgeser"
#: Stages from the bottom up; a module may import from its own stage and those before it.
#: ("edgeser" is the package root: its version string and lazy re-exports.)
STAGES = (
    "edgeser",
    "core",
    "audio",
    "data",
    "split",
    "models",
    "config",
    "features",
    "evaluation",
    "training",
    "runtime",
    "web",
    "serve",
    "exporting",
    "experiments",
    "api",
    "testing",
    "cli",
)


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "edgeser"


def _imports() -> list[tuple[str, str, int]]:
    """``(module, imported module, line)`` for every import of an edgeser module that runs
    (imports under ``if TYPE_CHECKING:`` are for annotations only and never execute)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("edgeser", *path.relative_to(PACKAGE).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {
            id(n)
            for block in ast.walk(tree)
            if isinstance(block, ast.If)
            and isinstance(block.test, ast.Name)
            and block.test.id == "TYPE_CHECKING"
            for stmt in block.body
            for n in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [(module, n, node.lineno) for n in names if n.split(".")[0] == "edgeser"]
    return found


def test_every_module_belongs_to_a_stage() -> None:
    stages = {_stage(m) for m, _, _ in _imports()}
    assert stages <= set(STAGES), stages - set(STAGES)


def test_imports_only_go_down_the_stages() -> None:
    rank = {s: i for i, s in enumerate(STAGES)}
    upward = [
        f"{m}:{line} imports {target}"
        for m, target, line in _imports()
        if _stage(m) != "edgeser" and rank[_stage(target)] > rank[_stage(m)]
    ]
    assert not upward, "\n".join(upward)


def test_no_module_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    modules = {m for m, _, _ in _imports()}
    for m, target, _ in _imports():
        while target not in modules and "." in target:  # "from edgeser.x import y"
            target = target.rsplit(".", 1)[0]
        if target != m and not target.endswith(("edgeser",)):
            graph.setdefault(m, set()).add(target)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt.count(".") < node.count(".") and node.startswith(nxt + "."):
                continue  # a package's own __init__ re-exports
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            raise AssertionError(" -> ".join(cycle))


def test_lazy_package_names_resolve() -> None:
    """Every name a lazy package lists loads (and is not shadowed by a sub-module)."""
    import importlib
    import types

    for package in ("edgeser.models", "edgeser.exporting"):
        pkg = importlib.import_module(package)
        for name in pkg.__all__:
            value = getattr(pkg, name)
            assert not isinstance(value, types.ModuleType), f"{package}.{name} is a module"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_no_module_imports_another_modules_private_names() -> None:
    """A ``_name`` is its module's own: no other edgeser module imports it
    (``from edgeser.x import _name``) or reaches it through an imported module
    (``x._name``). A helper two modules share is public in its owner."""
    modules = {
        ".".join(("edgeser", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
            ".__init__"
        )
        for p in PACKAGE.rglob("*.py")
    }
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        bound: set[str] = set()  # local names of imported edgeser modules
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] != "edgeser":
                    continue
                for a in node.names:
                    if _private(a.name):
                        found.append(f"{rel}:{node.lineno} imports {node.module}.{a.name}")
                    if f"{node.module}.{a.name}" in modules:
                        bound.add(a.asname or a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == "edgeser":
                        if any(_private(part) for part in a.name.split(".")):
                            found.append(f"{rel}:{node.lineno} imports {a.name}")
                        bound.add(a.asname or a.name.split(".")[0])
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                base = node.value
                while isinstance(base, ast.Attribute):
                    base = base.value
                if isinstance(base, ast.Name) and base.id in bound:
                    found.append(f"{rel}:{node.lineno} uses {ast.unparse(node)}")
    assert not found, "\n".join(found)


def _modules_named(node: ast.AST) -> list[str]:
    """The modules an import statement names (none for other nodes and relative imports)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def test_the_runtime_package_imports_no_training_stack() -> None:
    """Nothing under ``edgeser/runtime`` imports torch or the training-side libraries, not
    even inside a function: the runtime install has none of them (test helpers that
    need torch live in :mod:`edgeser.testing`)."""
    heavy = {"torch", "torchaudio", "transformers", "pandas", "scipy", "sklearn", "matplotlib"}
    found = [
        f"{path.relative_to(PACKAGE)}:{node.lineno} imports {name}"
        for path in sorted((PACKAGE / "runtime").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        for name in _modules_named(node)
        if name.split(".")[0] in heavy
    ]
    assert not found, "\n".join(found)


ARCHITECTURE = PACKAGE.parents[1] / "docs" / "ARCHITECTURE.md"


def _named_in(text: str) -> set[str]:
    """Every `backticked` word of ``text``, and each path part of a backticked path."""
    import re

    words = set()
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # fenced blocks aside
    for token in re.findall(r"`([^`]+)`", text):
        words.add(token)
        words.update(re.split(r"[/.\s]+", token))
    return words


def test_the_architecture_page_names_every_module_and_stage() -> None:
    """docs/ARCHITECTURE.md's table lists the stages in :data:`STAGES` order and names every
    module of the package, so the page cannot drift from the code."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    row_stages = [line.split("`")[1].removesuffix("/").removesuffix(".py") for line in rows]
    expected = ["__init__" if s == "edgeser" else s for s in STAGES]
    assert row_stages == expected
    named = _named_in(text)
    missing = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.stem != "__init__" and path.stem not in named
    )
    assert not missing, f"docs/ARCHITECTURE.md does not name: {', '.join(missing)}"


def test_the_architecture_page_names_every_function_local_import() -> None:
    """A module that imports edgeser inside a function (an exception to the top-of-module
    rule, for the light install) is named in the page's Imports section."""
    section = ARCHITECTURE.read_text(encoding="utf-8").split("## Imports", 1)[1]
    named = _named_in(section)
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        local = [
            node
            for fn in ast.walk(tree)
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
            for node in ast.walk(fn)
            if any(m.split(".")[0] == "edgeser" for m in _modules_named(node))
        ]
        rel = path.relative_to(PACKAGE)
        if local and rel.stem not in named and rel.parent.name not in named:
            found.append(f"{rel}:{local[0].lineno}")
    assert not found, "imports edgeser inside a function, not in ARCHITECTURE.md: " + ", ".join(
        found
    )
