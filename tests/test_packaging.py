"""The declared dependencies are the ones the code imports (or runs, for launchers), each pinned in constraints.txt."""
from __future__ import annotations

import ast
import re
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

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


# training extras ftui runs as programs rather than imports: the launchers of the strategy table
RUN_AS_PROGRAM = {"deepspeed", "accelerate"}
# training extras that transformers loads for ftui: bitsandbytes behind BitsAndBytesConfig (runners/train/adapters.py)
LOADED_BY_TRANSFORMERS = {"bitsandbytes": "BitsAndBytesConfig"}
# test extras that are commands of `make test`, not imports
TOOLS = {"ruff", "mypy"}


def test_every_extra_is_used() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    modules_of: dict[str, set[str]] = {}
    for module, dists in packages_distributions().items():
        for dist in dists:
            modules_of.setdefault(dist.lower().replace("_", "-"), set()).add(module)
    imported = _imported_top_level()
    unused = [d for d in map(_name, extras["train"]) if d not in RUN_AS_PROGRAM and d not in LOADED_BY_TRANSFORMERS
              and not modules_of.get(d, set()) & imported]
    adapters = (ROOT / "runners" / "train" / "adapters.py").read_text()
    assert all(name in adapters for name in LOADED_BY_TRANSFORMERS.values()), "bitsandbytes is no longer loaded"
    assert not unused, f"training extras imported nowhere in tui/ or runners/: {unused}"
    from runners import strategies

    launchers = {row.launcher for row in strategies.TABLE}
    assert RUN_AS_PROGRAM <= launchers, "a training extra kept as a launcher is no launcher of the strategy table"
    test_imports = {a.name.split(".")[0] for path in (ROOT / "tests").rglob("*.py")
                    for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Import) for a in node.names}
    test_imports |= {node.module.split(".")[0] for path in (ROOT / "tests").rglob("*.py")
                     for node in ast.walk(ast.parse(path.read_text()))
                     if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    makefile = (ROOT / "Makefile").read_text()
    unused_test = [d for d in map(_name, extras["test"])
                   if not (d in TOOLS and f"$(BIN)/{d}" in makefile)
                   and not modules_of.get(d, set()) & test_imports and not d.startswith("pytest-")]
    assert not unused_test, f"test extras neither imported by tests/ nor run by make: {unused_test}"
