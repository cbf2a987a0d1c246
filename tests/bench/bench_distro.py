"""Receive on a template's own libraries (issue 20): bench_receive's first-update rows,
run inside a clean Debian 13 with the .deb installed from its repositories.

Debian 13 is the slowest template there is for receive: Python 3.13 with Debian's
dulwich 0.22.7, which ships no C extension (pure Python), python-gnupg 0.5.4, git 2.47.
The system is the one ``make test-install`` builds (``tests.cleaninstall.run``:
mmdebstrap, cached; the .deb installed with plain apt); the rows are
``bench_receive.first_update_row`` run there by the system's ``/usr/bin/python3``
against the installed ``/usr/bin/qgitconf-service``, each against plain git on the same
bundle in the same system, with the same target (at most 2.0 times git).

Run (root): ``.venv/bin/python -m tests.bench.bench_distro [--quick] [--deb FILE]
[SUITE]``; ``--quick`` runs only the 1,000-file row.  Each row is printed and, with
``QGITCONF_BENCH_OUT``, appended there as the other benchmarks' rows are.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.bench.common import print_rows, row
from tests.cleaninstall.run import (
    ROOT,
    SUITES,
    TARGET,
    WORK,
    Flow,
    Result,
    StepFailed,
    System,
    base_tarball,
    build_deb,
    expect,
    remove_system,
)

LABELS = {
    "bookworm": "Debian 12 (dulwich 0.21.2 C, Python 3.11)",
    "trixie": "Debian 13 (dulwich 0.22.7 pure Python, Python 3.13)",
}
# Run inside the system, as its target user: the rows go to stdout, one JSON line each.
INNER = """
import sys
sys.path.insert(0, "/srv/bench")
from tests.bench.bench_distro import inner
sys.exit(inner({quick}))
"""


def inner(quick: bool) -> int:
    """The first-update rows, inside the system, as the target user (``$HOME`` its home).

    As ``bench_receive.first_update_row``, but the target is the user's own home: the
    installed service takes ``$HOME`` from the password database (DESIGN rule 12), so
    each run empties the home and copies the pinned, never-updated target into it.
    """
    import os

    from tests.bench.bench_receive import Setup
    from tests.bench.common import paired_medians

    home = Path(os.environ["HOME"])

    class HomeSetup(Setup):
        def fresh_target(self) -> Path:
            for p in home.iterdir():
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
            shutil.copytree(self.pristine, home, dirs_exist_ok=True)
            self.ids = (os.getuid(), os.getgid())  # this system's user, whose home it is
            return home

    sizes = [(1000, 10 << 20)] if quick else [(1000, 10 << 20), (10_000, 100 << 20)]
    for n_files, total in sizes:
        root = Path(tempfile.mkdtemp(prefix="qgb-"))
        s = HomeSetup(root, n_files, total)
        runs = 1 if quick else (9 if n_files < 10_000 else 5)
        ours, ref = paired_medians(
            runs,
            (s.fresh_target, lambda s=s, root=root: s.receive(root / "update", home)),
            (lambda: None, s.git_reference),
        )
        r = row(
            f"first update, receive+verify+stage, {n_files} files ({len(s.update) >> 20} MiB)",
            ours,
            ref,
            "s",
            "<= 2.0",
            ours / ref <= 2.0,
        )
        print(json.dumps(r), flush=True)
        subprocess.run(["gpgconf", "--homedir", str(s.gnupg), "--kill", "all"], check=False)
        shutil.rmtree(root, ignore_errors=True)
    return 0


def bench_rows(suite: str, deb: Path, quick: bool) -> list[dict[str, Any]]:
    """Install the .deb in a clean ``suite`` and run the first-update rows there."""
    WORK.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"bench-{suite}-", dir=WORK))
    try:
        tar, _ = base_tarball(suite)
        subprocess.run(["tar", "-xf", str(tar), "-C", str(root)], check=True, timeout=300)
        system = System(suite, root)
        flow = Flow(system, deb, Result(suite))
        flow.install()
        flow.installed()  # the QubesDB stand-in (/name = personal), the users
        dest = root / "srv/bench/tests"
        for rel in (
            "__init__.py",
            "bench/__init__.py",
            "bench/common.py",
            "bench/bench_receive.py",
            "bench/bench_distro.py",
            "cleaninstall/__init__.py",
            "cleaninstall/run.py",
        ):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / "tests" / rel, dest / rel)
        code = INNER.format(quick=quick)
        proc = system.run(["python3", "-c", code], user=TARGET, timeout=3600)
        expect(proc)
        inner = [json.loads(line) for line in proc.out.splitlines() if line.startswith("{")]
        versions = ", ".join(
            f"{k} {v.split(' ')[0]}" for k, v in flow.r.versions.items() if k != "qgitconf"
        )
        return [
            row(
                f"{LABELS[suite]}: {r['scenario'].removeprefix('first update, ')}",
                r["qgitconf"],
                r["reference"],
                r["unit"],
                r["target"],
                r["ok"],
                versions,
            )
            for r in inner
        ]
    finally:
        remove_system(root)


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    args = [a for a in argv if a != "--quick"]
    deb = None
    if "--deb" in args:
        i = args.index("--deb")
        deb = Path(args[i + 1]).resolve()
        del args[i : i + 2]
    suites = args or ["trixie"]
    if any(s not in SUITES for s in suites):
        print(f"suites: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    try:
        deb = deb or build_deb()
        rows = [r for s in suites for r in bench_rows(s, deb, quick)]
    except StepFailed as e:
        print(f"bench_distro: {e}", file=sys.stderr)
        return 1
    print_rows(rows)
    for r in rows:
        print(f"  {r['note']}")
    return 0 if rows and all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
