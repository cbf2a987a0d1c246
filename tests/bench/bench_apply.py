"""Benchmark: ``qgitconf apply`` and ``qgitconf status`` as a user runs them, against git.

A plain script (not collected by pytest).
Run: ``.venv/bin/python -m tests.bench.bench_apply [--sizes 1000,10000] [--runs 5]``.

For N in 1,000 and 10,000 files (the tree of ``bench_receive``: dotfile-like text with
5 % binary files, about 10 KB a file), a target qube's home is made with the update
received and staged by the installed ``qgitconf-service`` (``common.installed``).
Every side is a whole process; the sides are interleaved run by run, each run after
its untimed setup and a ``sync`` (``common.interleaved``); replaced trees are moved
aside and deleted after the loop (``common.Trash``), then the disk settles.

- **apply**, into a home holding only qgitconf's config and state:
  ``qgitconf apply --yes`` (the installed entry point: config, lock, recovery check,
  plan, journal, files, state records) against ``git checkout COMMIT -- .`` into an
  empty directory from the same pack (the agent repo's copy, with git's isolation
  options), and against **durable git**: the same checkout, then ``sync -f`` on that
  directory (git's work made crash-safe: every byte on stable storage).  Target:
  at most 1.0x durable git; the ratio to plain git shown beside it.
- **status**, no drift (stat cache aged past the racy window): ``qgitconf status``
  against ``git status --porcelain`` in a checkout of the same commit.  At 1,000 files
  the reference is ``git status`` plus the bare interpreter (``python3 -I -S -c
  pass``), as git's 1k status takes about as long as Python takes to start.
  Target: at most 1.5x.

The floor of each row (what the hardware needs, in this process, no process start):
for apply, inflating every blob (zlib, from memory) and its SHA-256 in a second
thread while the directories are made, creating and writing each file, and one
``syncfs`` (``ApplyFloor``) - a fourth side of the same interleaved loop, so that it
meets the disk as the others do; for status, one
``lstat`` per file.  Needs root (the bench user, the mount namespace: see
``common.in_target_namespace``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from qgitconf import sysprog
from qgitconf.agent.vouch import RACY_NS
from tests.bench import bench_receive
from tests.bench.bench_receive import Setup
from tests.bench.common import (
    Trash,
    bench_python,
    bench_user,
    in_target_namespace,
    installed,
    interleaved,
    print_rows,
    row,
    run,
    settle,
    spread,
    syncfs_dir,
)

# the agent's own git options (its big-file threshold is git's default), and the agent
# repo belongs to the bench user while git runs as root
ISOLATED_GIT = ["git", *sysprog.GIT_ISOLATION, "-c", "safe.directory=*"]
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
TOTAL = {1000: 10 << 20, 10_000: 100 << 20}


def agent_repo(home: Path) -> Path:
    return home / ".local/share/qgitconf/repo"


class ApplyFloor:
    """What the hardware needs to apply ``files``, in this process: each blob inflated
    (zlib, from memory) and hashed (SHA-256), its directories and the file created and
    written, then one ``syncfs``.  A side of the interleaved loop (``setup``, ``run``),
    so it meets the disk as the others do: no deletion runs during the loop.

    Written for the least work, as the hardware allows it: the directories made once
    each through the fd of their parent (no ``stat`` of every level as
    ``os.makedirs`` does, no path resolved from the root again), each file created
    ``O_EXCL`` in its directory's fd with one ``write``; inflating and hashing
    (``zlib`` and ``hashlib`` release the GIL) run in a second thread while the
    directories are made, as two cores allow."""

    def __init__(self, files: dict[str, bytes], root: Path, trash: Trash) -> None:
        self.packed = [(p, zlib.compress(d)) for p, d in sorted(files.items())]
        self.dirs = sorted({p.rpartition("/")[0] for p in files} - {""})
        self.out = root / "floor"
        self.trash = trash

    def setup(self) -> None:
        self.trash.put(self.out)
        self.out.mkdir()

    def run(self) -> None:
        import threading

        inflated: list[bytes] = []

        def inflate() -> None:
            for _, z in self.packed:
                data = zlib.decompress(z)
                hashlib.sha256(data).digest()
                inflated.append(data)

        worker = threading.Thread(target=inflate)
        worker.start()
        dir_flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
        fds = {"": os.open(self.out, dir_flags)}
        try:
            for d in self.dirs:
                parts = d.split("/")
                for depth in range(1, len(parts) + 1):
                    here = "/".join(parts[:depth])
                    if here not in fds:
                        parent = fds["/".join(parts[: depth - 1])]
                        os.mkdir(parts[depth - 1], 0o755, dir_fd=parent)
                        fds[here] = os.open(parts[depth - 1], dir_flags, dir_fd=parent)
            worker.join()
            new = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            for (path, _), data in zip(self.packed, inflated, strict=True):
                parent, _, name = path.rpartition("/")
                fd = os.open(name, new, 0o644, dir_fd=fds[parent])
                os.write(fd, data)
                os.close(fd)
            syncfs_dir(self.out)
        finally:
            for fd in fds.values():
                os.close(fd)


def status_floor(home: Path, paths: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        for p in paths:
            os.lstat(home / p)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def tree_files(work: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(work):
        if ".git" in dirnames:
            dirnames.remove(".git")
        for f in filenames:
            full = Path(dirpath) / f
            if full.name == ".git":
                continue
            out[str(full.relative_to(work))] = full.read_bytes()
    return out


def bench(n: int, runs: int, bindir: Path) -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix=f"qgc-apply{n}-"))
    rows = []
    try:
        s = Setup(root, n, TOTAL.get(n, n * 10_000))
        staged = s.fresh_target(root / "staged-home")
        s.receive(root / "update", staged)
        commit = s.tip
        trash = Trash(root)
        home, wt = root / "home", root / "wt"
        qgitconf = str(bindir / "qgitconf")
        index = root / "git-index"

        bench_user(home)  # the bench user's home is now ``home``

        def fresh_home() -> None:
            trash.put(home)
            run(["cp", "-a", str(staged), str(home)])  # owner kept: the bench user's

        def apply() -> None:
            s.as_user([qgitconf, "apply", "--yes"], home)

        def fresh_wt() -> None:
            trash.put(wt)
            wt.mkdir()
            index.unlink(missing_ok=True)

        git_env = {**GIT_ENV, "GIT_INDEX_FILE": str(index)}
        checkout = [
            *ISOLATED_GIT,
            "--git-dir",
            str(agent_repo(staged)),
            "--work-tree",
            str(wt),
            "checkout",
            "-q",
            commit,
            "--",
            ".",
        ]

        def git_checkout() -> None:
            run(checkout, env=git_env)

        def durable_git() -> None:
            run(checkout, env=git_env)
            run(["sync", "-f", str(wt)])

        floor_side = ApplyFloor(tree_files(s.work), root, trash)
        settle()
        t_q, t_g, t_d, t_f = interleaved(
            runs,
            [
                (fresh_home, apply),
                (fresh_wt, git_checkout),
                (fresh_wt, durable_git),
                (floor_side.setup, floor_side.run),
            ],
        )
        trash.empty()
        q, g, d, floor = (statistics.median(t) for t in (t_q, t_g, t_d, t_f))
        rows.append(
            row(
                f"apply {n} files into an empty home vs durable git",
                q,
                d,
                "s",
                "<= 1.0",
                q / d <= 1.0,
                "qgitconf apply --yes; durable git = git checkout + sync -f",
                second=("git checkout", g),
                floor=floor,
                spreads=f"{spread(t_q)} / {spread(t_d)} / {spread(t_g)}",
            )
        )

        # status: the home of one more apply, its stat cache aged past the racy window
        fresh_home()
        apply()
        time.sleep(RACY_NS / 1e9 + 0.2)
        st_cmd = [qgitconf, "status"]
        out = s.as_user(st_cmd, home).stdout.decode()  # refreshes the cache
        if f"managed files: {n}" not in out or "changed locally" in out:
            raise RuntimeError(f"status after apply: {out}")
        checkout_wt = root / "status-wt"
        run(["git", "init", "-q", str(checkout_wt)], env=GIT_ENV)
        run([*ISOLATED_GIT, "-C", str(checkout_wt), "fetch", "-q", str(s.repo.path),
             "refs/heads/personal"], env=GIT_ENV)  # fmt: skip
        run(["git", "-C", str(checkout_wt), "checkout", "-q", "FETCH_HEAD"], env=GIT_ENV)
        git_status = [*ISOLATED_GIT, "-C", str(checkout_wt), "status", "--porcelain"]
        run(git_status, env=GIT_ENV)  # refresh the index once
        time.sleep(RACY_NS / 1e9 + 0.2)
        run(git_status, env=GIT_ENV)
        bare = [bench_python(), "-I", "-S", "-c", "pass"]

        def q_status() -> None:
            out = s.as_user(st_cmd, home).stdout
            if b"changed locally" in out:
                raise RuntimeError(out.decode())

        def g_status() -> None:
            if run(git_status, env=GIT_ENV).stdout:
                raise RuntimeError("git status: not clean")
            if n < 10_000:
                run(bare)

        def nothing() -> None:
            pass

        settle(1)
        t_q, t_g = interleaved(3 * runs, [(nothing, q_status), (nothing, g_status)])
        q, g = statistics.median(t_q), statistics.median(t_g)
        paths = list(tree_files(s.work))
        ref = "git status" + (" + python3 -I -S -c pass" if n < 10_000 else "")
        rows.append(
            row(
                f"status, no drift, {n} files vs {ref}",
                q,
                g,
                "s",
                "<= 1.5",
                q / g <= 1.5,
                "qgitconf status",
                floor=status_floor(home, paths, runs),
                spreads=f"{spread(t_q)} / {spread(t_g)}",
            )
        )
        run(["gpgconf", "--homedir", str(s.gnupg), "--kill", "all"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def main(argv: list[str]) -> int:
    outside = in_target_namespace("tests.bench.bench_apply", argv)
    if outside is not None:
        return outside
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="1000,10000", help="comma-separated file counts")
    ap.add_argument("--quick", action="store_true", help="1,000 files only")
    args = ap.parse_args(argv)
    bindir = installed()
    bench_receive.BIN = bindir
    sizes = [1000] if args.quick else sorted(int(x) for x in args.sizes.split(","))
    rows = []
    for n in sizes:
        rows.extend(bench(n, args.runs + (2 if n < 10_000 else 0), bindir))
    print_rows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
