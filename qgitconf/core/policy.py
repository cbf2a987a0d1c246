"""Parse, check and evaluate qrexec policy files (Qubes OS R4.1+ format).

dom0 decides every qrexec call from the files in ``/etc/qubes/policy.d``: each
``*.policy`` file is read in C-locale (byte) name order, the first rule that matches a
request decides it, and a request no rule matches is denied.  A syntax error in any
policy file makes *every* qrexec call fail, so qgitconf checks its own policy file
before it is installed (``qgitconf policy check``), and the lab's simulated qrexec
enforces the very same files through :func:`evaluate`.

One rule per line, columns separated by spaces or tabs::

    service|*  +argument|*  source  target  allow|deny|ask  [key=value ...]

``#`` starts a comment only at the beginning of a line (after optional whitespace);
there are no inline comments.  This parser is deliberately stricter than dom0's: it
accepts only the subset of the format qgitconf needs, and every token is checked
against a narrow character set, so a file it accepts is also accepted by Qubes.
``!include``, ``!include-dir`` and ``!compat-4.0`` are rejected as unsupported.

Everything here is pure except :func:`load_policy_dir` and :func:`check_policy_file`,
which read files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from qgitconf.errors import ConfigError, PolicySyntaxError
from qgitconf.sanitize import sanitize

__all__ = [
    "ACTIONS",
    "QUBE_TYPES",
    "Decision",
    "PolicyRule",
    "QubeInfo",
    "check_policy_file",
    "check_policy_filename",
    "evaluate",
    "load_policy_dir",
    "parse_policy_text",
]

ACTIONS = frozenset({"allow", "deny", "ask"})
"""The three policy actions."""

QUBE_TYPES = frozenset({"AdminVM", "AppVM", "DispVM", "StandaloneVM", "TemplateVM"})
"""The qube classes ``@type:`` may name."""

_ADMIN_NAMES = frozenset({"dom0", "@adminvm"})

_ALLOWED_PARAMS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "allow": frozenset({"target", "user", "notify", "autostart"}),
        "ask": frozenset({"target", "user", "notify", "autostart", "default_target"}),
        "deny": frozenset({"notify"}),
    }
)
_BOOLEAN_PARAMS = frozenset({"notify", "autostart"})
_QUBE_PARAMS = frozenset({"target", "default_target"})

_SERVICE_RE = re.compile(r"[A-Za-z0-9._-]+")
_ARGUMENT_RE = re.compile(r"\+[A-Za-z0-9._+-]*")
_QUBE_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,30}")
_TAG_RE = re.compile(r"[A-Za-z0-9_-]+")
_USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_PARAM_KEY_RE = re.compile(r"[a-z_]+")
_FILENAME_RE = re.compile(r"[0-9a-z_.-]+\.policy")
_BLANK = " \t"

_EMPTY_PARAMS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class PolicyRule:
    """One parsed policy line.

    Attributes:
        service: The service name, or ``*`` for any service.
        argument: ``*`` (any argument) or ``+ARG`` as written (``+`` alone is the empty
            argument).
        source: The source column token (a name, ``@anyvm``, ``@tag:X``...).
        target: The target column token.
        action: ``allow``, ``deny`` or ``ask``.
        params: The ``key=value`` parameters, read-only.
        filename: The file the rule came from.
        lineno: Its 1-based line number.
    """

    service: str
    argument: str
    source: str
    target: str
    action: str
    params: Mapping[str, str] = field(hash=False)
    filename: str
    lineno: int


@dataclass(frozen=True)
class QubeInfo:
    """What the policy can see of a qube.

    Attributes:
        name: The qube's name.
        tags: Its tags (``qvm-tags``).
        klass: Its class, e.g. ``AppVM``, ``TemplateVM``, ``AdminVM``.
    """

    name: str
    tags: frozenset[str] = frozenset()
    klass: str = "AppVM"


@dataclass(frozen=True)
class Decision:
    """The outcome of evaluating one request.

    Attributes:
        action: ``allow``, ``deny`` or ``ask``.
        target: The qube the call goes to, after ``target=`` redirection (for ``deny``,
            the requested target).
        rule: The rule that decided, or ``None`` when none matched or the request
            named a qube that does not exist.
        params: The deciding rule's parameters (empty when ``rule`` is ``None``).
    """

    action: str
    target: str
    rule: PolicyRule | None
    params: Mapping[str, str] = field(hash=False)


# --- parsing ---------------------------------------------------------------------------


class _LineError(Exception):
    """Internal: a problem on the current line, located by the caller."""


def _quote(token: str) -> str:
    return f"'{sanitize(token)}'"


def _is_qube_name(token: str) -> bool:
    return _QUBE_NAME_RE.fullmatch(token) is not None and not token.startswith("@")


def _check_dispvm(spec: str) -> None:
    if spec == "@dispvm":
        return
    name = spec[len("@dispvm:") :]
    if not _is_qube_name(name):
        raise _LineError(f"bad disposable template in {_quote(spec)}")


def _check_qube_token(spec: str, column: str) -> None:
    """Check a source or target column token.

    Raises:
        _LineError: If the token is not valid in that column.
    """
    if spec in ("@anyvm", "@adminvm"):
        return
    if spec.startswith("@tag:"):
        if _TAG_RE.fullmatch(spec[len("@tag:") :]) is None:
            raise _LineError(f"bad tag in {column} column: {_quote(spec)}")
        return
    if spec.startswith("@type:"):
        if spec[len("@type:") :] not in QUBE_TYPES:
            raise _LineError(
                f"unknown qube type in {column} column: {_quote(spec)} "
                f"(one of {', '.join(sorted(QUBE_TYPES))})"
            )
        return
    if spec == "@default" or spec == "@dispvm" or spec.startswith("@dispvm:"):
        if column != "target":
            raise _LineError(f"{_quote(spec)} is allowed only in the target column")
        if spec != "@default":
            _check_dispvm(spec)
        return
    if _is_qube_name(spec):
        return
    raise _LineError(f"bad {column} token {_quote(spec)}")


def _check_param_qube(key: str, value: str) -> None:
    if value in _ADMIN_NAMES or _is_qube_name(value):
        return
    if value == "@dispvm" or value.startswith("@dispvm:"):
        _check_dispvm(value)
        return
    raise _LineError(f"{key}= must name one qube, not {_quote(value)}")


def _parse_params(action: str, tokens: Sequence[str]) -> Mapping[str, str]:
    allowed = _ALLOWED_PARAMS[action]
    params: dict[str, str] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or _PARAM_KEY_RE.fullmatch(key) is None:
            raise _LineError(f"bad parameter {_quote(token)} (expected key=value)")
        if key not in allowed:
            raise _LineError(
                f"parameter {_quote(key)} is not allowed with {action} "
                f"(allowed: {', '.join(sorted(allowed)) or 'none'})"
            )
        if key in params:
            raise _LineError(f"duplicate parameter {_quote(key)}")
        if key in _BOOLEAN_PARAMS:
            if value not in ("yes", "no"):
                raise _LineError(f"{key}= must be yes or no, not {_quote(value)}")
        elif key in _QUBE_PARAMS:
            _check_param_qube(key, value)
        elif key == "user" and _USER_RE.fullmatch(value) is None:
            raise _LineError(f"bad user name {_quote(value)}")
        params[key] = value
    return MappingProxyType(params)


def _parse_line(line: str, filename: str, lineno: int) -> PolicyRule | None:
    """Parse one line; ``None`` for blank and comment lines.

    Raises:
        _LineError: If the line is not a valid rule.
    """
    stripped = line.strip(_BLANK)
    if not stripped or stripped.startswith("#"):
        return None
    if stripped.startswith("!"):
        directive = stripped.split(maxsplit=1)[0]
        raise _LineError(f"directive {_quote(directive)} is not supported")
    tokens = [t for t in re.split(r"[ \t]+", stripped) if t]
    if any(t.startswith("#") for t in tokens):
        raise _LineError("inline comments are not allowed: '#' starts a comment only at line start")
    if len(tokens) < 5:
        raise _LineError(
            f"too few columns ({len(tokens)}): expected service argument source target action"
        )
    service, argument, source, target, action, *rest = tokens
    if service != "*" and _SERVICE_RE.fullmatch(service) is None:
        raise _LineError(f"bad service name {_quote(service)}")
    if argument != "*" and _ARGUMENT_RE.fullmatch(argument) is None:
        raise _LineError(f"bad argument {_quote(argument)} (expected * or +ARGUMENT)")
    if service == "*" and argument != "*":
        raise _LineError("a rule for any service (*) must have argument *")
    _check_qube_token(source, "source")
    _check_qube_token(target, "target")
    if action not in ACTIONS:
        raise _LineError(f"unknown action {_quote(action)} (expected allow, deny or ask)")
    params = _parse_params(action, rest)
    return PolicyRule(
        service=service,
        argument=argument,
        source=source,
        target=target,
        action=action,
        params=params,
        filename=filename,
        lineno=lineno,
    )


def _parse_collect(text: str, filename: str) -> tuple[list[PolicyRule], list[PolicySyntaxError]]:
    rules: list[PolicyRule] = []
    errors: list[PolicySyntaxError] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        try:
            rule = _parse_line(line, filename, lineno)
        except _LineError as exc:
            errors.append(PolicySyntaxError(str(exc), filename=filename, lineno=lineno))
            continue
        if rule is not None:
            rules.append(rule)
    return rules, errors


def parse_policy_text(text: str, filename: str) -> list[PolicyRule]:
    """Parse the text of one policy file.

    Args:
        text: The file's content. Lines are separated by ``\\n`` only; a stray
            ``\\r`` or other control character makes its line invalid.
        filename: The name used in rules and error messages.

    Returns:
        The rules in file order.

    Raises:
        PolicySyntaxError: On the first invalid line.
    """
    rules, errors = _parse_collect(text, filename)
    if errors:
        raise errors[0]
    return rules


def check_policy_filename(name: str) -> None:
    """Check that Qubes would read a policy file of this name.

    qrexec reads only files named ``[0-9a-z_.-]+.policy`` from ``policy.d`` and
    silently ignores the rest, which for a file meant to be installed is an error.

    Args:
        name: The file's base name.

    Raises:
        PolicySyntaxError: If the name does not match.
    """
    if _FILENAME_RE.fullmatch(name) is None:
        raise PolicySyntaxError(
            "policy file names must match [0-9a-z_.-]+.policy, or Qubes ignores the file",
            filename=name,
        )


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read policy file {sanitize(str(path))}: {exc.strerror or exc}",
            code="policy-unreadable",
        ) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicySyntaxError(f"not valid UTF-8 (byte {exc.start})", filename=path.name) from exc


def load_policy_dir(path: Path) -> list[PolicyRule]:
    """Read every ``*.policy`` file of a policy directory, as dom0 does.

    Files are read in C-locale (byte) order of their names; their rules are
    concatenated, so earlier files take precedence.

    Args:
        path: The directory, e.g. ``/etc/qubes/policy.d``.

    Returns:
        All rules, in evaluation order.

    Raises:
        PolicySyntaxError: If a file name or a line is invalid, or an entry named
            ``*.policy`` is not a regular file.
        ConfigError: If the directory or a file cannot be read.
    """
    try:
        entries = [p for p in path.iterdir() if p.name.endswith(".policy")]
    except OSError as exc:
        raise ConfigError(
            f"cannot read policy directory {sanitize(str(path))}: {exc.strerror or exc}",
            code="policy-unreadable",
        ) from exc
    rules: list[PolicyRule] = []
    for entry in sorted(entries, key=lambda p: os.fsencode(p.name)):
        check_policy_filename(entry.name)
        if not entry.is_file():
            raise PolicySyntaxError("not a regular file", filename=entry.name)
        rules.extend(parse_policy_text(_read_text(entry), entry.name))
    return rules


def check_policy_file(path: Path) -> list[str]:
    """List every problem of one policy file, for ``qgitconf policy check``.

    Args:
        path: The file to check.

    Returns:
        One message per problem (file name, unreadable file, each invalid line); an
        empty list means the file is fine.
    """
    problems: list[str] = []
    try:
        check_policy_filename(path.name)
    except PolicySyntaxError as exc:
        problems.append(str(exc))
    try:
        text = _read_text(path)
    except ConfigError as exc:
        problems.append(str(exc))
        return problems
    _, errors = _parse_collect(text, path.name)
    problems.extend(str(e) for e in errors)
    return problems


# --- evaluation ------------------------------------------------------------------------


def _is_keyword_target(name: str) -> bool:
    return name == "@default" or name == "@dispvm" or name.startswith("@dispvm:")


def _qube(name: str, qubes: Mapping[str, QubeInfo]) -> QubeInfo | None:
    """The qube a request names, or ``None`` if it does not exist."""
    if name in _ADMIN_NAMES:
        return qubes.get("dom0", QubeInfo("dom0", klass="AdminVM"))
    return qubes.get(name)


def _match_qube(spec: str, name: str, qubes: Mapping[str, QubeInfo]) -> bool:
    """Whether a source/target column token matches a requested qube or keyword."""
    if _is_keyword_target(name):
        # @default / @dispvm[:X] requests: matched by the same keyword, or @anyvm.
        return spec == name or spec == "@anyvm"
    info = _qube(name, qubes)
    is_admin = name in _ADMIN_NAMES
    if spec in _ADMIN_NAMES:
        return is_admin
    if info is None:
        return spec == name
    if spec == "@anyvm":
        return not is_admin
    if spec.startswith("@tag:"):
        return spec[len("@tag:") :] in info.tags
    if spec.startswith("@type:"):
        return spec[len("@type:") :] == info.klass
    if spec.startswith("@"):
        return False
    return spec == name


def _rule_matches(
    rule: PolicyRule,
    service: str,
    argument: str,
    source: str,
    target: str,
    qubes: Mapping[str, QubeInfo],
) -> bool:
    if rule.service not in ("*", service):
        return False
    if rule.argument != "*" and rule.argument[1:] != argument:
        return False
    return _match_qube(rule.source, source, qubes) and _match_qube(rule.target, target, qubes)


def _target_exists(name: str, qubes: Mapping[str, QubeInfo]) -> bool:
    if name == "@dispvm":
        return True
    if name.startswith("@dispvm:"):
        return name[len("@dispvm:") :] in qubes
    return _qube(name, qubes) is not None


def evaluate(
    rules: Sequence[PolicyRule],
    *,
    service: str,
    argument: str,
    source: str,
    target: str,
    qubes: Mapping[str, QubeInfo],
) -> Decision:
    """Decide one qrexec request as dom0 would.

    The first matching rule wins; no match means deny.  ``@anyvm`` matches every
    qube except dom0 (and, in the target column, the ``@default`` and ``@dispvm``
    keywords, as in Qubes); ``@adminvm`` and ``dom0`` match dom0 only.  A requested
    target that is neither a qube in ``qubes`` nor a keyword is denied without
    consulting the rules.  An ``allow`` that leaves the call at ``@default`` (no
    ``target=``) or redirects it to a qube that does not exist is turned into a deny
    that still names the rule.

    Args:
        rules: Rules in evaluation order (e.g. from :func:`load_policy_dir`).
        service: The service name, without ``+argument``.
        argument: The argument, ``""`` when the caller gave none.
        source: The calling qube's name.
        target: The requested target: a qube name, ``dom0``/``@adminvm``,
            ``@default``, ``@dispvm`` or ``@dispvm:NAME``.
        qubes: Every existing qube by name; dom0 may be left out.

    Returns:
        The decision.
    """
    if not _is_keyword_target(target) and _qube(target, qubes) is None:
        return Decision("deny", target, None, _EMPTY_PARAMS)
    if target.startswith("@dispvm:") and not _target_exists(target, qubes):
        return Decision("deny", target, None, _EMPTY_PARAMS)
    for rule in rules:
        if not _rule_matches(rule, service, argument, source, target, qubes):
            continue
        if rule.action == "deny":
            return Decision("deny", target, rule, rule.params)
        final = rule.params.get("target", target)
        if rule.action == "allow" and (final == "@default" or not _target_exists(final, qubes)):
            return Decision("deny", target, rule, rule.params)
        if rule.action == "ask" and final != "@default" and not _target_exists(final, qubes):
            return Decision("deny", target, rule, rule.params)
        return Decision(rule.action, final, rule, rule.params)
    return Decision("deny", target, None, _EMPTY_PARAMS)
