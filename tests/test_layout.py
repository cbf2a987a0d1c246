"""The layout blocks of README.md and docs/design.md list exactly the package's modules.

Each block is a tree: a line ``name/`` opens a package at its indentation, a line
``name.py`` is a module of the innermost package opened above it.  A module added,
moved or removed without its line makes this test fail (issue 22).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "qgitconf"


def _modules() -> set[str]:
    return {
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    }


def _block(text: str, heading: str) -> list[str]:
    after = text[text.index(heading) :]
    start = after.index("```\n") + 4
    return after[start : after.index("```", start)].splitlines()


def _listed(lines: list[str]) -> list[str]:
    stack: list[tuple[int, str]] = []
    out: list[str] = []
    for line in lines:
        m = re.match(r"^( *)(\S+)", line)
        if m is None:
            continue
        indent, name = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if name.endswith("/"):
            stack.append((indent, name))
        elif name.endswith(".py") and stack and stack[0][1] == "qgitconf/":
            out.append("".join(n for _i, n in stack[1:]) + name)
    return out


@pytest.mark.parametrize(
    ("doc", "heading"), [("README.md", "## Layout"), ("docs/design.md", "## Code layout")]
)
def test_layout_block_lists_every_module_once(doc: str, heading: str) -> None:
    listed = _listed(_block((ROOT / doc).read_text(), heading))
    assert len(listed) == len(set(listed)), "a module is listed twice"
    modules = _modules()
    assert sorted(set(listed) - modules) == [], "listed, but not in the package"
    assert sorted(modules - set(listed)) == [], "in the package, but not listed"


def test_the_parser_sees_nesting() -> None:
    lines = ["qgitconf/", "  a.py   x", "  sub/", "    b.py  y", "  c.py", "tests/", "  d.py"]
    assert _listed(lines) == ["a.py", "sub/b.py", "c.py"]
