"""`make bench-compare BEFORE=REV`: the benchmarks of an earlier commit and of this tree
in one run, script by script in turn, and one table of both.

Issue 22 asks that a restructuring leaves every ``make bench`` row no worse, shown by
the table before and after *from the same run*: the machine's load drifts over the
half hour a full ``make bench`` takes, so two separate runs compare the machine as
much as the code.  Here each benchmark script runs first in a worktree of ``REV``
(``build/bench-before``, made with ``git worktree add --detach``) and then in this
tree, alternately, each with its own installed copy (``common.installed`` builds it
from the tree the script runs in) and its own reference timings.  Rows are matched by
scenario; the ratio to the row's own reference is what to compare, since it cancels
the load each side met.  Exits 1 if a row of this tree is worse than REV's by more
than ``SLACK`` both in ratio and in its own time (a row whose reference is qgitconf
itself, as parallel vs sequential publish, has its ratio rise when the reference gets
faster).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qgitconf.lab.build import source_dir
from tests.bench.common import ROOT
from tests.bench.run import SCRIPTS

BEFORE_DIR = ROOT / "build" / "bench-before"
SLACK = 0.10  # a ratio more than 10 % above REV's counts as worse (the runs' noise)


def worktree(rev: str) -> Path:
    """``build/bench-before`` checked out at ``rev`` (made or moved there)."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not (BEFORE_DIR / ".git").exists():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(BEFORE_DIR), sha],
            check=True,
        )
    else:
        subprocess.run(
            ["git", "-C", str(BEFORE_DIR), "checkout", "-q", "--detach", sha], check=True
        )
    return BEFORE_DIR


def run_script(tree: Path, name: str, out: Path, argv: list[str]) -> None:
    """One benchmark script of ``tree``, its rows appended to ``out``."""
    env = dict(os.environ, QGITCONF_BENCH_OUT=str(out), PYTHONPATH=str(tree))
    src = source_dir()  # the worktree in build/ has no ../shared beside it
    if src is not None:
        env.setdefault("QUBES_SRC_DIR", str(src))
    # -m with cwd=tree: the tree's own tests.bench and qgitconf come first on sys.path
    subprocess.run([sys.executable, "-m", f"tests.bench.{name}", *argv], cwd=tree, env=env)


def rows_of(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    return {r["scenario"]: r for r in map(json.loads, path.read_text().splitlines())}


def compare(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> bool:
    """Print the joined table; False if a row of ``after`` is worse by more than SLACK."""
    print(f"| {'scenario':58} | {'before':>18} | {'after':>18} | after/before | worse |")
    print(f"|{'-' * 60}|{'-' * 20}|{'-' * 20}|--------------|-------|")
    fine = True
    for scenario in [*before, *(s for s in after if s not in before)]:
        b, a = before.get(scenario), after.get(scenario)
        cells = [_cell(r) for r in (b, a)]
        change, worse = "", ""
        if b and a and b["ratio"] and a["ratio"]:
            change = f"{a['ratio'] / b['ratio']:.2f}"
            # worse: the ratio and qgitconf's own time both (a row whose reference is
            # qgitconf too, as parallel vs sequential publish, has its ratio rise when
            # the reference gets faster)
            if a["ratio"] > b["ratio"] * (1 + SLACK) and a["qgitconf"] > b["qgitconf"] * (
                1 + SLACK
            ):
                worse, fine = "yes", False
        print(f"| {scenario:58} | {cells[0]:>18} | {cells[1]:>18} | {change:>12} | {worse:5} |")
    return fine


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "-"
    scale, unit = (1000, "ms") if r["unit"] == "s" else (1, r["unit"])
    ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
    return f"{r['qgitconf'] * scale:.0f} {unit} {ratio}"


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m tests.bench.compare REV [SCRIPT...]", file=sys.stderr)
        return 2
    rev, only = argv[0], argv[1:]
    before = worktree(rev)
    work = Path(tempfile.mkdtemp(prefix="qgbench-compare-"))
    t0 = time.time()
    for name in only or SCRIPTS:
        for label, tree in (("before", before), ("after", ROOT)):
            if not (tree / "tests" / "bench" / f"{name}.py").exists():
                print(f"(skipping {name} {label}: not present)")
                continue
            print(f"== {name} ({label}: {tree})", flush=True)
            run_script(tree, name, work / f"{label}.jsonl", [])
    print(f"\n== before ({rev}) and after ({time.time() - t0:.0f} s, {os.cpu_count()} cores)")
    fine = compare(rows_of(work / "before.jsonl"), rows_of(work / "after.jsonl"))
    return 0 if fine else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
