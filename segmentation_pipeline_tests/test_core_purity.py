"""core/ is the domain in plain Python: nothing in it may import dagster."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import segmentation_pipeline

CORE = Path(segmentation_pipeline.__file__).parent / "core"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_core_module_imports_dagster() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 8
    offenders = {
        str(path.relative_to(CORE)): sorted(name for name in imported_modules(path) if name.split(".")[0] == "dagster")
        for path in files
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_importing_all_of_core_does_not_load_dagster() -> None:
    modules = [
        "segmentation_pipeline.core." + ".".join(path.relative_to(CORE).with_suffix("").parts)
        for path in sorted(CORE.rglob("*.py"))
        if path.stem != "__init__"
    ]
    script = "import sys\n" + "".join(f"import {m}\n" for m in modules) + "print('dagster' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False"
