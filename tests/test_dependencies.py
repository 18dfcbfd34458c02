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
