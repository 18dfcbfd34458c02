"""design.md's dependency direction, enforced on the source (imports) and at run time (import advisor)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("advisor", "runners", "sweep", "reports")
ALLOWED = {
    "advisor": set(),
    "runners": {"advisor"},
    "reports": {"advisor"},
    "sweep": {"advisor", "runners", "reports"},
}
HEAVY = {"torch", "transformers", "peft", "bitsandbytes", "accelerate"}
ORCHESTRATION = {"hydra", "omegaconf", "optuna"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_package_dependency_direction():
    bad = []
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            mods = _imports(f)
            for other in set(PACKAGES) - {pkg} - ALLOWED[pkg]:
                if other in mods:
                    bad.append(f"{f.relative_to(ROOT)} imports {other}")
            if pkg != "runners" and mods & HEAVY:
                bad.append(f"{f.relative_to(ROOT)} imports {sorted(mods & HEAVY)} (only runners/ may)")
            if pkg != "sweep" and mods & ORCHESTRATION:
                bad.append(f"{f.relative_to(ROOT)} imports {sorted(mods & ORCHESTRATION)} (only sweep/ may)")
    assert not bad, "\n".join(bad)


def test_import_advisor_pulls_in_no_heavy_library():
    code = (
        "import sys, pkgutil, importlib, advisor\n"
        "for m in pkgutil.walk_packages(advisor.__path__, 'advisor.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in ('torch','hydra','omegaconf','optuna','transformers','peft','bitsandbytes') if n in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", f"import advisor pulled in: {out.stdout.strip()}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Every import between our modules, lazy (function-level) imports included."""
    files = {_module_name(f): f for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in files)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = {f"{node.module}.{a.name}" for a in node.names} & files.keys()
                deps.update(subs or ({node.module} & files.keys()))
        graph[name] = deps - {name}
    return graph


def test_no_import_cycles():
    graph, cycles = _graph(), []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" → ".join([*path[path.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_advisor_subpackages_depend_one_way():
    """advisor.config ← advisor.data ← advisor.estimator: catalogs and config know neither data nor estimates."""
    order = {"advisor.config": 0, "advisor.data": 1, "advisor.estimator": 2}
    bad = []
    for mod, deps in _graph().items():
        sub = ".".join(mod.split(".")[:2])
        for dep in deps:
            dsub = ".".join(dep.split(".")[:2])
            if sub in order and dsub in order and order[dsub] > order[sub]:
                bad.append(f"{mod} imports {dep}")
    assert not bad, "\n".join(bad)
