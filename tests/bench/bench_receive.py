"""Receive benchmarks against real git, measured side by side in the same run.

Rows:
* first update, receive+verify+stage (1k and 10k files) vs
  ``git bundle verify`` + ``git fetch`` + ``git verify-commit`` of the same bundle;
* one-line change, bytes on the wire vs ``git bundle create`` of that one commit;
* command start-up: ``qgitconf --version`` and a no-op (up-to-date) receive vs
  ``python3 -c "import click"``.

Run: ``.venv/bin/python -m tests.bench.bench_receive [--quick]``.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qgitconf.agent.target import target_init
from qgitconf.mgmt.repo import MgmtRepo
from qgitconf.mgmt.repoedit import init_repo
from qgitconf.mgmt.update import build_update
from tests.bench.common import (
    Trash,
    bench_python,
    bench_user,
    git,
    give,
    in_target_namespace,
    installed,
    interleaved,
    print_rows,
    row,
    run,
    settle,
    spread,
    vault,
    write_tree,
)

STARTUP_RUNS = 15
BIN = Path(sys.executable).parent  # the installed layout once main() ran installed()


def service() -> str:
    return str(BIN / "qgitconf-service")


def qgitconf() -> str:
    return str(BIN / "qgitconf")


class Setup:
    """A config-mgmt repo with ``n`` files and 50 signed commits, and a pinned target."""

    def __init__(self, root: Path, n_files: int, total: int) -> None:
        self.root = root
        root.chmod(0o755)  # the bench user's processes reach their home below it
        self.gnupg, self.fpr, pub = vault(root)
        self.env = {
            "GNUPGHOME": str(self.gnupg),
            "HOME": str(root / "mgmt"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        }
        (root / "mgmt").mkdir()
        self.repo = MgmtRepo(root / "mgmt" / "qgitconf.git", root / "mgmt", self.env)
        init_repo(self.repo, self.fpr, "gpg")
        self.repo.target_add("personal")
        work = self.repo.worktree("personal")
        files = write_tree(work, n_files, total)
        git(work, "add", "-A", env=self.env)
        git(work, "commit", "-q", "-S", "-m", "all files", env=self.env)
        for i in range(49):
            for f in files[i * 5 : i * 5 + 5]:
                with (work / f).open("ab") as fh:
                    fh.write(b"# change %d\n" % i)
            git(work, "commit", "-q", "-a", "-S", "-m", f"change {i}", env=self.env)
        self.work = work
        self.tip = git(work, "rev-parse", "HEAD")
        self.update = build_update(self.repo, "personal", self.tip, 1, None, datetime.now(UTC))
        (root / "update").write_bytes(self.update)
        key = root / "vault.asc"
        key.write_bytes(pub)
        self.pristine = root / "target-pristine"
        target_init(self.pristine, "config-mgmt", key, self.fpr, [])
        self.verify_home = root / "verify-gnupg"
        self.verify_home.mkdir(mode=0o700)
        run(["gpg", "--homedir", str(self.verify_home), "--batch", "--import", str(key)])

    def target_env(self, home: Path) -> dict[str, str]:
        return {
            "HOME": str(home),
            "QGITCONF_QUBE_NAME": "personal",
            "QREXEC_REMOTE_DOMAIN": "config-mgmt",
            "QGITCONF_SYSCONFDIR": str(self.root / "no-etc"),
        }

    def fresh_target(self, home: Path | None = None) -> Path:
        """A copy of the pristine target (``target init`` done) at ``home``, owned by
        the bench user, whose home it becomes."""
        home = home or self.root / "target"
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(self.pristine, home)
        self.ids = bench_user(home)
        give(home, self.ids)
        return home

    def receive(self, update: Path, home: Path) -> None:
        """``qgitconf-service receive`` as the rpc service runs it: the installed entry
        point, as the bench user (whose home ``home`` is: ``fresh_target``)."""
        with update.open("rb") as f:
            self.as_user([service(), "receive"], home, stdin=f)

    def as_user(self, cmd: list[str], home: Path, **kw: Any) -> Any:
        """``cmd`` as the bench user in the target qube ``home``."""
        return run(cmd, env=self.target_env(home), user=self.ids[0], group=self.ids[1], **kw)

    def git_reference(self) -> None:
        """What plain git does with the same update: gpg verify of the statement's
        signature, bundle verify, fetch, verify-commit (the caller moves the last
        run's ``plain.git`` aside)."""
        from qgitconf.lab.attacks import split_update

        bundle = self.root / "plain.bundle"
        if not bundle.exists():  # split once: the parts are what git would be sent
            statement, signature, data = split_update(self.update)
            bundle.write_bytes(data)
            (self.root / "statement").write_bytes(statement)
            (self.root / "statement.sig").write_bytes(signature)
        repo = self.root / "plain.git"
        shutil.rmtree(repo, ignore_errors=True)
        run(["gpg", "--homedir", str(self.verify_home), "--batch", "--quiet", "--verify",
             str(self.root / "statement.sig"), str(self.root / "statement")])  # fmt: skip
        run(["git", "init", "-q", "--bare", str(repo)])
        run(["git", "--git-dir", str(repo), "bundle", "verify", "-q", str(bundle)])
        run(
            [
                "git",
                "--git-dir",
                str(repo),
                "fetch",
                "-q",
                str(bundle),
                "refs/heads/personal:refs/heads/personal",
            ]
        )
        run(
            ["git", "--git-dir", str(repo), "verify-commit", self.tip],
            env={"GNUPGHOME": str(self.verify_home)},
        )


def receive_floor(s: Setup, runs: int) -> float:
    """What the hardware needs to receive the update (median of ``runs``, in process):
    inflating every blob of the tree (zlib, from memory), its SHA-1 and SHA-256, and
    writing the update's bytes to a file with one fsync."""
    import hashlib
    import os
    import statistics
    import time
    import zlib

    blobs = [zlib.compress(p.read_bytes()) for p in s.work.rglob("*") if p.is_file()
             and ".git" not in p.relative_to(s.work).parts]  # fmt: skip
    out = s.root / "floor.pack"
    times = []
    for _ in range(runs):
        out.unlink(missing_ok=True)
        os.sync()
        t = time.perf_counter()
        for z in blobs:
            data = zlib.decompress(z)
            hashlib.sha1(data).digest()
            hashlib.sha256(data).digest()
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, s.update)
        os.fsync(fd)
        os.close(fd)
        times.append(time.perf_counter() - t)
    out.unlink(missing_ok=True)
    return statistics.median(times)


def first_update_row(n_files: int, total: int, runs: int) -> tuple[dict[str, Any], Setup]:
    root = Path(tempfile.mkdtemp(prefix="qgb-"))
    s = Setup(root, n_files, total)
    trash = Trash(root)

    def setup() -> None:
        trash.put(root / "target")
        s.fresh_target()

    def git_setup() -> None:
        trash.put(root / "plain.git")

    s.git_reference()  # untimed: splits the update once
    settle()
    t_q, t_g = interleaved(
        runs, [(setup, lambda: s.receive(root / "update", root / "target")),
               (git_setup, s.git_reference)]
    )  # fmt: skip
    trash.empty()
    ours, ref = statistics.median(t_q), statistics.median(t_g)
    ratio = ours / ref
    r = row(
        f"first update, receive+verify+stage, {n_files} files ({len(s.update) >> 20} MiB)",
        ours,
        ref,
        "s",
        "<= 2.0",
        ratio <= 2.0,
        "qgitconf-service receive vs gpg verify + bundle verify + fetch + verify-commit",
        floor=receive_floor(s, runs),
        spreads=f"{spread(t_q)} / {spread(t_g)}",
    )
    return r, s


def one_line_change_rows(s: Setup) -> list[dict[str, Any]]:
    rows = []
    first = s.tip
    target = s.fresh_target()
    s.receive(s.root / "update", target)
    with (s.work / ".config/app1/sub1/file00001.conf").open("ab") as fh:
        fh.write(b"alias ll='ls -l'\n")
    git(s.work, "commit", "-q", "-a", "-S", "-m", "one line", env=s.env)
    tip = git(s.work, "rev-parse", "HEAD")
    update = build_update(s.repo, "personal", tip, 2, first, datetime.now(UTC))
    plain = s.root / "one.bundle"
    run(
        [
            "git",
            "--git-dir",
            str(s.repo.path),
            "bundle",
            "create",
            "-q",
            str(plain),
            f"{first}..refs/heads/personal",
        ]
    )
    size_git = plain.stat().st_size
    rows.append(
        row(
            "one-line change, update size on the wire",
            len(update),
            size_git,
            "B",
            "<= 1.0 + 2 KB",
            len(update) <= size_git + 2048,
        )
    )
    (s.root / "update2").write_bytes(update)
    s.receive(s.root / "update2", target)  # now staged; the next receive is a no-op

    # Interleaved with the reference, many runs: start-up times on a shared VM drift.
    def nothing() -> None:
        pass

    py = bench_python()
    click = (nothing, lambda: run([py, "-I", "-c", "import click"]))
    bare = (nothing, lambda: run([py, "-I", "-S", "-c", "pass"]))
    t_noop, t_click, t_bare = interleaved(
        STARTUP_RUNS,
        [(nothing, lambda: s.receive(s.root / "update2", target)), click, bare],
    )
    t_version, t_click2 = interleaved(
        STARTUP_RUNS, [(nothing, lambda: run([qgitconf(), "--version"])), click]
    )
    floor = statistics.median(t_bare)
    for name, t_q, t_r in (
        ("start-up: qgitconf --version", t_version, t_click2),
        ("start-up: no-op receive (up to date, signature checked)", t_noop, t_click),
    ):
        q, r = statistics.median(t_q), statistics.median(t_r)
        rows.append(
            row(
                name,
                q,
                r,
                "s",
                "<= 1.5",
                q / r <= 1.5,
                'reference: python3 -I -c "import click"; floor: python3 -I -S -c pass',
                floor=floor,
                spreads=f"{spread(t_q)} / {spread(t_r)}",
            )
        )
    return rows


def main(argv: list[str]) -> int:
    outside = in_target_namespace("tests.bench.bench_receive", argv)
    if outside is not None:
        return outside
    global BIN
    BIN = installed()
    quick = "--quick" in argv
    sizes = [(1000, 10 << 20)] if quick else [(1000, 10 << 20), (10_000, 100 << 20)]
    rows = []
    setups = []
    for n, total in sizes:
        # The 1,000-file row is cheap and, being short, the noisier: more runs.
        r, s = first_update_row(n, total, 1 if quick else (9 if n < 10_000 else 5))
        rows.append(r)
        setups.append(s)
    rows.extend(one_line_change_rows(setups[0]))
    print_rows(rows)
    for s in setups:
        run(["gpgconf", "--homedir", str(s.gnupg), "--kill", "all"])
        shutil.rmtree(s.root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
