"""One exception hierarchy for qgitconf, split by trust boundary.

Every error carries a stable ``code`` (shown to users, written into Receive replies
and the rejected-update log) and an ``exit_status``.  Exit statuses are decided here
and nowhere else; the click layer only maps ``QgitconfError.exit_status``.

Exit statuses:
    0  success
    1  expected failure that needs the user's attention (e.g. drift)
    2  usage error (bad arguments)
    3  untrusted input rejected (a security rule of DESIGN.md fired)
    4  configuration error
    5  transport error (qrexec refused or failed)
    6  local state error
    70 internal error (a bug)
    130 interrupted by SIGINT (Ctrl-C); an apply or revert under way was rolled back
    143 terminated by SIGTERM; an apply or revert under way was rolled back

A command of the other side (``apply`` in the config-mgmt qube, ``publish`` in a
target) is a usage error (2, code ``wrong-side``).
"""

from __future__ import annotations

import gc
import os
import sys

from qgitconf.sanitize import sanitize

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import NoReturn

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3
EXIT_CONFIG = 4
EXIT_TRANSPORT = 5
EXIT_STATE = 6
EXIT_BUG = 70
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def leaving_process() -> None:
    """Call once the process has done its work and only exits: spares it the cyclic
    collector's passes over every live object at interpreter shutdown (about 15 ms
    after receiving 1,000 files).  Never in a process that goes on: the objects alive
    now are never collected afterwards (``gc.freeze``)."""
    gc.freeze()


def exit_now(status: int) -> NoReturn:
    """End a process whose work is done and whose answer is written: flush stdout and
    stderr, then ``os._exit``, without the interpreter's finalisation (every module
    torn down, 5-10 ms with dulwich loaded), which the caller's caller waits for: the
    Receive service's exit ends the qrexec call publish waits on, publish's own ends
    ``qvm-run`` (the "publish -> staged" row of ``make bench``).  Every file qgitconf
    writes is closed (and made durable) before its answer; nothing is left to atexit.
    """
    for stream in (sys.stdout, sys.stderr):
        # No contextlib.suppress: contextlib would bring functools and collections into
        # the no-drift status (the status 1k row of ``make bench``), which imports this.
        try:
            stream.flush()
        except (OSError, ValueError):  # the reader is gone (or the stream closed)
            continue  # nothing more to say
    os._exit(status)


class QgitconfError(Exception):
    """Base of every error qgitconf raises on purpose."""

    code = "error"
    exit_status = EXIT_FAILURE

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.detail


class UsageError(QgitconfError):
    """The command was called wrongly."""

    code = "usage"
    exit_status = EXIT_USAGE


class WrongSideError(UsageError):
    """A command of the other side: a target command in the config-mgmt qube, or a
    config-mgmt command in a target qube (or ``target init`` over a config-mgmt repo)."""

    code = "wrong-side"


class InterruptError(QgitconfError):
    """SIGINT (Ctrl-C) arrived; an apply or revert under way was rolled back (or had
    already reached its commit point and was finished)."""

    code = "interrupted"
    exit_status = EXIT_INTERRUPTED


class TerminatedError(InterruptError):
    """SIGTERM arrived; handled as SIGINT, with the conventional exit status 128 + 15."""

    code = "terminated"
    exit_status = EXIT_TERMINATED


# --- untrusted input: something another qube sent us broke a rule -----------------


class UntrustedInputError(QgitconfError):
    """Bytes from another qube violated a rule; the input is rejected."""

    code = "rejected"
    exit_status = EXIT_REJECTED


class MalformedError(UntrustedInputError):
    """Envelope, statement, bundle header or reply not in the exact format (rule 1)."""

    code = "malformed"


class TooLargeError(UntrustedInputError):
    """More bytes, objects or inflated data than the limits allow (rules 1, 5)."""

    code = "too-large"


class SignatureError(UntrustedInputError):
    """No single valid signature by a pinned key over the statement (rule 2)."""

    code = "signature-untrusted"


class WrongSourceError(UntrustedInputError):
    """The update came from a qube that is not the configured source (rule 3)."""

    code = "wrong-source"


class WrongTargetError(UntrustedInputError):
    """The statement names another qube (rule 4)."""

    code = "wrong-target"


class RollbackError(UntrustedInputError):
    """Sequence lower than the last accepted, or tip not descending from it (rules 4, 6)."""

    code = "rollback"


class ReplayError(UntrustedInputError):
    """Same sequence as the last accepted update but another commit (rule 4)."""

    code = "sequence-reused"


class ExpiredError(UntrustedInputError):
    """The statement's ``expires`` time has passed (rule 4)."""

    code = "expired"


class BundleError(UntrustedInputError):
    """The bundle does not match the statement or is not an acceptable bundle (rule 5)."""

    code = "bad-bundle"


class CommitSignatureError(UntrustedInputError):
    """The tip commit is unsigned or not signed by a pinned key (rule 6)."""

    code = "commit-signature-untrusted"


class UnsafePathError(UntrustedInputError):
    """A path, mode or symlink target of the tip tree is not allowed (rule 7)."""

    code = "unsafe-path"


class SystemPathError(UnsafePathError):
    """A system file of the tip tree is not allowed here (issue 15): system files off,
    a denied path, outside the allowed prefixes, or not a regular file."""

    code = "system-path-not-allowed"


class ExportWrongQubeError(UntrustedInputError):
    """An Export answer names another qube than the one ``import`` asked.

    dom0's ``ask`` dialog lists every tagged target and preselects none: the user
    may pick another qube than the one config-mgmt named.  Nothing is imported.
    """

    code = "export-wrong-qube"


class BadReplyError(UntrustedInputError):
    """A reply from a target qube is not in the documented schema."""

    code = "bad-reply"


# --- transport -----------------------------------------------------------------------


class TransportError(QgitconfError):
    """qrexec refused the call or failed."""

    code = "transport"
    exit_status = EXIT_TRANSPORT


class PolicyDeniedError(TransportError):
    """qrexec refused the call (qrexec-client-vm exit status 126, "Request refused"):
    dom0's policy denied it, or the target is not running and the policy does not
    start it (``autostart=no``).  Real qrexec does not say which."""

    code = "policy-denied"


class SourceOffError(PolicyDeniedError):
    """``qgitconf pull``: qrexec refused ``qgitconf.Fetch`` (exit 126).

    The shipped policy allows a tagged target's Fetch with ``autostart=no``, so the
    refusal means the management qube is not running; qrexec gives the same answer
    when the policy denies the call (e.g. the qube lacks its tag).
    """

    code = "source-off"


# --- local state and configuration --------------------------------------------------


class LocalStateError(QgitconfError):
    """This qube's own qgitconf state is missing, inconsistent or cannot be written."""

    code = "local-state"
    exit_status = EXIT_STATE


class NothingStagedError(LocalStateError):
    """There is no staged update to review or apply."""

    code = "nothing-staged"
    exit_status = EXIT_FAILURE


class StagedChangedError(LocalStateError):
    """The staged update is not the one that was reviewed (``apply --commit``, the
    interactive and GUI paths, auto-apply): another update was staged meanwhile.
    Nothing was applied; review again."""

    code = "staged-changed"
    exit_status = EXIT_FAILURE


class DriftError(QgitconfError):
    """Files changed locally, or existed before qgitconf, and apply needs a choice (rule 10)."""

    code = "drift"
    exit_status = EXIT_FAILURE


class ApplyError(LocalStateError):
    """Writing into $HOME failed safely (rule 9)."""

    code = "apply-failed"


class MergeConflictError(QgitconfError):
    """A layer does not merge cleanly into a target branch; nothing was published."""

    code = "merge-conflict"
    exit_status = EXIT_FAILURE


class LargeFileError(QgitconfError):
    """config-mgmt: a file is larger than a target accepts; nothing was added or committed."""

    code = "file-too-large"
    exit_status = EXIT_FAILURE


class SquashUnsafeError(QgitconfError):
    """config-mgmt: squashing would drop a commit the target may hold, or would not help."""

    code = "squash-unsafe"
    exit_status = EXIT_FAILURE


class ConfigError(QgitconfError):
    """qgitconf is not set up, or its configuration is invalid."""

    code = "config"
    exit_status = EXIT_CONFIG


class PolicySyntaxError(ConfigError):
    """A policy file, or a policy file name, is not in the accepted format.

    Attributes:
        filename: The file the problem is in.
        lineno: The 1-based line number, or ``None`` for a problem with the file as a
            whole (its name, its encoding).
        reason: The problem without the location prefix.
    """

    code = "policy-syntax"

    def __init__(self, reason: str, *, filename: str, lineno: int | None = None) -> None:
        """Build the error; the message names the file and, if given, the line.

        Args:
            reason: What is wrong.
            filename: The policy file's name.
            lineno: The 1-based line number, if the problem is on one line.
        """
        where = sanitize(filename) if lineno is None else f"{sanitize(filename)}:{lineno}"
        super().__init__(f"{where}: {reason}")
        self.filename = filename
        self.lineno = lineno
        self.reason = reason


class NothingToFetchError(QgitconfError):
    """No update is kept for the calling qube (unknown qube, or nothing published)."""

    code = "nothing-published"


class GitError(LocalStateError):
    """A git or gpg command this qube runs for itself failed."""

    code = "git"
