"""The layering contract: imports flow one way through the stages, and the UI never loads a training library.

runners/ root holds the shared contracts; each stage (plan, launch, train, watch) imports the root and the
stages before it, never after; tui/ sits on top and nothing in runners/ imports it. Runner modules and sources
do not import their siblings: what two of them share lives in runners/train/common.py, the sources' registry
(runners/watch/sources/__init__.py), records.py or formats/. The checks read the source (every import, also
the ones inside functions), so a lazy import cannot slip past them.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

STAGES = ("plan", "launch", "train", "watch", "results")
ALLOWED = {  # layer -> layers it may import
    "root": {"root"},
    "plan": {"root", "plan"},
    "launch": {"root", "plan", "launch"},
    "train": {"root", "plan", "train"},
    "watch": {"root", "watch"},
    # after training: export, and what reads a finished run; train too, because `ftui eval` reruns the runner's own
    # evaluation code (its datasets, trainer classes, losses and evaluators) on a held-out file: the same computation
    "results": {"root", "plan", "train", "watch", "results"},
    "tui": {"root", *STAGES, "tui"},
}
# what the UI process must never load, not even through a module it imports at start-up
HEAVY = {"torch", "transformers", "deepspeed", "peft", "trl", "accelerate", "datasets", "bitsandbytes",
         "sentence_transformers", "simpletransformers", "wandb", "tensorboard", "tensorflow"}
TRAIN_SHARED = {"runners.train.common", "runners.train.callback", "runners.train.entry", "runners.train.adapters"}
SOURCES = "runners.watch.sources"
SOURCES_SHARED = {SOURCES, f"{SOURCES}.records"}


@dataclass(frozen=True)
class Import:
    module: str      # the importing module, dotted
    target: str      # what it imports, dotted (a module, or a name inside one)
    line: int
    at_start: bool   # runs when the module is imported (not inside a function, not under TYPE_CHECKING)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, source: str, is_package: bool = False) -> list[Import]:
    out: list[Import] = []

    def visit(node: ast.AST, at_start: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and _type_checking(child):
                visit(child, False)
            elif isinstance(child, ast.Import):
                out.extend(Import(module, a.name, child.lineno, at_start) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: resolve against this module's package
                    pkg = module.split(".") if is_package else module.split(".")[:-1]
                    pkg = pkg[: len(pkg) - child.level + 1]
                    base = ".".join([*pkg, base] if base else pkg)
                out.extend(Import(module, f"{base}.{a.name}", child.lineno, at_start) for a in child.names)
            else:
                visit(child, at_start)

    visit(ast.parse(source), True)
    return out


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for base in ("runners", "tui") for p in sorted((ROOT / base).rglob("*.py"))}


MODULES = all_modules()


def resolve(target: str) -> str | None:
    """The first-party module a dotted import target lands in (``runners.plan.memory.GIB`` -> its module)."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "tui":
        return "tui"
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else "root"


def all_imports() -> list[Import]:
    return [i for name, path in MODULES.items()
            for i in imports_of(name, path.read_text(), path.name == "__init__.py")]


def layer_violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        target = resolve(imp.target)
        if target is None or target == imp.module:
            continue
        if layer(target) not in ALLOWED[layer(imp.module)]:
            bad.append(f"{imp.module}:{imp.line} ({layer(imp.module)}) imports {target} ({layer(target)})")
    return bad


def sibling_violations(imports: list[Import]) -> list[str]:
    """A runner or a source importing a sibling instead of the shared module (its own helpers, named after it
    with an underscore, are its own)."""
    bad = []
    for imp in imports:
        target = resolve(imp.target)
        if target is None or target == imp.module:
            continue
        own = target.startswith(imp.module + "_") or imp.module.startswith(target + "_")
        if (imp.module.startswith("runners.train.") and target.startswith("runners.train.")
                and imp.module not in TRAIN_SHARED and target not in TRAIN_SHARED and not own):
            bad.append(f"{imp.module}:{imp.line} imports the sibling runner {target}; share it through runners/train/common.py")
        if (imp.module.startswith(SOURCES + ".") and target.startswith(SOURCES + ".")
                and not imp.module.startswith(f"{SOURCES}.formats") and target not in SOURCES_SHARED
                and not target.startswith(f"{SOURCES}.formats") and not own):
            bad.append(f"{imp.module}:{imp.line} imports the sibling source {target}; share it through records.py or formats/")
    return bad


def heavy_at_start(imports: list[Import], roots: list[str]) -> list[str]:
    """Chains from a root module to a training library, following only the imports that run at import time."""
    by_module: dict[str, list[Import]] = {}
    for imp in imports:
        if imp.at_start:
            by_module.setdefault(imp.module, []).append(imp)
    bad = []
    for root in roots:
        seen, stack = {root}, [(root, [root])]
        while stack:
            mod, chain = stack.pop()
            # importing a.b.c runs a/__init__ and a/b/__init__ first
            parents = [".".join(mod.split(".")[:i]) for i in range(1, mod.count(".") + 1)]
            for imp in [*by_module.get(mod, [])] + [Import(mod, p, 0, True) for p in parents]:
                target = resolve(imp.target)
                if target is None:
                    if imp.target.split(".")[0] in HEAVY:
                        bad.append(" -> ".join([*chain, imp.target]) + f" (line {imp.line})")
                elif target not in seen:
                    seen.add(target)
                    stack.append((target, [*chain, target]))
    return bad


def test_every_module_sits_in_a_layer_and_imports_only_the_layers_below() -> None:
    assert {layer(m) for m in MODULES} <= {"root", *STAGES, "tui"}
    assert {"root", "plan", "launch", "train", "watch", "tui"} <= {layer(m) for m in MODULES}
    assert layer_violations(all_imports()) == []


def test_runners_and_sources_share_through_the_shared_modules_not_each_other() -> None:
    assert sibling_violations(all_imports()) == []


def test_the_ui_loads_no_training_library() -> None:
    imports = all_imports()
    tui_modules = [m for m in MODULES if m.startswith("tui")]
    assert heavy_at_start(imports, tui_modules) == []
    direct = [f"{i.module}:{i.line} imports {i.target}" for i in imports
              if i.module.startswith("tui") and i.target.split(".")[0] in HEAVY]
    assert direct == [], "a UI module imports a training library, even inside a function"


@pytest.mark.parametrize("module, source, problem", [
    ("runners.spec", "from runners.plan import memory\n", layer_violations),
    ("runners.plan.memory", "def f():\n    from runners.launch import commands\n", layer_violations),
    ("runners.watch.history", "from runners.train.common import RankInfo\n", layer_violations),
    ("runners.events", "import tui.app\n", layer_violations),
    ("runners.results.export", "from runners.launch import control\n", layer_violations),
    ("runners.train.hf", "from runners.results import evaluate\n", layer_violations),
    ("runners.train.sentence", "from runners.train.hf import load_model\n", sibling_violations),
    ("runners.watch.sources.pid", "from runners.watch.sources.ftui_run import FtuiRunSource\n", sibling_violations),
])
def test_the_checks_catch_a_planted_violation(module: str, source: str, problem) -> None:
    """The contract is only worth something if it fails: each planted import must be reported."""
    assert problem(imports_of(module, source)) != []


def test_the_start_up_check_follows_chains_and_skips_lazy_imports() -> None:
    planted = [Import("tui.x", "runners.plan.memory", 1, True), Import("runners.plan.memory", "torch", 3, True),
               Import("tui.y", "torch", 5, False)]
    chains = heavy_at_start(planted, ["tui.x", "tui.y"])
    assert chains == ["tui.x -> runners.plan.memory -> torch (line 3)"]
