"""``qgitconf doctor`` in config-mgmt: the repository, the signing key's public half,
split-GPG and ``gpg.program``."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from qgitconf.errors import QgitconfError
from qgitconf.gpg.keys import inspect_key_file
from qgitconf.gpg.signing import sign_detached
from qgitconf.ops.checks import Check, git_fsck
from qgitconf.qubes import qubesdb
from qgitconf.sanitize import sanitize


def mgmt_checks(repo: Any, env: Mapping[str, str], sign: bool) -> list[Check]:
    checks = [git_fsck("repo", repo.path, env)]
    try:
        key = repo.signing_key()
    except QgitconfError as e:
        checks.append(Check("signing-key", "fail", sanitize(e.detail)))
        return checks
    checks.append(Check("signing-key", "ok", f"user.signingkey {sanitize(key)}"))
    checks.append(_key_file_check(Path(repo.meta) / "signing-key.asc", key))
    checks.append(_gpg_program_check(repo.gpg_program(), key, env, sign))
    return checks


def _key_file_check(path: Path, key: str) -> Check:
    """The public half of the signing key is saved where the ``pre-receive`` hook reads
    it (``qgitconf/signing-key.asc``), and is exactly that key: without it the hook
    refuses every push."""
    name = "signing-key.asc"
    hint = f"the pre-receive hook refuses every push until the public key of {key} is saved there"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Check(name, "fail", f"{path} is missing: {hint}")
    except OSError as e:
        return Check(name, "fail", f"cannot read {path}: {sanitize(str(e))}")
    try:
        fprs = [k.fingerprint for k in inspect_key_file(data)]
    except QgitconfError as e:
        return Check(name, "fail", f"{path}: {sanitize(e.detail)}")
    want = key.replace(" ", "").upper()
    if len(fprs) != 1 or not fprs[0].endswith(want):
        held = ", ".join(fprs) or "no key"
        return Check(name, "fail", f"{path} holds {held}, not only {sanitize(key)}: {hint}")
    return Check(name, "ok", f"{path} holds {fprs[0]}")


def split_gpg_vault(cfg: Path, env: Mapping[str, str]) -> str:
    """Which qube split-GPG v1's wrapper asks, as its ``/etc/profile.d/qubes-gpg.sh`` picks it.

    That script (qubes-app-linux-split-gpg 2.0.85) takes a non-empty
    ``/rw/config/gpg-split-domain`` first, then ``$QUBES_GPG_DOMAIN``, and otherwise
    calls ``@default``: the dom0 policy's ``target=`` then chooses the vault.  None of
    these is an error; the signature test shows whether the call really reaches a key.

    Args:
        cfg: The per-qube file (``/rw/config/gpg-split-domain``).
        env: The environment (``QUBES_GPG_DOMAIN``).

    Returns:
        A short description for the check's message (already sanitized).
    """
    vault = ""
    try:
        vault = cfg.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        vault = ""
    if not vault:
        vault = env.get("QUBES_GPG_DOMAIN", "").strip()
    if not vault or vault == "@default":
        return "vault chosen by the dom0 policy (@default)"
    return f"vault {sanitize(vault)}"


def split_gpg2_client_check(read: Callable[[str], str | None], flag: Path) -> str | None:
    """Is split-gpg2's client, once enabled, really running?

    ``qvm-service QUBE split-gpg2-client on`` writes ``/qubes-service/split-gpg2-client``
    into the running qube's QubesDB at once, but ``/run/qubes-service/`` is filled from
    QubesDB only at boot, and split-gpg2's ``split-gpg2-client.service`` has
    ``ConditionPathExists=/run/qubes-service/split-gpg2-client``: until the qube is
    restarted, the local ``gpg`` finds no forwarded agent and no secret key.

    Args:
        read: QubesDB reader (``None`` for a missing key or no QubesDB).
        flag: ``/run/qubes-service/split-gpg2-client``.

    Returns:
        The problem, or ``None`` (not enabled, or enabled since boot).
    """
    if read("/qubes-service/split-gpg2-client") != "1" or flag.exists():
        return None
    return (
        "split-gpg2-client was enabled after this qube started, so the client is not "
        f"running ({flag} is missing): restart the qube"
    )


def _gpg_program_check(program: str, key: str, env: Mapping[str, str], sign: bool) -> Check:
    name = "gpg.program"
    found = shutil.which(program, path=env.get("PATH"))
    if found is None:
        return Check(name, "fail", f"{sanitize(program)} not found on PATH")
    note = ""
    if Path(program).name == "qubes-gpg-client-wrapper":
        cfg = Path(env.get("QGITCONF_GPG_SPLIT_DOMAIN_FILE", "/rw/config/gpg-split-domain"))
        note = f" ({split_gpg_vault(cfg, env)})"
    elif Path(program).name in ("gpg", "gpg2"):
        run_flag = Path(env.get("QGITCONF_QUBES_SERVICE_DIR", "/run/qubes-service"))
        problem = split_gpg2_client_check(qubesdb.read, run_flag / "split-gpg2-client")
        if problem is not None:
            return Check(name, "fail", problem)
    if not sign:
        return Check(name, "ok", f"{sanitize(found)}{note} found (signature test skipped)")
    try:
        sign_detached(program, key, b"qgitconf doctor test signature\n", env)
    except QgitconfError as e:
        return Check(name, "fail", sanitize(e.detail))
    return Check(name, "ok", f"{sanitize(program)}{note} signed a test message with {key}")
