"""Benchmark: qgitconf apply and status against git checkout and git status.

A plain script (not collected by pytest).  Run: ``.venv/bin/python tests/bench/bench_apply.py``

For N in 1,000 and 10,000 files (a dotfile-like tree: 100-byte to 4 KiB files in
nested directories) it times, medians of 5 runs taken alternately with git's (each
after an untimed ``sync``), in the same run:

- ``apply``: qgitconf's planner and journaled writer (``plan_apply`` + ``execute``,
  the code ``qgitconf apply`` runs after loading its config) into an empty home,
  against ``git checkout`` (``git --work-tree=EMPTY checkout COMMIT -- .``) of the
  same commit from the same repository;
- ``status`` on the 10,000 managed files with a warm stat cache (``home_status``: the
  whole of ``qgitconf status`` after loading its config - lock, recovery check, state
  records, drift scan), against ``git status`` in a checkout of the same tree (index
  refreshed once beforehand).  Status is timed in a fresh Python process of the size
  ``qgitconf status`` has, not in this one: after the 10,000-file apply this process
  holds some 150 MB of objects, and status forks a helper (``homefs.all_unchanged``),
  which costs 1.5 ms from a small process and about 9 ms from such a large one.

Both write into the same filesystem as the temporary directory (``--dir``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qgitconf.agent.apply import execute, plan_apply
from qgitconf.agent.commands import home_status
from qgitconf.agent.homefs import RACY_NS, HomeFS
from qgitconf.agent.state import AgentState
from qgitconf.limits import Limits
from qgitconf.paths import PathRules
from tests.bench.common import compile_package, paired_medians, row


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout


def make_tree(src: Path, n: int) -> None:
    rng = random.Random(n)
    for i in range(n):
        d = src / f".config/app{i % 50:02}/sub{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(100, 4096)
        (d / f"file{i:05}.conf").write_bytes(rng.randbytes(size // 2).hex().encode()[:size])


def make_repo(root: Path, n: int) -> tuple[AgentState, str, Path]:
    """An agent state whose repo holds one commit with ``n`` files; the source tree."""
    src = root / f"src{n}"
    make_tree(src, n)
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="b",
        GIT_AUTHOR_EMAIL="b@x",
        GIT_COMMITTER_NAME="b",
        GIT_COMMITTER_EMAIL="b@x",
        GIT_CONFIG_NOSYSTEM="1",
    )
    git("init", "-q", str(src))
    git("add", "-A", cwd=src, env=env)
    git("-c", "commit.gpgsign=false", "commit", "-qm", "bench", cwd=src, env=env)
    commit = git("rev-parse", "HEAD", cwd=src).strip()
    state = AgentState(root / f"state{n}")
    state.ensure()
    git("--git-dir", str(state.repo_path), "fetch", "-q", str(src), "HEAD:refs/bench")
    return state, commit, src


def reset_state(state: AgentState) -> None:
    for name in ("manifest.json", "originals.json", "generations.json", "state.json"):
        (state.root / name).unlink(missing_ok=True)
    shutil.rmtree(state.root / "journal", ignore_errors=True)


def bench_apply(root: Path, n: int, runs: int) -> tuple[float, float]:
    state, commit, src = make_repo(root, n)
    home = root / f"home{n}"
    wt = root / f"wt{n}"

    def fresh_home() -> None:
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir()
        reset_state(state)

    def do_apply() -> None:
        plan, fs = plan_apply(state, home, PathRules(), Limits(), commit)
        with state.lock(wait=True):
            execute(plan, fs, state, overwrite=False, kind="apply")

    def fresh_wt() -> None:
        shutil.rmtree(wt, ignore_errors=True)
        wt.mkdir()
        (root / "index").unlink(missing_ok=True)

    def do_checkout() -> None:
        env = dict(os.environ, GIT_INDEX_FILE=str(root / "index"))
        git(
            "--git-dir",
            str(src / ".git"),
            "--work-tree",
            str(wt),
            "checkout",
            commit,
            "--",
            ".",
            env=env,
        )

    return paired_medians(runs, (fresh_home, do_apply), (fresh_wt, do_checkout))


def bench_status(root: Path, n: int, runs: int) -> tuple[float, float, int]:
    state = AgentState(root / f"state{n}")
    home = root / f"home{n}"
    src = root / f"src{n}"
    manifest = state.manifest()
    # Age the stat cache past the racy window once (what a later status run sees).
    time.sleep(RACY_NS / 1e9 + 0.1)
    from qgitconf.agent.homefs import stat_entry

    fs = HomeFS(home)
    for path, rec in manifest.items():
        st = fs.lstat(path)
        assert st is not None
        rec["stat"] = stat_entry(st)
    state.save_manifest(manifest)

    def q_status() -> int:
        out = home_status(state, home, {})
        assert out["managed"] == n and not out["drift"], out["drift"][:5]
        return len(out["drift"])

    def rehashed() -> int:
        fs = HomeFS(home)
        return sum(1 for p, r in state.manifest().items() if fs.probe(p, r).hashed)

    git("status", "--porcelain", cwd=src)  # refresh the index once
    t_q, t_g = paired_medians(
        runs,
        (lambda: None, q_status),
        (lambda: None, lambda: git("status", "--porcelain", cwd=src)),
    )
    return t_q, t_g, rehashed()


def status_in_fresh_process(root: Path, n: int, runs: int) -> tuple[float, float, int]:
    """``bench_status`` run by a new Python process (see the module docstring)."""
    cmd = [sys.executable, "-m", "tests.bench.bench_apply", "--status-of", str(root)]
    cmd += ["--sizes", str(n), "--runs", str(runs)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    t_q, t_g, rehashed = json.loads(out.splitlines()[-1])
    return float(t_q), float(t_g), int(rehashed)


def main() -> None:
    compile_package()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="where to build the trees [default: $TMPDIR]")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--sizes",
        default="1000,10000",
        help="comma-separated file counts; status runs on the largest [default: 1000,10000]",
    )
    ap.add_argument("--status-of", help=argparse.SUPPRESS)  # internal: see status_in_fresh_process
    args = ap.parse_args()
    if args.status_of:
        n = int(args.sizes.split(",")[-1])
        print(json.dumps(bench_status(Path(args.status_of), n, args.runs)))
        return
    sizes = sorted(int(x) for x in args.sizes.split(","))
    root = Path(tempfile.mkdtemp(prefix="qgc-bench-", dir=args.dir))
    try:
        print(f"filesystem of {root}: medians of {args.runs} runs")
        print(f"{'operation':<34}{'qgitconf':>10}{'git':>10}{'ratio':>8}")
        for n in sizes:
            q, g = bench_apply(root, n, args.runs)
            label = f"apply {n} files (empty home)"
            print(f"{label:<34}{q:>9.2f}s{g:>9.2f}s{q / g:>7.1f}x")
            row(f"{label} vs git checkout", q, g, "s", "<= 2.0", q / g <= 2.0)
        q, g, rehashed = status_in_fresh_process(root, sizes[-1], 3 * args.runs)  # cheap
        label = f"status {sizes[-1]} files (warm)"
        print(f"{label:<34}{q:>9.2f}s{g:>9.2f}s{q / g:>7.1f}x   ({rehashed} re-hashed)")
        row(f"status, no drift, {sizes[-1]} files vs git status", q, g, "s", "<= 1.5", q / g <= 1.5)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
