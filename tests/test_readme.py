"""The README names only what exists: its folder table is the tree, and every path it quotes
is a file or folder of the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# Quoted paths under the project's top folders, e.g. `dispatcher/state/library.lua`.
TOP = ("dispatcher", "kamailio", "rtpengine", "bench", "tests", "docs", ".ci")
# What the benchmarks write when they run; not in a fresh clone.
GENERATED = ("bench/results/",)
QUOTED_PATH = re.compile(r"`((?:" + "|".join(re.escape(t) for t in TOP) + r")/[^`\s*{}<>]*)`")


def folder_table() -> list[list[str]]:
    """The backquoted names of each row of the folder table."""
    start = README.index("| folder | holds |")
    rows = []
    for line in README[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append(re.findall(r"`([^`]+)`", line.split("|")[1]))
    return rows


def test_folder_table_is_the_tree() -> None:
    named: set[Path] = set()
    for names in folder_table():
        first = ROOT / names[0]
        base = first.parent if first.suffix else first
        for i, name in enumerate(names):
            path = first if i == 0 else base / name
            assert path.exists(), f"the folder table names {path.relative_to(ROOT)}"
            named.add(path)
    # Every folder of the package and every top folder of the project has its row.
    folders = [p for p in (ROOT / "dispatcher").iterdir() if (p / "__init__.py").exists()]
    folders += [ROOT / t for t in ("kamailio", "bench", "tests") if (ROOT / t).exists()]
    folders += [ROOT / "rtpengine"] if (ROOT / "rtpengine").exists() else []
    missing = [str(p.relative_to(ROOT)) for p in folders if p not in named]
    assert not missing, f"folders without a row in the README's folder table: {missing}"


def test_every_quoted_path_exists() -> None:
    quoted = sorted(p for p in set(QUOTED_PATH.findall(README)) if not p.startswith(GENERATED))
    assert quoted, "the pattern finds the README's paths"
    missing = [path for path in quoted if not (ROOT / path.rstrip("/")).exists()]
    assert not missing, f"the README quotes paths that do not exist: {missing}"
