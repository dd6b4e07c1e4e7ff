"""The server package's layout keeps the process boundary visible, and checked.

``framecast_server`` is grouped by where its code runs:

- ``api/``: the FastAPI app, routes, websocket, dashboard (the event loop);
- ``planning/``: a config becomes a checked plan;
- ``session/``: the event loop's side of a session, and the handle on its encoder process;
- ``encoder/``: runs only inside encoder processes;
- the top level: what both sides share (the pipe's messages, the ring, settings, errors, ...).

The rules below are the ones the docstrings used to state: "never on the event loop" is now a
failing test rather than a comment.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import framecast_server

PACKAGE = Path(framecast_server.__file__).parent
NAME = "framecast_server"
#: The one module on the server's side that may import the encoder's: it names the entry points
#: of the processes it starts.
HANDLE = f"{NAME}.session.encoder_process"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or path.is_dir()


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, lazy: bool = True) -> set[str]:
    """The package's modules ``path`` imports (at run time: not under TYPE_CHECKING). With ``lazy``
    False, only imports at module level (what runs when the module is imported)."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for other in child.orelse:
                    visit(other, top)
                continue
            inner = top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import) and (lazy or top):
                found.update(a.name for a in child.names if a.name.startswith(NAME))
            elif isinstance(child, ast.ImportFrom) and (lazy or top):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                if module.startswith(NAME):
                    found.add(module)
                    found.update(f"{module}.{a.name}" for a in child.names if _is_module(f"{module}.{a.name}"))
            visit(child, inner)

    visit(ast.parse(path.read_text()), True)
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def side(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else "shared"


def in_side(module: str, name: str) -> bool:
    return module == f"{NAME}.{name}" or module.startswith(f"{NAME}.{name}.")


def test_the_layout_has_the_four_sides() -> None:
    for name in ("api", "planning", "session", "encoder"):
        assert (PACKAGE / name / "__init__.py").is_file(), name
    assert HANDLE in MODULES


def test_only_the_encoder_handle_imports_the_encoder_side() -> None:
    offenders = {
        module: sorted(m for m in imports(path) if in_side(m, "encoder"))
        for module, path in MODULES.items()
        if not in_side(module, "encoder") and module != HANDLE
    }
    assert {m: i for m, i in offenders.items() if i} == {}, "only session/encoder_process.py may import encoder/"


def test_the_encoder_side_loads_nothing_of_the_web_app_or_the_sessions() -> None:
    offenders = {
        module: sorted(m for m in imports(path) if in_side(m, "api") or in_side(m, "session"))
        for module, path in MODULES.items()
        if in_side(module, "encoder")
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_shared_and_planning_modules_import_neither_side() -> None:
    offenders = {
        module: sorted(m for m in imports(path) if any(in_side(m, s) for s in ("api", "session", "encoder")))
        for module, path in MODULES.items()
        if side(module) in ("shared", "planning") and module != NAME
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_no_import_cycles() -> None:
    graph = {
        module: {m for m in imports(path, lazy=False) if m in MODULES and m != module}
        for module, path in MODULES.items()
    }
    # A package's __init__ importing its own modules is how packages work, not a cycle.
    for module in graph:
        if module in (NAME,) or MODULES[module].name == "__init__.py":
            graph[module] = set()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_an_encoder_process_does_not_load_the_web_app() -> None:
    # What an encoder process imports (the forkserver preloads framecast_server.encoder.main).
    code = (
        "import sys, framecast_server.encoder.main\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in {'fastapi', 'starlette', 'uvicorn'}"
        " or m.startswith(('framecast_server.api', 'framecast_server.session')))\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
