"""The package's layout is its architecture: each subpackage imports only the parts below it.

Read from the source with `ast` (no import runs), so a new arrow back up or a cycle fails here
before it becomes a design by accident (shared/STYLE.md, "Layout").
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dispatcher"

# part -> the parts it may import. A part is a subpackage, or a module at the top.
ALLOWED: dict[str, set[str]] = {
    "core": {"_core", "_core_py"},
    "_core": set(),
    "_core_py": set(),
    "redis_address": set(),
    "settings": {"redis_address"},
    "config": set(),
    "state": {"core", "redis_address"},
    "telemetry": {"state"},
    "queue": {"config", "state", "core", "settings"},
    "media": {"config", "state", "settings"},
    "sip": {"config", "state", "core", "settings", "telemetry", "queue", "media"},
    "reports": {"config", "state", "core", "settings", "queue", "redis_address"},
    "admin": {"config", "state", "core", "settings", "reports", "media"},
    "api": {
        "admin",
        "config",
        "reports",
        "state",
        "core",
        "settings",
        "telemetry",
        "queue",
        "media",
    },
    "run": {"admin", "config", "state", "core", "settings", "media", "redis_address"},
    "__main__": {"admin", "config", "reports", "state", "settings"},
    "__init__": set(),
}


def part_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_parts(path: Path) -> set[str]:
    """The parts of the package that the module at `path` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "dispatcher":
                names |= {f"dispatcher.{alias.name}" for alias in node.names}
            else:
                names.add(node.module)
    return {
        name.split(".")[1]
        for name in names
        if name.startswith("dispatcher.") and name.split(".")[1] != "__version__"
    }


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_imports_point_down(path: Path) -> None:
    part = part_of(path)
    assert part in ALLOWED, f"{part} is a new part of the package: add it to ALLOWED"
    wrong = imported_parts(path) - ALLOWED[part] - {part}
    assert not wrong, f"{path.relative_to(PACKAGE)} ({part}) imports {sorted(wrong)}"


def test_every_subpackage_says_what_it_holds_and_may_import() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and "import" in doc.lower(), (
            f"{init.relative_to(PACKAGE)}: no docstring on imports"
        )
