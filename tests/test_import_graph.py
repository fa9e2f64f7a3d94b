"""Imports go one way: no cycle among the modules of cd7flow/ and gating/, nothing there imports
Qt or the gui, and gating/ never imports cd7flow. Checked on the module-level imports of
the source (a function-level import, e.g. a PEP 562 ``__getattr__``, is not a cycle at import
time), and by importing every module in a fresh interpreter."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cd7flow", "gating")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _top_level_imports(name: str, path: Path, known: set[str]) -> set[str]:
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)  # annotations only: not imported at run time
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(getattr(node, field, []) or [])

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    # a module's own packages are initialised before it (``from . import x`` is not a cycle)
    ancestors = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1)}
    return {m for m in found if m in known and m != name and m not in ancestors}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycles_and_imports_go_one_way():
    mods = _modules()
    assert "cd7flow.io.workspace" in mods and "cd7flow.strategy" in mods
    graph = {name: _top_level_imports(name, path, set(mods)) for name, path in mods.items()}
    assert _cycles(graph) == []
    for name, path in mods.items():
        text = path.read_text(encoding="utf-8")
        assert "PySide6" not in text and "import gui" not in text and "from gui" not in text, name
        if name.startswith("gating"):
            assert not any(m.startswith("cd7flow") for m in graph[name]), name
    # the readers share the workspace base instead of importing each other
    assert "cd7flow.io.flowjo" not in graph["cd7flow.io.flowjo9"]
    assert "cd7flow.io.flowjo" not in graph["cd7flow.io.diva"]


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_imports_in_a_fresh_interpreter():
    """Leaves first (reverse order), so a module that only works after a sibling was imported fails."""
    names = sorted((n for n in _modules() if not n.endswith("__main__")), reverse=True)
    code = "import importlib\n" + "".join(f"importlib.import_module({n!r})\n" for n in names)
    code += "import sys\nprint(sorted(m for m in sys.modules if m.startswith(('PySide6', 'gui'))))\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"  # no Qt below the gui
