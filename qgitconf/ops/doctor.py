"""``qgitconf doctor``: is this qube set up so that the security rules can hold?

Each check returns one :class:`Check` (``ok``, ``warn``, ``fail`` or ``skip`` with a
message); ``doctor`` exits 1 when any check fails.  The checks depend on what this
qube is:

- everywhere: GnuPG ≥ 2.2.36 (status-line injection, CVE-2022-34903), and the oldest
  python-gnupg (0.4.9), dulwich (0.21.2) and click (8.1.3) the project tests
  (``make test-dulwich``);
- a target (a ``target.toml`` exists): the configuration loads, each pinned key is
  present, not revoked or expired and not expiring within 30 days, and can sign;
  the agent repository passes ``git fsck``; no interrupted apply left a journal;
  the state directory survives a reboot (see :mod:`qgitconf.ops.persist`); the qrexec
  service is installed;
- config-mgmt (a repository exists): ``git fsck``, a signing key is set, its public
  half is saved as ``qgitconf/signing-key.asc`` (the ``pre-receive`` hook refuses
  every push without it), and ``gpg.program`` (split-GPG in Qubes) really signs;
- dom0 (``/etc/qubes/policy.d`` is visible, or ``QGITCONF_POLICY_DIR``): the
  qgitconf policy files pass ``qgitconf policy check``.

Every check catches its own errors: a broken qube gets a full report, not a traceback.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path

try:  # python-gnupg: that it imports is one of the checks (_check_python_gnupg)
    import gnupg
except ImportError:
    gnupg = None

from qgitconf import sysprog
from qgitconf.agent.config import system_config_path, user_config_path
from qgitconf.gitpack import compat
from qgitconf.mgmt.repo import MgmtRepo, default_repo_path
from qgitconf.ops.checks import Check, dotted, version_of
from qgitconf.ops.doctor_mgmt import mgmt_checks
from qgitconf.ops.doctor_target import target_checks
from qgitconf.ops.policycheck import check_files
from qgitconf.sanitize import sanitize

__all__ = ["MIN_CLICK", "MIN_GPG", "MIN_PYTHON_GNUPG", "gpg_version_check", "run_doctor"]

MIN_GPG = (2, 2, 36)
"""GnuPG before 2.2.36 lets a user id inject status lines (CVE-2022-34903)."""
MIN_PYTHON_GNUPG = (0, 4, 9)
"""The oldest python-gnupg tested (``make test-dulwich``: Debian 12's 0.4.9; 0.4.4 fixed
CVE-2019-6690, passphrase injection).  One minimum: pyproject.toml, debian/control,
rpm_spec/qgitconf.spec.in and docs/packaging.md state the same (a test keeps them
equal)."""
MIN_CLICK = (8, 1, 3)
"""The oldest click tested (``make test-dulwich``: Debian 12's 8.1.3); stated alike in
the same files (the same test)."""


def gpg_version_check(first_line: str) -> Check:
    """Judge ``gpg --version``'s first line.

    Args:
        first_line: e.g. ``gpg (GnuPG) 2.2.40``.

    Returns:
        ``ok`` at or above :data:`MIN_GPG`, else ``fail``.
    """
    v = version_of(first_line)
    if v is None:
        return Check("gpg", "fail", f"cannot read the version from {sanitize(first_line)!r}")
    if v < MIN_GPG:
        return Check(
            "gpg",
            "fail",
            f"GnuPG {dotted(v)} < {dotted(MIN_GPG)} (CVE-2022-34903: status-line injection)",
        )
    return Check("gpg", "ok", f"GnuPG {dotted(v)}")


def _check_gpg(env: Mapping[str, str]) -> Check:
    gpg = sysprog.find("gpg")
    if gpg is None:
        return Check("gpg", "fail", f"gpg not found in {sysprog.SYSTEM_PATH}")
    try:
        proc = subprocess.run(
            [gpg, "--version"],
            capture_output=True,
            check=False,
            timeout=30,
            env=sysprog.base_env(env.get("HOME", "/")),
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check("gpg", "fail", f"cannot run gpg: {sanitize(str(e))}")
    lines = proc.stdout.decode("utf-8", "replace").splitlines()
    return gpg_version_check(lines[0] if lines else "")


def _check_python_gnupg() -> Check:
    if gnupg is None:
        return Check("python-gnupg", "fail", "python-gnupg is not installed")
    v = version_of(str(getattr(gnupg, "__version__", "")))
    if v is None or v < MIN_PYTHON_GNUPG:
        return Check(
            "python-gnupg",
            "fail",
            f"python-gnupg {v and dotted(v)} < {dotted(MIN_PYTHON_GNUPG)}",
        )
    return Check("python-gnupg", "ok", f"python-gnupg {dotted(v)}")


def _check_click() -> Check:
    try:
        text = metadata.version("click")
    except metadata.PackageNotFoundError:
        return Check("click", "fail", "click is not installed (or has no metadata)")
    v = version_of(text)
    if v is None or v < MIN_CLICK:
        seen = dotted(v) if v else sanitize(text)
        return Check("click", "fail", f"click {seen} < {dotted(MIN_CLICK)}")
    return Check("click", "ok", f"click {dotted(v)}")


def _check_dulwich() -> Check:
    v = compat.dulwich_version()
    if v < compat.MIN_DULWICH:
        return Check("dulwich", "fail", f"dulwich {dotted(v)} < {dotted(compat.MIN_DULWICH)}")
    return Check("dulwich", "ok", f"dulwich {dotted(v)}")


# -- pinned keys ----------------------------------------------------------------------------


# -- target -----------------------------------------------------------------------------------


# -- config-mgmt --------------------------------------------------------------------------------


# -- dom0 ------------------------------------------------------------------------------------


def _policy_checks(env: Mapping[str, str]) -> list[Check]:
    configured = env.get("QGITCONF_POLICY_DIR")
    policy_dir = Path(configured or "/etc/qubes/policy.d")
    if not policy_dir.is_dir():
        return [Check("policy", "skip", "dom0 only: run `qgitconf policy check FILE` there")]
    files = sorted(policy_dir.glob("*qgitconf*.policy"))
    if not files:
        return [Check("policy", "fail", f"no qgitconf policy in {sanitize(str(policy_dir))}")]
    report = check_files(files)
    if report.ok:
        names = ", ".join(sanitize(f.name) for f in files)
        return [Check("policy", "ok", f"{names} valid ({report.samples_run} samples)")]
    return [Check("policy", "fail", p) for p in report.problems]


# -- all ----------------------------------------------------------------------------------------


def run_doctor(
    home: Path,
    env: Mapping[str, str],
    *,
    sign: bool = True,
    now: Callable[[], float] = time.time,
) -> tuple[str, list[Check]]:
    """Run every check that applies to this qube.

    Args:
        home: $HOME.
        env: The environment (PATH, ``QGITCONF_*``).
        sign: In config-mgmt, make a test signature through ``gpg.program`` (in Qubes
            the vault may ask to confirm it).
        now: The clock (tests).

    Returns:
        The role (``target``, ``config-mgmt``, ``dom0``, several joined by ``+``,
        or ``none``) and the checks in order.
    """
    checks = [_check_gpg(env), _check_python_gnupg(), _check_dulwich(), _check_click()]
    roles: list[str] = []
    t = now()
    if user_config_path(home).is_file() or system_config_path(env).is_file():
        roles.append("target")
        checks += target_checks(home, env, t)
    repo = MgmtRepo(default_repo_path(home, env), home, dict(env))
    if repo.exists():
        roles.append("config-mgmt")
        checks += mgmt_checks(repo, env, sign)
    policy = _policy_checks(env)
    if policy[0].result != "skip":
        roles.append("dom0")
    checks += policy
    if not roles:
        checks.append(
            Check(
                "setup",
                "warn",
                "neither a target (qgitconf target init) nor config-mgmt (qgitconf init)",
            )
        )
    return "+".join(roles) or "none", checks
