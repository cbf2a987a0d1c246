"""Benchmark: ``publish`` to N lab targets at once vs N sequential single-target publishes.

A plain script (not collected by pytest)::

    .venv/bin/python tests/bench/bench_publish.py [--targets 20] [--rounds 2] [--jobs 4]

It builds a lab with N extra target qubes (tagged ``qgitconf-target``, installed like
``init_lab`` does, pinned with ``target init``), then alternates rounds of

- sequential: ``qgitconf publish tNN`` once per target (N CLI runs), and
- parallel:   one ``qgitconf publish t01 … tNN --jobs J``,

each round after a fresh signed commit on every target branch, so every publish builds,
signs, sends and stages a new incremental update.  It prints the best time of each and
their ratio (goal: parallel / sequential ≤ 0.6 on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a plain script

from qgitconf.lab.lab import KEY_FILE, TARGET_TAG, Lab, _shim, init_lab, source_root
from qgitconf.mgmt.repo import MgmtRepo
from tests.labkit import qg, setup_lab


def add_targets(lab: Lab, names: list[str]) -> None:
    data = lab.info()
    for name in names:
        data["qubes"][name] = {"class": "AppVM", "tags": [TARGET_TAG], "running": True}
    lab.save_info(data)
    public = (lab.home("vault") / KEY_FILE).read_bytes()
    for name in names:
        home = lab.home(name)
        (home / "QubesIncoming" / "vault").mkdir(parents=True)
        (home / "QubesIncoming" / "vault" / KEY_FILE).write_bytes(public)
        (lab.qube(name) / "bin").mkdir()
        _shim(lab.qube(name) / "bin" / "qrexec-client-vm", "qgitconf.lab.qrexec")
        shutil.copytree(source_root() / "rpc", lab.rpc_dir(name))
        qg(lab, "config-mgmt", "target", "add", name)
        qg(
            lab,
            name,
            "target",
            "init",
            "--source",
            "config-mgmt",
            "--key-file",
            f"QubesIncoming/vault/{KEY_FILE}",
            "--fingerprint",
            lab.fingerprint,
        )


def commit_everywhere(repo: MgmtRepo, names: list[str], text: str) -> None:
    """One signed commit per target branch (plumbing, so the setup stays cheap)."""
    for name in names:
        blob = repo.git("hash-object", "-w", "--stdin", input=f"{text} {name}\n".encode()).strip()
        tree = repo.git("mktree", input=f"100644 blob {blob}\t.bashrc\n".encode()).strip()
        old = repo.tip(name)
        assert old is not None
        new = repo.git(
            "commit-tree", f"-S{repo.signing_key()}", "-p", old, "-m", text, tree
        ).strip()
        repo.git("update-ref", f"refs/heads/{name}", new, old)


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=8)
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="qgb-", dir="/tmp"))
    os.environ.pop("QGITCONF_REPO", None)
    lab = init_lab(base / "lab")
    try:
        setup_lab(lab)
        names = [f"t{i:02d}" for i in range(1, args.targets + 1)]
        t0 = time.perf_counter()
        add_targets(lab, names)
        home = lab.home("config-mgmt")
        repo = MgmtRepo(home / "qgitconf.git", home, lab.env("config-mgmt"))
        commit_everywhere(repo, names, "first")
        qg(lab, "config-mgmt", "publish", *names, "--jobs", str(args.jobs))  # full bundles
        print(f"setup: {len(names)} targets in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        seq: list[float] = []
        par: list[float] = []
        for r in range(args.rounds):
            commit_everywhere(repo, names, f"seq {r}")
            seq.append(timed(lambda: [qg(lab, "config-mgmt", "publish", n) for n in names]))
            commit_everywhere(repo, names, f"par {r}")
            par.append(
                timed(lambda: qg(lab, "config-mgmt", "publish", *names, "--jobs", str(args.jobs)))
            )
        s, p = min(seq), min(par)
        print(f"cores: {os.cpu_count()}  targets: {len(names)}  jobs: {args.jobs}")
        print(f"sequential single-target publishes: {', '.join(f'{x:.2f}' for x in seq)} s")
        print(f"one parallel publish:               {', '.join(f'{x:.2f}' for x in par)} s")
        print(f"best: sequential {s:.2f} s, parallel {p:.2f} s, ratio {p / s:.2f} (goal <= 0.6)")
        try:  # the combined table of `make bench` (tests/bench/run.py), when present
            from tests.bench.common import row
        except ImportError:
            return 0
        row(
            f"publish {len(names)} targets: parallel vs sequential",
            p,
            s,
            "s",
            "ratio <= 0.6",
            p / s <= 0.6,
            f"--jobs {args.jobs}, {os.cpu_count()} cores",
        )
        return 0
    finally:
        lab.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
