"""``qgitconf policy check``: validate policy files before they reach dom0.

A syntax error in any file under ``/etc/qubes/policy.d`` makes *every* qrexec call
fail, so the shipped ``90-qgitconf.policy`` (or a user's own rules) is checked here
before it is installed.  Two layers:

1. **Syntax** — :func:`qgitconf.core.policy.check_policy_file`: the file name rule, every
   token and parameter.  Each problem is reported as ``FILE:LINE: reason``.
2. **Behaviour** (samples) — a fixed table of requests (:data:`SAMPLES`) is evaluated
   first-match against the file's rules with a model of a typical system: the
   config-mgmt qube tagged ``qgitconf-mgmt``, two qubes tagged ``qgitconf-target``,
   an untagged qube, the vault and dom0.  It proves the rules do what the comments
   promise: the management qube may push only to tagged qubes and never starts them,
   only tagged qubes may fetch, only from the management qube and without starting
   it, Export always asks and starts nothing, a call with an argument is denied, and
   everything else is denied.

Samples run by default when the file is named ``90-qgitconf.policy`` (the shipped
name) and otherwise only with ``--samples``.  ``--mgmt-qube`` names the management
qube of the model (the shipped file names no qube: it matches the tag).

Pure except for reading the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qgitconf.core.policy import QubeInfo, check_policy_file, evaluate, parse_policy_text
from qgitconf.errors import ConfigError
from qgitconf.sanitize import sanitize

__all__ = [
    "MGMT_TAG",
    "SAMPLES",
    "SHIPPED_NAME",
    "TARGET_TAG",
    "PolicyReport",
    "Sample",
    "check_files",
    "check_samples",
    "sample_qubes",
]

SHIPPED_NAME = "90-qgitconf.policy"
"""The name the shipped policy file is installed under in dom0."""

TARGET_TAG = "qgitconf-target"
MGMT_TAG = "qgitconf-mgmt"
_MGMT = "{mgmt}"


@dataclass(frozen=True)
class Sample:
    """One request and the decision the qgitconf policy must give it.

    Attributes:
        service: The service name.
        source: The calling qube (``{mgmt}`` stands for the config-mgmt qube).
        target: The requested target.
        expect: ``allow``, ``deny`` or ``ask``.
        why: What the sample proves, shown when it fails.
        argument: The service argument (``""`` for none).
        params: Parameters the deciding rule must carry (e.g. ``autostart=no``).
    """

    service: str
    source: str
    target: str
    expect: str
    why: str
    argument: str = ""
    params: tuple[tuple[str, str], ...] = ()


_NO_START = (("autostart", "no"),)

SAMPLES: tuple[Sample, ...] = (
    Sample(
        "qgitconf.Receive",
        _MGMT,
        "personal",
        "allow",
        "the management qube pushes to a tagged target, without starting it",
        params=_NO_START,
    ),
    Sample(
        "qgitconf.Receive",
        _MGMT,
        "personal",
        "deny",
        "the services take no argument: a call with one matches no rule",
        argument="x",
    ),
    Sample("qgitconf.Receive", _MGMT, "untagged", "deny", "untagged qubes receive nothing"),
    Sample("qgitconf.Receive", _MGMT, "dom0", "deny", "nothing is pushed into dom0"),
    Sample("qgitconf.Receive", _MGMT, "@default", "deny", "no default target"),
    Sample("qgitconf.Receive", _MGMT, "@dispvm", "deny", "no disposable targets"),
    Sample("qgitconf.Receive", "untagged", "personal", "deny", "only the management qube pushes"),
    Sample("qgitconf.Receive", "work", "personal", "deny", "a target cannot push to another"),
    Sample("qgitconf.Receive", "vault", "personal", "deny", "the vault pushes nothing"),
    Sample(
        "qgitconf.Fetch",
        "personal",
        _MGMT,
        "allow",
        "a tagged target pulls its update, without starting the management qube",
        params=_NO_START,
    ),
    Sample("qgitconf.Fetch", "personal", _MGMT, "deny", "Fetch takes no argument", argument="x"),
    Sample("qgitconf.Fetch", "untagged", _MGMT, "deny", "untagged qubes cannot pull"),
    Sample("qgitconf.Fetch", "personal", "work", "deny", "Fetch goes to the management qube only"),
    Sample("qgitconf.Fetch", "personal", "vault", "deny", "Fetch goes to the management qube only"),
    Sample("qgitconf.Fetch", _MGMT, "personal", "deny", "Fetch is not a push path"),
    Sample(
        "qgitconf.Export",
        _MGMT,
        "personal",
        "ask",
        "dom0 asks before every export, and starts no halted target",
        params=_NO_START,
    ),
    Sample("qgitconf.Export", _MGMT, "personal", "deny", "Export takes no argument", argument="x"),
    Sample("qgitconf.Export", _MGMT, "untagged", "deny", "no export from untagged qubes"),
    Sample("qgitconf.Export", _MGMT, "@default", "deny", "no export without a named qube"),
    Sample("qgitconf.Export", "untagged", "personal", "deny", "only the management qube imports"),
    Sample("qgitconf.Export", "personal", "work", "deny", "targets cannot read each other"),
    Sample("qgitconf.Unknown", _MGMT, "personal", "deny", "unknown services are denied"),
)
"""The behaviour the shipped policy promises (see the comments in the file)."""


@dataclass(frozen=True)
class PolicyReport:
    """The outcome of checking some policy files.

    Attributes:
        problems: One ``FILE[:LINE]: reason`` message per problem, files in order.
        samples_run: How many sample requests were evaluated.
    """

    problems: tuple[str, ...]
    samples_run: int

    @property
    def ok(self) -> bool:
        """True when there is no problem."""
        return not self.problems


def sample_qubes(mgmt: str) -> dict[str, QubeInfo]:
    """The model system the samples run against.

    Args:
        mgmt: The config-mgmt qube's name.

    Returns:
        Qubes by name: ``mgmt`` (tagged ``qgitconf-mgmt``), ``personal`` and ``work``
        (tagged ``qgitconf-target``), ``untagged``, ``vault`` and dom0.
    """
    tagged = frozenset({TARGET_TAG})
    return {
        mgmt: QubeInfo(mgmt, frozenset({MGMT_TAG})),
        "personal": QubeInfo("personal", tagged),
        "work": QubeInfo("work", tagged),
        "untagged": QubeInfo("untagged"),
        "vault": QubeInfo("vault"),
        "dom0": QubeInfo("dom0", klass="AdminVM"),
    }


def check_samples(text: str, filename: str, *, mgmt: str = "config-mgmt") -> list[str]:
    """Evaluate :data:`SAMPLES` against one file's rules.

    Args:
        text: The policy file's content (already known to parse).
        filename: The name used in messages.
        mgmt: The config-mgmt qube's name.

    Returns:
        One message per sample whose decision differs from the expected one.
    """
    rules = parse_policy_text(text, filename)
    qubes = sample_qubes(mgmt)
    problems: list[str] = []
    for s in SAMPLES:
        source = mgmt if s.source == _MGMT else s.source
        target = mgmt if s.target == _MGMT else s.target
        d = evaluate(
            rules,
            service=s.service,
            argument=s.argument,
            source=source,
            target=target,
            qubes=qubes,
        )
        where = f"{filename}:{d.rule.lineno}" if d.rule else filename
        request = f"{s.service}{'+' + s.argument if s.argument else ''} {source} -> {target}"
        if d.action != s.expect:
            problems.append(
                f"{where}: sample {request}: got {d.action}, expected {s.expect} ({s.why})"
            )
            continue
        for key, value in s.params:
            if d.params.get(key) != value:
                problems.append(f"{where}: sample {request}: rule lacks {key}={value} ({s.why})")
    return problems


def _relocate(message: str, name: str, shown: str) -> str:
    # check_policy_file names the file by its base name; show the path the user gave.
    prefix = sanitize(name)
    return shown + message[len(prefix) :] if message.startswith(prefix) else message


def check_files(
    paths: Sequence[Path],
    *,
    samples: bool | None = None,
    mgmt: str = "config-mgmt",
) -> PolicyReport:
    """Check policy files: syntax always, sample decisions where asked.

    Args:
        paths: The files.
        samples: ``True`` to run the samples on every file, ``False`` never, ``None``
            only on files named :data:`SHIPPED_NAME`.
        mgmt: The config-mgmt qube's name used by the samples.

    Returns:
        The report.
    """
    problems: list[str] = []
    run = 0
    for path in paths:
        shown = sanitize(str(path))
        found = [_relocate(m, path.name, shown) for m in check_policy_file(path)]
        problems.extend(found)
        want = samples if samples is not None else path.name == SHIPPED_NAME
        if found or not want:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:  # raced with check_policy_file
            raise ConfigError(f"cannot read {shown}: {e}", code="policy-unreadable") from e
        problems.extend(
            _relocate(m, path.name, shown) for m in check_samples(text, path.name, mgmt=mgmt)
        )
        run += len(SAMPLES)
    return PolicyReport(tuple(problems), run)
