"""The package layout follows the pipeline: every import points down it, with no cycles.

The import graph is read from the source with ``ast`` (top-level *and* function-level imports), so a
lazy import that only dodges a cycle is caught as well: with every import counted, the graph must
be acyclic, and each package may import only packages at or below its own stage.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "ncprobe"

# Pipeline stages, low to high: a module may import its own package and packages of a lower or
# equal stage, never a higher one.
STAGE = {
    "ncprobe": 0, "errors": 0, "validation": 0, "progress": 0, "device": 0, "distributed": 0, "budget": 0,
    "models": 1,
    "checkpoint": 2, "data": 2,
    "features": 3,
    "stats": 4,
    "scores": 5, "metrics": 5, "transfer": 5,
    "report": 6,
    "jobs": 7,
    "api": 8, "finetune": 8,
    "demo": 9,
    "cli": 10, "__main__": 10,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom, modules: dict) -> list[str]:
    if node.level:
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("ncprobe"):
        return []
    out = []
    for alias in node.names:  # `from pkg import submodule` imports the submodule
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in modules else target)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                graph[name].update(_resolve(name, path.name == "__init__.py", node, modules))
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name.startswith("ncprobe"))
    for name in graph:
        graph[name] = {t for t in graph[name] if t in modules and t != name}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _stage(module: str) -> tuple[str, int]:
    top = module.split(".")[1] if "." in module else "ncprobe"
    return top, STAGE[top]


def test_every_package_has_a_stage():
    missing = {_stage_name for m in _modules() if (_stage_name := (m.split(".") + ["ncprobe"])[1]) not in STAGE}
    assert not missing, f"add {missing} to STAGE in pipeline order"


def test_no_import_cycle_even_counting_lazy_imports():
    cycle = _find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_finder_sees_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_import_points_down_the_pipeline():
    upward = []
    for module, targets in import_graph().items():
        top, stage = _stage(module)
        for target in targets:
            ttop, tstage = _stage(target)
            if ttop != top and tstage > stage:
                upward.append(f"{module} -> {target}")
    assert not upward, "upward imports: " + "; ".join(sorted(upward))


@pytest.mark.slow
def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(m for m in _modules() if not m.endswith("__main__"))  # __main__ runs the CLI
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    proc = subprocess.run([sys.executable, "-c", code, *reversed(names)], capture_output=True, text=True,
                          cwd=ROOT.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
