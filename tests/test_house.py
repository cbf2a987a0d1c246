"""The house rules of issue 22 that a tool can check, with the debt still left.

Every module of the package at most 500 lines (the risk report's rule tables
excepted), every function at most 80 lines (the demo's script excepted), and
function-local imports only in the entry points.  What does not meet a rule yet is
listed below with its size today; the lists may only shrink: a module or function
not listed that breaks a rule, or a listed one that grew, fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "qgitconf"

MODULE_LINES = 500
FUNCTION_LINES = 80
EXEMPT_MODULES = {"core/risks.py"}  # rule tables
EXEMPT_FUNCTIONS = {"lab/demo.py:story"}  # the demo's script, read top to bottom
ENTRY_POINTS = {"cli.py", "service.py", "entry.py"}

# Debt: the modules still over MODULE_LINES, at most this long.
LONG_MODULES = {
    "cli.py": 1375,
    "lab/real.py": 1371,
}
# Debt: the functions still over FUNCTION_LINES, at most this long.
LONG_FUNCTIONS: dict[str, int] = {}
# Debt: modules other than the entry points with function-local imports, at most this many.
LOCAL_IMPORTS = {
    # configmemo.qubesdb_bytes: configmemo is not on the no-op receive's path
    "agent/config.py": 1,
    # shutil (bz2, lzma: 3-4 ms of the full status, which rarely removes a tree) and the
    # pack reader (a rollback of a file created in place)
    "agent/journal.py": 2,
    "agent/state.py": 1,  # gitpack.compat: the agent repo made once, not on the no-op receive
    "agent/verify.py": 3,  # gitpack.bundle, compat: the no-op receive row needs neither
    "errors.py": 4,
    "fsutil.py": 2,
    "gitpack/bundle.py": 7,
    "gitpack/compat.py": 4,
    "gitpack/packindex.py": 2,
    "gitpack/packread.py": 2,
    "gitpack/store.py": 10,
    "gpg/homes.py": 3,
    "gpg/keys.py": 4,
    "gpg/signing.py": 1,
    "lab/install.py": 1,
    "lab/real_dom0.py": 1,
    "manpage.py": 1,
    "mgmt/hooks.py": 7,
    "mgmt/importing.py": 2,
    "mgmt/publish.py": 4,
    "mgmt/repo.py": 6,
    "mgmt/update.py": 1,
    "ops/doctor.py": 1,  # `import gnupg` is the check that it is installed
    "ops/persist.py": 2,
    "ops/side.py": 3,
    "qubes/qrexec.py": 1,
    "qubes/qubesdb.py": 3,
    "system/fetch.py": 2,
    "system/persist.py": 2,
    "system/step.py": 1,
}


def _modules() -> dict[str, str]:
    return {
        p.relative_to(PACKAGE).as_posix(): p.read_text()
        for p in sorted(PACKAGE.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def _functions(source: str) -> list[tuple[str, int, ast.AST]]:
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            out.append((node.name, (node.end_lineno or node.lineno) - node.lineno + 1, node))
    return out


def test_module_length() -> None:
    over = {
        name: src.count("\n")
        for name, src in _modules().items()
        if src.count("\n") > MODULE_LINES and name not in EXEMPT_MODULES
    }
    assert {n: c for n, c in over.items() if c > LONG_MODULES.get(n, MODULE_LINES)} == {}


def test_function_length() -> None:
    over = {}
    for name, src in _modules().items():
        for func, lines, _node in _functions(src):
            key = f"{name}:{func}"
            if lines > FUNCTION_LINES and key not in EXEMPT_FUNCTIONS:
                over[key] = lines
    assert {k: n for k, n in over.items() if n > LONG_FUNCTIONS.get(k, FUNCTION_LINES)} == {}


def test_local_imports() -> None:
    counts = {}
    for name, src in _modules().items():
        if name in ENTRY_POINTS:
            continue
        n = sum(
            isinstance(sub, ast.Import | ast.ImportFrom)
            for _f, _l, node in _functions(src)
            for sub in ast.walk(node)
        )
        if n:
            counts[name] = n
    assert {k: n for k, n in counts.items() if n > LOCAL_IMPORTS.get(k, 0)} == {}


def test_the_debt_lists_name_what_exists() -> None:
    modules = _modules()
    assert set(LONG_MODULES) <= set(modules)
    assert {k.split(":")[0] for k in LONG_FUNCTIONS} <= set(modules)
    assert set(LOCAL_IMPORTS) <= set(modules)
