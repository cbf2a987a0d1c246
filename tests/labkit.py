"""Helpers for tests that drive the lab: run commands in qubes, snapshot state."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

from qgitconf.lab.lab import KEY_FILE, Lab

INCOMING = f"QubesIncoming/vault/{KEY_FILE}"


def run(
    lab: Lab, qube: str, *args: str, input: bytes | None = None, expect: int | None = 0
) -> subprocess.CompletedProcess[bytes]:
    """Run a command in a lab qube; check its exit status unless ``expect`` is None."""
    proc = lab.run(qube, list(args), input=input)
    if expect is not None and proc.returncode != expect:
        raise AssertionError(
            f"{args} in {qube} exited {proc.returncode} (expected {expect})\n"
            f"stdout: {proc.stdout.decode(errors='replace')}\n"
            f"stderr: {proc.stderr.decode(errors='replace')}"
        )
    return proc


def qg(lab: Lab, qube: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return run(lab, qube, "qgitconf", *args, **kw)


def setup_lab(lab: Lab) -> None:
    """config-mgmt repo with targets personal and work; both targets pinned."""
    qg(lab, "config-mgmt", "init", "--signing-key", lab.fingerprint)
    for t in ("personal", "work"):
        qg(lab, "config-mgmt", "target", "add", t)
        qg(
            lab,
            t,
            "target",
            "init",
            "--source",
            "config-mgmt",
            "--key-file",
            INCOMING,
            "--fingerprint",
            lab.fingerprint,
        )
    lab.close()


def commit_files(lab: Lab, target: str, files: dict[str, str | bytes], message: str) -> str:
    """Write ``files`` ($HOME-relative) for ``target`` in config-mgmt and commit them."""
    for rel, content in files.items():
        src = lab.home("config-mgmt") / "src" / target / rel
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(content.encode() if isinstance(content, str) else content)
        qg(lab, "config-mgmt", "add", target, str(src), "--as", rel)
    qg(lab, "config-mgmt", "commit", target, "-m", message)
    return tip(lab, target)


def tip(lab: Lab, target: str) -> str:
    return (
        run(
            lab, "config-mgmt", "git", "--git-dir=qgitconf.git", "rev-parse", f"refs/heads/{target}"
        )
        .stdout.decode()
        .strip()
    )


def publish(lab: Lab, target: str, expect: int = 0) -> dict[str, Any]:
    out = qg(lab, "config-mgmt", "publish", target, "--json", expect=expect).stdout
    return dict(json.loads(out)[0])


def kept_update(lab: Lab, target: str) -> bytes:
    return (
        lab.home("config-mgmt") / "qgitconf.git" / "qgitconf" / "updates" / f"{target}.update"
    ).read_bytes()


def send(lab: Lab, source: str, target: str, data: bytes) -> tuple[int, dict[str, Any] | None]:
    """Pipe ``data`` into ``target``'s qgitconf.Receive from ``source`` (through policy)."""
    proc = run(lab, source, "qrexec-client-vm", target, "qgitconf.Receive", input=data, expect=None)
    out = proc.stdout.decode().strip()
    return proc.returncode, (json.loads(out) if out else None)


def snapshot(root: Path, *, skip: tuple[str, ...] = ("rejected.log",)) -> dict[str, Any]:
    """Every file, link and directory under ``root``: mode and content, byte for byte."""
    out: dict[str, Any] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if name in skip:
                continue
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), p.read_bytes())
    return out


def target_snapshot(lab: Lab, qube: str) -> dict[str, Any]:
    """The whole home of a target qube (agent state included), minus rejected.log."""
    return snapshot(lab.home(qube))


def rejected_log(lab: Lab, qube: str) -> list[dict[str, Any]]:
    p = lab.home(qube) / ".local/share/qgitconf/rejected.log"
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines()]
