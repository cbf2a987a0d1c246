"""Entry points of the qrexec services (``rpc/qgitconf.*`` exec these).

Deliberately tiny and free of click: parse nothing from the caller but stdin, take
the caller's name from ``QREXEC_REMOTE_DOMAIN`` (set by dom0), answer one JSON line.

DESIGN rule 12: real qrexec starts a service through ``sh -lc`` as the qube's user, so
the environment it inherits is whatever the user's ``~/.profile`` left.  The rpc files
start this module with ``env -i`` and an interpreter in isolated mode (``-I``: no user
site-packages, no ``PYTHON*`` variables, no current directory on ``sys.path``), and
:func:`service_env` keeps only the variables qrexec sets and the ones a notification
needs.  ``$HOME`` comes from the password database, this qube's name from QubesDB.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from qgitconf.errors import EXIT_BUG, QgitconfError, exit_now, leaving_process
from qgitconf.sanitize import sanitize

# What a service keeps of the environment it was started with: what qrexec itself
# sets, and what ``notify-send`` needs to reach the user's session.  Nothing here
# changes what a program loads or runs.
KEPT = (
    "QREXEC_REMOTE_DOMAIN",
    "QREXEC_SERVICE_FULL_NAME",
    "QREXEC_SERVICE_ARGUMENT",
    "QREXEC_REQUESTED_TARGET",
    "QREXEC_REQUESTED_TARGET_TYPE",
    "QREXEC_REQUESTED_TARGET_KEYWORD",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XDG_RUNTIME_DIR",
    "DBUS_SESSION_BUS_ADDRESS",
)


def service_env(environ: Mapping[str, str], home: Path) -> dict[str, str]:
    """The environment a service runs with: :data:`KEPT` from ``environ``, the system
    PATH, ``HOME`` and a UTF-8 locale; nothing else."""
    from qgitconf.sysprog import base_env

    env = base_env(home)
    env.update({k: environ[k] for k in KEPT if k in environ})
    return env


def _user_home() -> Path:
    """$HOME from the password database: ``~/.profile`` can export another HOME."""
    import pwd

    return Path(pwd.getpwuid(os.getuid()).pw_dir)


def _receive() -> int:
    from qgitconf.qubes import qubesdb

    # QubesDB answers while the agent's modules load (25-35 ms of imports; the lab's
    # qubesdb-read stand-in is a Python program of 20 ms, Qubes' own about 1 ms): the
    # "publish -> staged" row of ``make bench``
    asked = qubesdb.start_many(qubesdb.RECEIVE_KEYS)
    from qgitconf.agent.receive import accept_update, rejection_reply

    sender = os.environ.get("QREXEC_REMOTE_DOMAIN", "")
    home = Path(os.environ["HOME"])
    try:
        outcome = accept_update(sys.stdin.buffer, sender, home, os.environ, qubesdb_values=asked)
    except QgitconfError as e:
        print(json.dumps(rejection_reply(e)), flush=True)
        print(f"qgitconf: rejected: {e.code}: {sanitize(e.detail)}", file=sys.stderr)
        return e.exit_status
    if outcome.result == "staged":
        # lazy: a no-op receive (the start-up row of `make bench`) imports no review or apply
        from qgitconf.agent.autoapply import after_staging

        after_staging(home, os.environ, outcome)  # the opt-in auto-apply, then notify
    print(json.dumps(outcome.reply()), flush=True)
    return 0


def _fetch() -> int:
    """config-mgmt: the update kept for the caller; reads nothing from the caller."""
    from qgitconf.mgmt.fetch import kept_update_for
    from qgitconf.mgmt.repo import MgmtRepo, default_repo_path

    caller = os.environ.get("QREXEC_REMOTE_DOMAIN", "")
    home = Path(os.environ["HOME"])
    try:
        repo = MgmtRepo(default_repo_path(home, os.environ), home, os.environ)
        update = kept_update_for(repo, caller)
    except QgitconfError as e:
        print(f"qgitconf: {e.code}: {sanitize(e.detail)}", file=sys.stderr)
        return e.exit_status
    sys.stdout.buffer.write(update)
    sys.stdout.buffer.flush()
    return 0


def _export() -> int:
    """target: one regular file from $HOME, named on stdin (policy: ask)."""
    from qgitconf.agent.export import answer

    home = Path(os.environ["HOME"])
    try:
        data = answer(home, sys.stdin.buffer)
    except QgitconfError as e:
        print(f"qgitconf: export refused: {e.code}: {sanitize(e.detail)}", file=sys.stderr)
        return e.exit_status
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


SERVICES = {"receive": _receive, "fetch": _fetch, "export": _export}


def main(argv: list[str] | None = None) -> int:
    """Run the service named by ``argv[0]`` (fixed by the rpc file, never by the caller)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in SERVICES:
        print("usage: qgitconf-service receive|fetch|export", file=sys.stderr)
        return 2
    if argv is None:  # the rpc service's own process: start from a reduced environment
        reduced = service_env(os.environ, _user_home())
        os.environ.clear()
        os.environ.update(reduced)
    try:
        status = SERVICES[args[0]]()
    except Exception as e:  # a bug: answer something parseable, never a traceback
        if args[0] == "receive":
            print(json.dumps({"result": "error", "reason": "internal", "detail": type(e).__name__}))
        print(f"qgitconf: internal error: {sanitize(repr(e))}", file=sys.stderr)
        status = EXIT_BUG
    finally:
        if argv is None:  # the rpc service's process: it exits now
            leaving_process()
    if argv is None:  # answered: the caller waits for this process's end, not its teardown
        exit_now(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
