"""The declared core dependencies are the ones the code imports, and each is pinned in constraints.txt."""
from __future__ import annotations

import ast
import re
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def _imported_top_level() -> set[str]:
    found: set[str] = set()
    for path in [*(ROOT / "tui").rglob("*.py"), *(ROOT / "runners").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found


def test_every_core_dependency_is_imported_and_pinned() -> None:
    deps = [_name(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    modules_of: dict[str, set[str]] = {}
    for module, dists in packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    imported = _imported_top_level()
    unused = [d for d in deps if not modules_of.get(d, set()) & imported]
    assert not unused, f"declared in pyproject.toml but imported nowhere in tui/ or runners/: {unused}"
    pins = {_name(line) for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line}
    assert not [d for d in deps if d not in pins], "every core dependency is pinned in constraints.txt"
    assert "google-crc32c" in deps  # the TensorBoard reader's C checksum
