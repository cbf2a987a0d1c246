"""``qgitconf doctor`` in a target qube: configuration, pinned keys, the agent repository,
persistence, the qrexec service, system files."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from qgitconf import sysprog
from qgitconf.agent.config import load_target_config
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.errors import QgitconfError
from qgitconf.ops.checks import Check, git_fsck
from qgitconf.ops.persist import qubesdb_reader, state_persistence
from qgitconf.qubes import qubesdb
from qgitconf.sanitize import sanitize

EXPIRY_WARN_DAYS = 30


RPC_DIRS = ("/etc/qubes-rpc", "/usr/local/etc/qubes-rpc")


@dataclass(frozen=True)
class KeyStatus:
    """What ``gpg --show-keys`` says about a pinned key file.

    Attributes:
        fingerprints: Primary-key fingerprints in the file.
        validity: The primary key's validity letter (``r`` revoked, ``e`` expired…).
        expires: The primary key's expiry (epoch seconds) or ``None``.
        can_sign: Whether the primary key or a valid subkey can still sign.
    """

    fingerprints: tuple[str, ...]
    validity: str
    expires: int | None
    can_sign: bool


def key_status(colons: str, now: float) -> KeyStatus:
    """Parse ``gpg --with-colons --show-keys`` output for one key file.

    Args:
        colons: The output.
        now: The current time (epoch seconds).

    Returns:
        The status of the first primary key (and the list of all primaries).
    """
    fprs: list[str] = []
    validity, expires, can_sign = "", None, False
    pubs, primary_ok, current = 0, False, ""
    for line in colons.splitlines():
        f = line.split(":")
        if f[0] in ("pub", "sub") and len(f) > 11:
            current = f[0]
            exp = int(f[6]) if f[6].isdigit() else None
            usable = f[1] not in ("r", "e", "i", "d", "n") and (exp is None or exp > now)
            if f[0] == "pub":
                pubs += 1
                if pubs == 1:
                    validity, expires, primary_ok = f[1], exp, usable
            # Only the first key counts; a subkey signs only while its primary is valid.
            if pubs == 1 and "s" in f[11] and usable and primary_ok:
                can_sign = True
        elif f[0] == "fpr" and len(f) > 9 and current == "pub":
            fprs.append(f[9])
            current = ""
    return KeyStatus(tuple(fprs), validity, expires, can_sign)


def _show_keys(path: Path, env: Mapping[str, str]) -> str:
    gpg = sysprog.program("gpg")
    home = tempfile.mkdtemp(prefix="qgitconf-doctor-")
    try:
        proc = subprocess.run(
            [gpg, "--homedir", home, "--batch", "--with-colons", "--show-keys", str(path)],
            capture_output=True,
            check=False,
            timeout=30,
            env=sysprog.base_env(home),
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return proc.stdout.decode("utf-8", "replace")


def _check_pinned(fpr: str, path: Path, env: Mapping[str, str], now: float) -> Check:
    name = f"pinned-key {fpr[-16:]}"
    if not path.is_file():
        return Check(name, "fail", f"public key missing: {sanitize(str(path))}")
    st = key_status(_show_keys(path, env), now)
    if st.fingerprints != (fpr,):
        return Check(name, "fail", f"{sanitize(str(path))} does not hold exactly the key {fpr}")
    if st.validity == "r":
        return Check(name, "fail", f"{fpr} is revoked")
    if st.validity == "e" or (st.expires is not None and st.expires <= now):
        return Check(name, "fail", f"{fpr} has expired")
    if not st.can_sign:
        return Check(name, "fail", f"{fpr} has no valid signing key or subkey")
    if st.expires is not None and st.expires - now < EXPIRY_WARN_DAYS * 86400:
        days = int((st.expires - now) // 86400)
        return Check(name, "warn", f"{fpr} expires in {days} days: extend it in the vault")
    until = time.strftime("%Y-%m-%d", time.gmtime(st.expires)) if st.expires else "never"
    return Check(name, "ok", f"{fpr} present, expires {until}")


def target_checks(home: Path, env: Mapping[str, str], now: float) -> list[Check]:
    checks: list[Check] = []
    try:
        cfg = load_target_config(home, env)
    except QgitconfError as e:
        checks.append(Check("target-config", "fail", sanitize(e.detail)))
        cfg = None
    if cfg is not None:
        checks.append(
            Check(
                "target-config",
                "ok",
                f"{sanitize(str(cfg.path))}: source {cfg.source}, {len(cfg.pinned)} pinned key(s)",
            )
        )
        for fpr in cfg.pinned:
            checks.append(_check_pinned(fpr, cfg.path.parent / "keys" / f"{fpr}.asc", env, now))
        checks.append(_system_check(cfg.rules.system.prefixes))
    state = AgentState(state_dir(home))
    if (state.repo_path / "HEAD").exists():
        checks.append(git_fsck("agent-repo", state.repo_path, env))
    else:
        checks.append(Check("agent-repo", "skip", "no update received yet"))
    leftovers = [p for p in (state.journal_dir, state.root / "journal.json") if p.exists()]
    if leftovers:
        checks.append(
            Check(
                "journal",
                "fail",
                f"an apply was interrupted ({sanitize(str(leftovers[0]))}); see `qgitconf status`",
            )
        )
    else:
        checks.append(Check("journal", "ok", "no interrupted apply"))
    checks.append(_persistence_check(home, env))
    checks.append(_rpc_check(env, "qgitconf.Receive"))
    return checks


def _system_check(prefixes: tuple[str, ...]) -> Check:
    """Whether system files are on (issue 15), from root-owned settings only."""
    if not prefixes:
        return Check("system-files", "skip", "off (dom0: vm-config.qgitconf-system-paths)")
    dotted = ", ".join("/" + p for p in prefixes)
    return Check(
        "system-files",
        "ok",
        f"allowed: {sanitize(dotted)}; applied as root by `qgitconf system apply`",
    )


def _persistence_check(home: Path, env: Mapping[str, str]) -> Check:
    read, entries = qubesdb_reader()
    # QubesDB sees the qube's real paths; $HOME is the same path inside the qube.
    verdict = state_persistence(read, str(state_dir(home)), entries)
    return Check("persistence", verdict.result, verdict.message)


def _rpc_check(env: Mapping[str, str], service: str) -> Check:
    dirs = [Path(d) for d in env.get("QGITCONF_RPC_DIRS", ":".join(RPC_DIRS)).split(":") if d]
    for d in dirs:
        if (d / service).is_file():
            return Check(f"service {service}", "ok", f"installed: {d / service}")
    if not qubesdb.available():
        return Check(f"service {service}", "skip", "not in a Qubes qube")
    return Check(
        f"service {service}",
        "fail",
        f"{service} is not in {' or '.join(map(str, dirs))}: install the qgitconf package "
        "in the template",
    )
