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
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qgitconf.agent.commands import target_init
from qgitconf.mgmt.publish import build_update
from qgitconf.mgmt.repo import MgmtRepo
from tests.bench.common import (
    compile_package,
    git,
    paired_medians,
    print_rows,
    row,
    run,
    vault,
    write_tree,
)

STARTUP_RUNS = 15
SERVICE = str(Path(sys.executable).parent / "qgitconf-service")
QGITCONF = str(Path(sys.executable).parent / "qgitconf")


class Setup:
    """A config-mgmt repo with ``n`` files and 50 signed commits, and a pinned target."""

    def __init__(self, root: Path, n_files: int, total: int) -> None:
        self.root = root
        self.gnupg, self.fpr, pub = vault(root)
        self.env = {
            "GNUPGHOME": str(self.gnupg),
            "HOME": str(root / "mgmt"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        }
        (root / "mgmt").mkdir()
        self.repo = MgmtRepo(root / "mgmt" / "qgitconf.git", root / "mgmt", self.env)
        self.repo.init(self.fpr, "gpg")
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

    def fresh_target(self) -> Path:
        home = self.root / "target"
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(self.pristine, home)
        return home

    def receive(self, update: Path, home: Path) -> None:
        with update.open("rb") as f:
            run([SERVICE, "receive"], env=self.target_env(home), stdin=f)

    def git_reference(self) -> None:
        """What plain git does with the same bundle: verify, fetch, verify-commit."""
        from qgitconf.lab.attacks import split_update

        bundle = self.root / "plain.bundle"
        if not bundle.exists():
            bundle.write_bytes(split_update(self.update)[2])
        repo = self.root / "plain.git"
        shutil.rmtree(repo, ignore_errors=True)
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


def first_update_row(n_files: int, total: int, runs: int) -> tuple[dict[str, Any], Setup]:
    root = Path(tempfile.mkdtemp(prefix="qgb-"))
    s = Setup(root, n_files, total)
    homes: list[Path] = []

    def setup() -> None:
        homes.append(s.fresh_target())

    ours, ref = paired_medians(
        runs,
        (setup, lambda: s.receive(root / "update", homes[-1])),
        (lambda: None, s.git_reference),
    )
    ratio = ours / ref
    r = row(
        f"first update, receive+verify+stage, {n_files} files ({len(s.update) >> 20} MiB)",
        ours,
        ref,
        "s",
        "<= 2.0",
        ratio <= 2.0,
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

    # Alternated with the reference, many runs: start-up times on a shared VM drift.
    def nothing() -> None:
        pass

    click = (nothing, lambda: run([sys.executable, "-c", "import click"]))
    noop, click_t = paired_medians(
        STARTUP_RUNS, (nothing, lambda: s.receive(s.root / "update2", target)), click
    )
    version, click_v = paired_medians(
        STARTUP_RUNS, (nothing, lambda: run([QGITCONF, "--version"])), click
    )
    rows.append(
        row(
            "start-up: qgitconf --version",
            version,
            click_v,
            "s",
            "<= 1.5",
            version / click_v <= 1.5,
        )
    )
    rows.append(
        row(
            "start-up: no-op receive (up to date, signature checked)",
            noop,
            click_t,
            "s",
            "<= 1.5",
            noop / click_t <= 1.5,
        )
    )
    return rows


def main(argv: list[str]) -> int:
    compile_package()
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
