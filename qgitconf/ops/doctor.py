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

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qgitconf import sysprog
from qgitconf.errors import QgitconfError
from qgitconf.sanitize import sanitize

__all__ = [
    "EXPIRY_WARN_DAYS",
    "MIN_CLICK",
    "MIN_GPG",
    "MIN_PYTHON_GNUPG",
    "Check",
    "KeyStatus",
    "gpg_version_check",
    "key_status",
    "run_doctor",
    "split_gpg2_client_check",
    "split_gpg_vault",
]

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
EXPIRY_WARN_DAYS = 30
RPC_DIRS = ("/etc/qubes-rpc", "/usr/local/etc/qubes-rpc")
RESULTS = ("ok", "warn", "fail", "skip")


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table.

    Attributes:
        name: A short stable identifier (``gpg``, ``pinned-key``…).
        result: ``ok``, ``warn``, ``fail`` or ``skip``.
        message: What was found, sanitised for display (rule 11).
    """

    name: str
    result: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """The check as a JSON-ready mapping."""
        return asdict(self)


def _version(text: str) -> tuple[int, ...] | None:
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if m is None:
        return None
    return tuple(int(g) for g in m.groups(default="0"))


def _show(v: tuple[int, ...]) -> str:
    return ".".join(str(x) for x in v)


def gpg_version_check(first_line: str) -> Check:
    """Judge ``gpg --version``'s first line.

    Args:
        first_line: e.g. ``gpg (GnuPG) 2.2.40``.

    Returns:
        ``ok`` at or above :data:`MIN_GPG`, else ``fail``.
    """
    v = _version(first_line)
    if v is None:
        return Check("gpg", "fail", f"cannot read the version from {sanitize(first_line)!r}")
    if v < MIN_GPG:
        return Check(
            "gpg",
            "fail",
            f"GnuPG {_show(v)} < {_show(MIN_GPG)} (CVE-2022-34903: status-line injection)",
        )
    return Check("gpg", "ok", f"GnuPG {_show(v)}")


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
    try:
        import gnupg
    except ImportError:
        return Check("python-gnupg", "fail", "python-gnupg is not installed")
    v = _version(str(getattr(gnupg, "__version__", "")))
    if v is None or v < MIN_PYTHON_GNUPG:
        return Check(
            "python-gnupg", "fail", f"python-gnupg {v and _show(v)} < {_show(MIN_PYTHON_GNUPG)}"
        )
    return Check("python-gnupg", "ok", f"python-gnupg {_show(v)}")


def _check_click() -> Check:
    from importlib import metadata

    try:
        text = metadata.version("click")
    except metadata.PackageNotFoundError:
        return Check("click", "fail", "click is not installed (or has no metadata)")
    v = _version(text)
    if v is None or v < MIN_CLICK:
        shown = _show(v) if v else sanitize(text)
        return Check("click", "fail", f"click {shown} < {_show(MIN_CLICK)}")
    return Check("click", "ok", f"click {_show(v)}")


def _check_dulwich() -> Check:
    from qgitconf.gitpack.compat import MIN_DULWICH, dulwich_version

    v = dulwich_version()
    if v < MIN_DULWICH:
        return Check("dulwich", "fail", f"dulwich {_show(v)} < {_show(MIN_DULWICH)}")
    return Check("dulwich", "ok", f"dulwich {_show(v)}")


# -- pinned keys ----------------------------------------------------------------------------


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


# -- target -----------------------------------------------------------------------------------


def _git_fsck(name: str, git_dir: Path, env: Mapping[str, str]) -> Check:
    try:
        proc = subprocess.run(
            [
                sysprog.program("git"),
                *sysprog.GIT_ISOLATION,
                "fsck",
                "--strict",
                "--no-dangling",
                "--no-progress",
            ],
            capture_output=True,
            check=False,
            timeout=600,
            env=sysprog.git_env(env.get("HOME", "/"), git_dir),
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check(name, "fail", f"cannot run git fsck: {sanitize(str(e))}")
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip().splitlines()
        return Check(name, "fail", f"git fsck failed: {sanitize(out[0] if out else '?')}")
    return Check(name, "ok", f"git fsck clean: {sanitize(str(git_dir))}")


def _target_checks(home: Path, env: Mapping[str, str], now: float) -> list[Check]:
    from qgitconf.agent.config import load_target_config
    from qgitconf.agent.state import AgentState, state_dir

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
        checks.append(_git_fsck("agent-repo", state.repo_path, env))
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
    shown = ", ".join("/" + p for p in prefixes)
    return Check(
        "system-files",
        "ok",
        f"allowed: {sanitize(shown)}; applied as root by `qgitconf system apply`",
    )


def _persistence_check(home: Path, env: Mapping[str, str]) -> Check:
    from qgitconf.agent.state import state_dir
    from qgitconf.ops.persist import qubesdb_reader, state_persistence

    read, entries = qubesdb_reader()
    # QubesDB sees the qube's real paths; $HOME is the same path inside the qube.
    verdict = state_persistence(read, str(state_dir(home)), entries)
    return Check("persistence", verdict.result, verdict.message)


def _rpc_check(env: Mapping[str, str], service: str) -> Check:
    dirs = [Path(d) for d in env.get("QGITCONF_RPC_DIRS", ":".join(RPC_DIRS)).split(":") if d]
    for d in dirs:
        if (d / service).is_file():
            return Check(f"service {service}", "ok", f"installed: {d / service}")
    from qgitconf.qubes import qubesdb

    if not qubesdb.available():
        return Check(f"service {service}", "skip", "not in a Qubes qube")
    return Check(
        f"service {service}",
        "fail",
        f"{service} is not in {' or '.join(map(str, dirs))}: install the qgitconf package "
        "in the template",
    )


# -- config-mgmt --------------------------------------------------------------------------------


def _mgmt_checks(repo: Any, env: Mapping[str, str], sign: bool) -> list[Check]:
    checks = [_git_fsck("repo", repo.path, env)]
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
    from qgitconf.gpg.signing import inspect_key_file

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
    from qgitconf.gpg.signing import sign_detached

    name = "gpg.program"
    found = shutil.which(program, path=env.get("PATH"))
    if found is None:
        return Check(name, "fail", f"{sanitize(program)} not found on PATH")
    note = ""
    if Path(program).name == "qubes-gpg-client-wrapper":
        cfg = Path(env.get("QGITCONF_GPG_SPLIT_DOMAIN_FILE", "/rw/config/gpg-split-domain"))
        note = f" ({split_gpg_vault(cfg, env)})"
    elif Path(program).name in ("gpg", "gpg2"):
        from qgitconf.qubes import qubesdb

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


# -- dom0 ------------------------------------------------------------------------------------


def _policy_checks(env: Mapping[str, str]) -> list[Check]:
    from qgitconf.ops.policycheck import check_files

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
    from qgitconf.agent.config import system_config_path, user_config_path
    from qgitconf.mgmt.repo import MgmtRepo, default_repo_path

    checks = [_check_gpg(env), _check_python_gnupg(), _check_dulwich(), _check_click()]
    roles: list[str] = []
    t = now()
    if user_config_path(home).is_file() or system_config_path(env).is_file():
        roles.append("target")
        checks += _target_checks(home, env, t)
    repo = MgmtRepo(default_repo_path(home, env), home, dict(env))
    if repo.exists():
        roles.append("config-mgmt")
        checks += _mgmt_checks(repo, env, sign)
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
