"""`qgitconf lab demo` tells the whole story and exits 0 (the README's `make demo`)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path


def test_demo_runs_every_step(tmp_path: Path) -> None:
    lab_dir = Path(tempfile.mkdtemp(prefix="qgd-", dir="/tmp")) / "lab"
    proc = subprocess.run(
        [sys.executable, "-m", "qgitconf.cli", "lab", "demo", str(lab_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    for needle in (
        "publish to personal",
        "review",
        "apply",
        "revert",
        "denied by the dom0 policy (exit 126)",
        "rejected: signature-untrusted",
        "rejected: rollback",
        "rejected: wrong-target",
        "Demo complete",
    ):
        assert needle in out, needle
    subprocess.run(["rm", "-rf", str(lab_dir.parent)], check=False)
