"""The target qube's configuration: source qube, pinned keys, allowlist, limits.

Pins come from (first found) QubesDB ``/vm-config/qgitconf-key`` (set from dom0),
``/etc/qgitconf/target.toml`` (template-wide) or ``~/.config/qgitconf/target.toml``.
Public keys live as ``keys/<FPR>.asc`` beside the toml.  Nothing an update carries can
change any of this (DESIGN "Actors and trust").

System files (issue 15) are allowed only by root-owned settings: QubesDB
``/vm-config/qgitconf-system-paths``, else ``system_paths`` in ``/etc/qgitconf/target.toml``
(:func:`load_system_rules`).  The user's own ``target.toml`` cannot turn them on: the
user-level agent of a qube without passwordless root must not be a way to root.
"""

from __future__ import annotations

import io
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from qgitconf.agent.where import SYSTEM_CONFIG as SYSTEM_CONFIG
from qgitconf.agent.where import system_config_path as system_config_path
from qgitconf.agent.where import user_config_path as user_config_path
from qgitconf.core.envelope import QUBE_NAME
from qgitconf.core.paths import PathRules
from qgitconf.core.systemrules import SystemRules, parse_prefixes
from qgitconf.errors import ConfigError
from qgitconf.fsutil import atomic_write
from qgitconf.limits import Limits
from qgitconf.qubes import qubesdb
from qgitconf.qubes.qubesdb import PIN_KEY, SYSTEM_PATHS_KEY, qubesdb_bytes

FPR = re.compile(r"[0-9A-F]{40}")
QubesDBRead = Callable[[str], "str | None"]


class TargetConfig(NamedTuple):
    """Everything the agent trusts, loaded from this qube's own files."""

    path: Path
    source: str
    pinned: Mapping[str, bytes]
    rules: PathRules = PathRules()
    limits: Limits = Limits()
    auto_apply: bool = False


def _qubesdb_pin(read: QubesDBRead) -> str | None:
    value = (read(PIN_KEY) or "").upper()
    if not value:
        return None
    if not FPR.fullmatch(value):
        raise ConfigError("QubesDB /vm-config/qgitconf-key is not a 40-hex fingerprint")
    return value


def load_system_rules(
    read_qubesdb: QubesDBRead = qubesdb.read, system_config: Path | None = None
) -> SystemRules:
    """The system prefixes allowed here, from root-owned settings only.

    QubesDB :data:`SYSTEM_PATHS_KEY` (dom0's) wins; else ``system_paths`` in the
    template-wide ``/etc/qgitconf/target.toml`` when root owns it; else none (system
    files off).  Both the receiving agent and the root step call this.

    Raises:
        ConfigError: a setting names an invalid or denied prefix.
    """
    value = read_qubesdb(SYSTEM_PATHS_KEY)
    if value:
        return parse_prefixes(value, f"QubesDB {SYSTEM_PATHS_KEY}")
    path = system_config or SYSTEM_CONFIG
    try:
        st = path.stat()
    except OSError:
        return SystemRules()
    if st.st_uid != 0 and system_config is None:
        return SystemRules()  # not root's: not a root-owned setting
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e
    paths = data.get("system_paths")
    if paths is None:
        return SystemRules()
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise ConfigError(f"{path}: 'system_paths' must be a list of absolute paths")
    return parse_prefixes(paths, str(path))


def _ignore(_item: tuple[str, str, bytes]) -> None:
    return None


def _noted(read: QubesDBRead, note: Callable[[tuple[str, str, bytes]], None]) -> QubesDBRead:
    """``read``, each answer also given to ``note`` (``load_target_config``'s ``seen``)."""

    def reader(key: str) -> str | None:
        value = read(key)
        note(("qubesdb", key, qubesdb_bytes(value)))
        return value

    return reader


def load_target_config(
    home: Path,
    env: Mapping[str, str] | None = None,
    *,
    read_qubesdb: QubesDBRead = qubesdb.read,
    system_config: Path | None = None,
    system_rules: bool = True,
    seen: list[tuple[str, str, bytes]] | None = None,
) -> TargetConfig:
    """Load this qube's target configuration.

    Where it is looked up is fixed (QubesDB, ``/etc/qgitconf``, ``~/.config/qgitconf``);
    ``env`` is not consulted: the environment of a qrexec service is what the user's
    ``~/.profile`` left, which an update can write (DESIGN rule 12).

    Args:
        home: $HOME.
        env: unused; kept for the callers' symmetry.
        read_qubesdb: the QubesDB reader (tests give their own).
        system_config: the template-wide file (default :data:`SYSTEM_CONFIG`).
        system_rules: False leaves the system prefixes out of ``rules`` (none allowed),
            without asking QubesDB for them: for ``status``, which reports and decides
            nothing by the rules (one ``qubesdb-read`` process fewer).
        seen: if given, every input the result was decided by is appended to it, in
            the order it was read: ``("isfile", path, b"1"|b"0")`` for each candidate
            looked at, ``("file", path, bytes)`` for each file read, ``("qubesdb",
            key, answer)`` for each QubesDB key asked (the answer as
            :func:`qgitconf.qubes.qubesdb.qubesdb_bytes` writes it): the key of the
            memo of :mod:`qgitconf.agent.configmemo`.

    Raises:
        ConfigError: not set up, unreadable, or invalid.
    """
    note = seen.append if seen is not None else _ignore
    read_qubesdb = _noted(read_qubesdb, note) if seen is not None else read_qubesdb
    path = _config_file([system_config or SYSTEM_CONFIG, user_config_path(home)], note)
    data = _read_toml(path, note)
    source = data.get("source")
    if not isinstance(source, str) or not QUBE_NAME.fullmatch(source):
        raise ConfigError(f"{path}: 'source' must be a qube name")
    pin = _qubesdb_pin(read_qubesdb)
    fprs = [pin] if pin else data.get("keys")
    if (
        not isinstance(fprs, list)
        or not fprs
        or not all(isinstance(f, str) and FPR.fullmatch(f) for f in fprs)
    ):
        raise ConfigError(f"{path}: 'keys' must list full 40-hex primary-key fingerprints")
    pinned = _pinned_keys(path, fprs, note)
    allow = data.get("allow", ["**"])
    if not isinstance(allow, list) or not all(isinstance(a, str) and a for a in allow):
        raise ConfigError(f"{path}: 'allow' must be a list of path globs")
    try:
        limits = Limits.from_mapping(dict(data.get("limits", {})))
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from e
    auto_apply = data.get("auto_apply", False)
    if not isinstance(auto_apply, bool):
        raise ConfigError(f"{path}: 'auto_apply' must be true or false")
    system = load_system_rules(read_qubesdb, system_config) if system_rules else SystemRules()
    return TargetConfig(
        path=path,
        source=source,
        pinned=pinned,
        rules=PathRules(allow=tuple(allow), system=system),
        limits=limits,
        auto_apply=auto_apply,
    )


def _config_file(candidates: list[Path], note: Callable[[tuple[str, str, bytes]], None]) -> Path:
    """The first candidate that is a file (each one looked at is noted)."""
    for candidate in candidates:
        is_file = candidate.is_file()
        note(("isfile", str(candidate), b"1" if is_file else b"0"))
        if is_file:
            return candidate
    raise ConfigError(
        "this qube is not set up as a qgitconf target "
        "(run: qgitconf target init --source QUBE --key-file KEY.asc)"
    )


def _read_toml(path: Path, note: Callable[[tuple[str, str, bytes]], None]) -> dict[str, Any]:
    """``path`` parsed as TOML (its bytes noted)."""
    try:
        raw = path.read_bytes()
        note(("file", str(path), raw))
        # decoded as ``path.read_text(encoding="utf-8")`` decodes (universal newlines)
        return tomllib.loads(io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8").read())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e


def _pinned_keys(
    path: Path, fprs: list[str], note: Callable[[tuple[str, str, bytes]], None]
) -> dict[str, bytes]:
    """The key file of each pinned fingerprint, beside the configuration (each noted)."""
    pinned: dict[str, bytes] = {}
    for fpr in fprs:
        key_file = path.parent / "keys" / f"{fpr}.asc"
        try:
            pinned[fpr] = key_file.read_bytes()
            note(("file", str(key_file), pinned[fpr]))
        except OSError as e:
            raise ConfigError(f"public key for pinned {fpr} not found at {key_file}") from e
    return pinned


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_target_config(
    home: Path, source: str, fingerprint: str, key_bytes: bytes, allow: list[str]
) -> Path:
    """Write ``~/.config/qgitconf/target.toml`` and the pinned public key beside it."""
    path = user_config_path(home)
    (path.parent / "keys").mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    atomic_write(path.parent / "keys" / f"{fingerprint}.asc", key_bytes, 0o644)
    text = (
        "# qgitconf target configuration, written by `qgitconf target init`.\n"
        "# The qube allowed to send updates (checked against QREXEC_REMOTE_DOMAIN).\n"
        f"source = {_toml_str(source)}\n"
        "# Full primary-key fingerprints whose signatures count; keys/<FPR>.asc beside this.\n"
        f"keys = [{_toml_str(fingerprint)}]\n"
        "# Globs of $HOME-relative paths updates may write (** = any depth).\n"
        f"allow = [{', '.join(_toml_str(a) for a in allow)}]\n"
        "# Apply on receipt when a change has no high-risk finding and no drift.\n"
        "auto_apply = false\n"
        "\n[limits]\n"
        "# max_bundle_bytes = 268435456\n"
    )
    atomic_write(path, text.encode("utf-8"), 0o644)
    return path
