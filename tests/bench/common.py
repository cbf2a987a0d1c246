"""Shared pieces of the benchmarks: realistic dotfile trees, timing, result rows.

Every benchmark script prints its own table and, when ``QGITCONF_BENCH_OUT`` names a
file, appends one JSON line per row to it so ``tests/bench/run.py`` can print the
combined table of ``make bench``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "b@x",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "b@x",
}


def compile_package() -> None:
    """Byte-compile qgitconf first, as an installed package is.

    With ``PYTHONDONTWRITEBYTECODE`` set (CI images often set it) and no ``.pyc`` in a
    fresh clone, every Python process would compile every module it imports again, and
    the start-up rows would measure the compiler.
    """
    import compileall

    import qgitconf

    compileall.compile_dir(Path(qgitconf.__file__).parent, quiet=1)


ROOT = Path(__file__).resolve().parents[2]
BENCH_VENV = ROOT / "build" / "bench-venv"


def installed() -> Path:
    """The ``bin`` directory of qgitconf installed as a package is (not editable).

    The development venv's editable install puts a finder on ``sys.meta_path`` from a
    ``.pth`` file: 10-12 ms of ``pathlib``, ``re`` and ``urllib.parse`` in every
    process, which no installed copy pays.  So the benchmarks install the source tree
    the way ``make install`` does (a wheel built offline, ``pip install --prefix``)
    into ``build/bench-venv`` - a venv of the system's ``/usr/bin/python3`` (of the
    same minor version as the development venv's) whose only ``.pth`` is a
    plain path line to the development venv's site-packages (dulwich, click,
    python-gnupg; a path line runs no code, and the ``.pth`` files found there are not
    read) - byte-compiled, with the entry points' first line ``#!python -I`` as the
    packages ship them.  Rebuilt on every run (a few seconds), from the working tree.
    """
    py = BENCH_VENV / "bin" / "python"
    if not py.exists():
        shutil.rmtree(BENCH_VENV, ignore_errors=True)
        # The system's interpreter (as packages install): the timed processes run as
        # the bench user, who may not reach a development interpreter under /root.
        base = Path("/usr/bin/python3")
        if not base.exists():
            base = Path(sys.base_prefix) / "bin" / "python3"
        run([str(base), "-m", "venv", "--without-pip", str(BENCH_VENV)])
    site = next((BENCH_VENV / "lib").glob("python3*/site-packages"))
    dev_site = next(
        Path(p) for p in sys.path if p.endswith("site-packages") and "bench-venv" not in p
    )
    (site / "_qgitconf_bench_deps.pth").write_text(f"{dev_site}\n")
    for old in site.glob("qgitconf*"):
        shutil.rmtree(old, ignore_errors=True)
    run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--ignore-installed", "--no-warn-script-location",
         "--prefix", str(BENCH_VENV), str(ROOT)],
        cwd=str(ROOT),
    )  # fmt: skip
    for name in ("qgitconf", "qgitconf-service"):
        script = BENCH_VENV / "bin" / name
        lines = script.read_text().splitlines(keepends=True)
        lines[0] = f"#!{py} -I\n"
        script.write_text("".join(lines))
    import compileall

    compileall.compile_dir(site / "qgitconf", quiet=1)
    return BENCH_VENV / "bin"


BENCH_USER = "qgcbench"
QUBE_NAME = "personal"
_NS_ENV = "QGITCONF_BENCH_NAMESPACE"
# QubesDB as the target qube's: its name, nothing else (the pin is in target.toml); one
# key, or ``-f KEY...`` as the Receive service asks (``KEY = VALUE`` for each key found,
# exit 1 when one is missing: qubesdb-read's own behaviour)
_QUBESDB_READ = f"""#!/bin/sh
full=0
if [ "$1" = "-f" ]; then full=1; shift; fi
rc=0
for key in "$@"; do
  case "$key" in
    /name) if [ $full = 1 ]; then echo "/name = {QUBE_NAME}"; else echo {QUBE_NAME}; fi ;;
    *) if [ $full = 1 ]; then rc=1; else exit 2; fi ;;
  esac
done
exit $rc
"""


def in_target_namespace(module: str, argv: list[str]) -> int | None:
    """Run this benchmark in a private mount namespace in which the machine looks like
    a target qube to qgitconf: a ``qubesdb-read`` that answers ``/name`` (the agent
    learns its name only from QubesDB, DESIGN rule 12) on the system PATH, in a
    directory bound over ``/usr/local/sbin`` for this process tree only.

    Returns None inside the namespace (carry on), else the exit status of the run
    inside it.  Needs root and ``unshare``; where they are missing, it carries on
    as is (the receive rows then fail with no-qubesdb).
    """
    stub_dir = os.environ.get(_NS_ENV)
    if stub_dir:
        if not Path("/usr/local/sbin/qubesdb-read").exists():
            run(["mount", "--bind", stub_dir, "/usr/local/sbin"])
        return None
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    stub = Path(tempfile.mkdtemp(prefix="qgc-qubesdb-"))
    try:
        stub.chmod(0o755)
        (stub / "qubesdb-read").write_text(_QUBESDB_READ)
        (stub / "qubesdb-read").chmod(0o755)
        env = dict(os.environ, **{_NS_ENV: str(stub)})
        cmd = ["unshare", "--mount", "--propagation", "private", sys.executable, "-m", module]
        return subprocess.run([*cmd, *argv], env=env, check=False).returncode
    finally:
        shutil.rmtree(stub, ignore_errors=True)


def bench_user(home: Path) -> tuple[int, int]:
    """The uid and gid of the user the timed processes of a target qube run as, with
    ``home`` as its home directory in the password database (created or moved here).

    ``qgitconf-service`` takes $HOME from the password database, never from the
    environment (DESIGN rule 12), so a whole-process receive needs a user whose home
    is the benchmark's.  The processes are started as that user directly
    (``subprocess`` ``user=``/``group=``: no ``su`` or ``sudo`` process in the timing).
    Needs root; the user is a system user without a login shell.
    """
    import pwd

    try:
        entry = pwd.getpwnam(BENCH_USER)
    except KeyError:
        run(["useradd", "--system", "--no-create-home", "--home-dir", str(home),
             "--shell", "/usr/sbin/nologin", BENCH_USER])  # fmt: skip
        entry = pwd.getpwnam(BENCH_USER)
    if entry.pw_dir != str(home):
        run(["usermod", "--home", str(home), BENCH_USER])
    return entry.pw_uid, entry.pw_gid


def give(path: Path, ids: tuple[int, int]) -> None:
    """``chown -R`` ``path`` to ``ids`` (untimed setup)."""
    run(["chown", "-R", f"{ids[0]}:{ids[1]}", str(path)])


def bench_python() -> str:
    """The bench venv's interpreter (the references' ``python3``)."""
    return str(BENCH_VENV / "bin" / "python")


def syncfs_dir(path: Path) -> None:
    """``syncfs`` of the filesystem holding ``path`` (the floors' flush; the harness's
    own, so that it runs against any version of qgitconf)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def settle(seconds: float = 3.0) -> None:
    """``sync``, then wait: let writeback and the filesystem's freed inodes settle
    before a row is timed (ext4 creates files far slower right after many deletions)."""
    os.sync()
    time.sleep(seconds)


class Trash:
    """Where replaced trees go during a row: moved aside by ``rename`` (cheap, no
    freed inodes while timing), deleted after the row's loop, then ``settle``."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "trash"
        self.dir.mkdir(exist_ok=True)
        self.n = 0

    def put(self, path: Path) -> None:
        if path.exists() or path.is_symlink():
            self.n += 1
            path.rename(self.dir / str(self.n))

    def empty(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(exist_ok=True)
        settle()


def interleaved(
    runs: int, sides: list[tuple[Callable[[], object], Callable[[], object]]]
) -> list[list[float]]:
    """Times of ``runs`` runs of each ``(setup, fn)`` side, the sides taken in turn run
    by run (so a change in the machine's load hits all alike), each timed run after
    its untimed setup and a ``sync`` (neither side pays for another's writeback)."""
    times: list[list[float]] = [[] for _ in sides]
    for _ in range(runs):
        for (setup, fn), out in zip(sides, times, strict=True):
            setup()
            os.sync()
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return times


def spread(times: list[float]) -> str:
    """``min-max`` of a sample, in ms."""
    return f"{min(times) * 1000:.0f}-{max(times) * 1000:.0f}"


def paired_medians(
    runs: int,
    ours: tuple[Callable[[], object], Callable[[], object]],
    ref: tuple[Callable[[], object], Callable[[], object]],
) -> tuple[float, float]:
    """Medians of ``runs`` timings of each ``(setup, fn)``, taken alternately (so a
    change in the machine's load hits both sides), each from a clean page cache state:
    ``sync`` (untimed) after the setup, so neither side pays for the other's writeback."""
    t_ours: list[float] = []
    t_ref: list[float] = []
    for _ in range(runs):
        for (setup, fn), out in ((ours, t_ours), (ref, t_ref)):
            setup()
            os.sync()
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return statistics.median(t_ours), statistics.median(t_ref)


def run(
    cmd: list[str], env: Mapping[str, str] | None = None, **kw: Any
) -> subprocess.CompletedProcess[bytes]:
    full = dict(os.environ)
    full.update(env or {})
    proc = subprocess.run(cmd, env=full, check=False, capture_output=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {proc.stderr.decode(errors='replace')[-500:]}")
    return proc


def row(
    scenario: str,
    ours: float,
    reference: float,
    unit: str,
    target: str,
    ok: bool,
    note: str = "",
    *,
    second: tuple[str, float] | None = None,
    floor: float | None = None,
    spreads: str = "",
) -> dict[str, Any]:
    """Record one table row (printed by the caller, collected by run.py).

    ``second`` is a second reference (name, value: e.g. plain ``git checkout`` beside
    durable git), shown as a ratio; ``floor`` what the hardware needs for the same
    work (see docs/benchmarks.md); ``spreads`` the min-max of each side's runs.
    """
    r = {
        "scenario": scenario,
        "qgitconf": ours,
        "reference": reference,
        "unit": unit,
        "ratio": (ours / reference) if reference else None,
        "target": target,
        "ok": ok,
        "note": note,
        "second": list(second) if second else None,
        "floor": floor,
        "spreads": spreads,
    }
    out = os.environ.get("QGITCONF_BENCH_OUT")
    if out:
        with Path(out).open("a") as f:
            f.write(json.dumps(r) + "\n")
    return r


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(
        f"| {'scenario':58} | {'qgitconf':>10} | {'reference':>10} | {'ratio':>6} | "
        f"{'2nd reference':>22} | {'floor':>9} | target | ok | {'spread (ms)':24} |"
    )
    print(
        f"|{'-' * 60}|{'-' * 12}|{'-' * 12}|{'-' * 8}|{'-' * 24}|{'-' * 11}"
        f"|--------|----|{'-' * 26}|"
    )
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        second = ""
        if r.get("second"):
            name, value = r["second"]
            second = f"{name} {fmt(value, r['unit'])} {r['qgitconf'] / value:.2f}x"
        floor = fmt(r["floor"], r["unit"]) if r.get("floor") is not None else ""
        print(
            f"| {r['scenario']:58} | {fmt(r['qgitconf'], r['unit']):>10} | "
            f"{fmt(r['reference'], r['unit']):>10} | {ratio:>6} | {second:>22} | {floor:>9} | "
            f"{r['target']:6} | {'yes' if r['ok'] else 'NO':2} | {r.get('spreads', ''):24} |"
        )


def fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
    if unit == "B":
        return f"{value:.0f} B"
    return f"{value:.1f} {unit}"


def vault(root: Path) -> tuple[Path, str, bytes]:
    """A GnuPG home with a signing key: (home, fingerprint, public key)."""
    home = root / "gnupg"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    home.chmod(0o700)
    uid = "bench vault <vault@bench.invalid>"
    gpg = ["gpg", "--homedir", str(home), "--batch", "--no-tty"]
    run([*gpg, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"])
    listed = run([*gpg, "--with-colons", "--list-secret-keys", uid]).stdout.decode()
    fpr = next(ln.split(":")[9] for ln in listed.splitlines() if ln.startswith("fpr:"))
    pub = run([*gpg, "--armor", "--export", fpr]).stdout
    return home, fpr, pub


def write_tree(work: Path, n_files: int, total_bytes: int, seed: int = 1) -> list[str]:
    """Write ``n_files`` dotfile-like files (~``total_bytes``; 5 % binary) under ``work``."""
    rng = random.Random(seed)
    words = [
        b"alias",
        b"export",
        b"set",
        b"color",
        b"true",
        b"false",
        b"PATH",
        b"bind",
        b"[core]",
        b"editor",
        b"=",
        b"vim",
        b"if",
        b"then",
        b"fi",
        b"#",
    ]
    avg = total_bytes // n_files
    paths = []
    for i in range(n_files):
        d = f".config/app{i % 97}/sub{i % 7}"
        name = f"{d}/file{i:05d}" + (".bin" if i % 20 == 0 else ".conf")
        size = max(16, int(rng.expovariate(1 / avg)))
        if name.endswith(".bin"):
            data = rng.randbytes(size)
        else:
            lines = []
            n = 0
            while n < size:
                line = b" ".join(rng.choice(words) for _ in range(rng.randint(2, 12))) + b"\n"
                lines.append(line)
                n += len(line)
            data = b"".join(lines)[:size]
        p = work / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        paths.append(name)
    return paths


def git(work: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    e = dict(GIT_ENV)
    e.update(env or {})
    return run(["git", "-C", str(work), *args], env=e).stdout.decode().strip()
