"""`qgitconf lab demo` tells the whole story on the real lab and exits 0 (the README's `make demo`).

Run as `make demo` runs it: the `qgitconf` entry point in a subprocess.  Skipped, with
the reason, where the real lab cannot run (not root, no sources); what the demo says
there is checked in-process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qgitconf.lab import demo
from qgitconf.lab.build import available

_OK, _WHY = available()
QGITCONF = Path(sys.executable).parent / "qgitconf"


@pytest.mark.skipif(not _OK, reason=f"real lab: {_WHY}")
def test_demo_runs_every_step_on_the_real_backend(tmp_path: Path) -> None:
    lab_dir = tmp_path / "lab"
    argv = [str(QGITCONF)] if QGITCONF.exists() else [sys.executable, "-m", "qgitconf.cli"]
    proc = subprocess.run(
        [*argv, "lab", "demo", str(lab_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    lines = out.splitlines()
    # it says which backend it ran on, at the start and at the end
    assert lines[1].startswith("backend: real Qubes qrexec and split-GPG"), lines[:3]
    assert "built from the pinned sources in" in lines[1]
    assert lines[-1].startswith("Demo complete: all ")
    assert "on the real Qubes qrexec and split-GPG" in lines[-1]
    for needle in (
        "[config-mgmt]$ qgitconf init --signing-key",
        "    qubes-gpg-client-wrapper",  # gpg.program
        "ok: signed in the vault over qubes.Gpg, and verified there",
        "publish to personal",
        "review",
        "apply",
        "revert",
        "ok: git: every commit is signed by the vault's key",
        "    Request refused",  # qrexec-client-vm's own message for a denied call
        "denied by the dom0 policy (exit 126)",
        "rejected: signature-untrusted",
        "rejected: rollback",
        "rejected: wrong-target",
        "personal's home is unchanged",
        "[config-mgmt]$ qgitconf status",
    ):
        assert needle in out, needle
    # DIRECTORY was given: the run tree is kept for a look at the homes, the lab is down
    assert (lab_dir / "qubes/personal/rw/home/user/.gitconfig").read_text().startswith("[alias]")
    assert not (lab_dir / "state.json").exists()


def test_demo_without_the_real_lab_says_why_and_how(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        demo, "available", lambda: (False, "the real lab needs root (mount and PID namespaces)")
    )
    out: list[str] = []
    err: list[str] = []
    assert demo.run_demo(None, out.append, err.append) == 1
    assert out == []
    text = "\n".join(err)
    assert "The lab cannot run here: the real lab needs root" in text
    assert "no simulated fallback" in text
    assert "make qubes-src" in text and "run as root" in text
