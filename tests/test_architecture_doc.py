"""docs/architecture.md shows the layout file for file: every module is on the tree, and every line of the
tree is a file that exists."""
from __future__ import annotations

import re

from tests.conftest import ROOT

DOC = ROOT / "docs" / "architecture.md"


def tree_paths(text: str) -> list[str]:
    """The paths of the first fenced tree in the doc, from its indentation (two spaces a level)."""
    block = text.split("```\n", 2)[1]
    stack: list[str] = []
    paths = []
    for line in block.splitlines():
        match = re.match(r"^( *)(\S+)", line)
        if not match:
            continue
        depth, name = len(match.group(1)) // 2, match.group(2)
        stack = stack[:depth]
        if name.endswith("/"):
            stack.append(name.rstrip("/"))
        else:
            paths.append("/".join([*stack, name]))
    return paths


def test_the_tree_lists_every_module_and_only_modules_that_exist() -> None:
    listed = tree_paths(DOC.read_text())
    on_disk = sorted(str(p.relative_to(ROOT)) for base in ("runners", "tui") for p in (ROOT / base).rglob("*")
                     if p.suffix in (".py", ".tcss") and "__pycache__" not in p.parts)
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert sorted(set(on_disk) - set(listed)) == [], "modules missing from docs/architecture.md"
    assert sorted(set(listed) - set(on_disk)) == [], "docs/architecture.md lists files that do not exist"


def test_the_tree_reader_sees_nesting() -> None:
    doc = "x\n```\na/\n  b.py    text\n  c/\n    d.py\n  e.py\nf.py\n```\n"
    assert tree_paths(doc) == ["a/b.py", "a/c/d.py", "a/e.py", "f.py"]
