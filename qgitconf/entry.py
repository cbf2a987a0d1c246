"""The ``qgitconf`` command's entry point: the commands run most, without click.

``qgitconf status`` and ``qgitconf apply --yes`` (each with or without ``--json``),
exactly these words, in a qube that is a target, and ``qgitconf publish NAME...``
(with or without ``--json``; plain target names, no other option) run here: the same
command functions, the same lines (``qgitconf.agent.view``, ``qgitconf.mgmt.view``),
the same error messages and exit statuses as through ``qgitconf.cli``, but without
importing click, which costs every process some 20-35 ms (the status and apply rows
of ``make bench``: git's whole 1,000-file ``status`` takes about 13 ms; and its
"publish -> staged" row, where the whole git flow takes about 80 ms).  Any other
command line - other options, ``--help``, a typo, status or apply in a config-mgmt
qube - goes to ``qgitconf.cli.main``.
"""

from __future__ import annotations

import os
import sys

from qgitconf.errors import EXIT_BUG, EXIT_INTERRUPTED, QgitconfError, exit_now, leaving_process

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, NoReturn

_FAST = {
    ("status",): ("status", False),
    ("status", "--json"): ("status", True),
    ("apply", "--yes"): ("apply", False),
    ("apply", "--yes", "--json"): ("apply", True),
}


def _publish_args(args: list[str]) -> tuple[list[str], bool] | None:
    """``publish NAME... [--json]``: the target names and ``--json``; None for any
    other command line (an option, a word click would read as one, no name)."""
    if not args or args[0] != "publish":
        return None
    names = [a for a in args[1:] if a != "--json"]
    if not names or len(args) - 1 - len(names) > 1:
        return None
    if not all(a and not a.startswith("-") for a in names):
        return None
    return names, len(names) < len(args) - 1


def main() -> NoReturn:
    """Run ``qgitconf`` (the installed script's entry point)."""
    fast = _FAST.get(tuple(sys.argv[1:]))
    publish = _publish_args(sys.argv[1:]) if fast is None else None
    if publish is None and (fast is None or not _is_target()):
        from qgitconf.cli import main as full

        full()
    status = 0
    try:
        if publish is not None:
            status = _publish(*publish)
        elif fast is not None:
            _status(fast[1]) if fast[0] == "status" else _apply(fast[1])
    except QgitconfError as e:
        from qgitconf.sanitize import sanitize

        _err(f"qgitconf: error [{e.code}]: {sanitize(e.detail, keep_newlines=True)}")
        sys.exit(e.exit_status)
    except KeyboardInterrupt:
        _err("qgitconf: interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:
        from qgitconf.sanitize import sanitize

        _err(f"qgitconf: internal error: {sanitize(repr(e))} (run with --debug for details)")
        sys.exit(EXIT_BUG)
    finally:
        leaving_process()
    if publish is not None:  # the results are printed; qvm-run waits for the exit itself
        exit_now(status)
    sys.exit(status)


def _home_str() -> str:
    """$HOME as ``_home`` finds it, as a string (no ``pathlib`` while $HOME is set)."""
    home = os.environ.get("HOME")
    return home if home else str(_home())


def _home() -> Path:
    from pathlib import Path

    return Path(os.environ.get("HOME") or Path.home())


def _is_target() -> bool:
    """A user or the template-wide ``target.toml`` is there (``config``'s paths)."""
    from qgitconf.agent.configmemo import is_file

    user = is_file(os.path.join(_home_str(), ".config", "qgitconf", "target.toml"))
    if user == b"1":
        return True
    system = is_file("/etc/qgitconf/target.toml") if user == b"0" else None
    if system is not None:
        return system == b"1"
    from qgitconf.agent.where import system_config_path, user_config_path

    return user_config_path(_home()).is_file() or system_config_path().is_file()


def _out(lines: list[str]) -> None:
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    sys.stdout.flush()


def _err(line: str) -> None:
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()


def _json(value: Any) -> None:
    import json

    _out([json.dumps(value, indent=2, sort_keys=True)])


def _status(as_json: bool) -> None:
    from qgitconf.agent import statusfast
    from qgitconf.agent.view import status_lines

    out = statusfast.status(_home_str(), os.environ)  # the common case, light
    if out is None:
        from qgitconf.agent.status import status

        out = status(_home(), dict(os.environ))
    if out["recovered"]:
        _err(f"qgitconf: {out['recovered']}")
    _json(out) if as_json else _out(status_lines(out))


def _apply(as_json: bool) -> None:
    from qgitconf.agent.commands import apply
    from qgitconf.agent.view import apply_lines

    progress = None
    if sys.stderr.isatty():  # as qgitconf.cli: progress lines on a terminal
        progress = lambda text: _err(f"qgitconf: {text}")  # noqa: E731
    rec = apply(_home(), dict(os.environ), overwrite=False, progress=progress)
    if rec.get("recovered"):
        _err(f"qgitconf: {rec['recovered']}")
    _json(rec) if as_json else _out(apply_lines(rec, verbose=False))


def _publish(names: list[str], as_json: bool) -> int:
    """``qgitconf publish NAME... [--json]`` as ``qgitconf.cli.publish`` runs it
    (four targets at once, its ``--jobs`` default)."""
    from qgitconf.errors import EXIT_FAILURE
    from qgitconf.mgmt.publish import OK_STATUSES, PublishResult, publish_each
    from qgitconf.mgmt.repo import MgmtRepo, default_repo_path
    from qgitconf.mgmt.view import note_line, progress_line, publish_lines
    from qgitconf.ops.side import require_mgmt
    from qgitconf.qubes.qrexec import QrexecClient

    home, env = _home(), dict(os.environ)
    require_mgmt(home, env, "publish")
    repo = MgmtRepo(default_repo_path(home, env), home, env).require()

    def progress(done: int, total: int, r: PublishResult) -> None:
        line = progress_line(done, total, r)
        if line is not None:
            _err(line)

    def note(text: str) -> None:
        _err(note_line(text))

    if len(set(names)) > 1:
        # Lazy: concurrent.futures only for several targets; ``qgitconf publish NAME``
        # is the "publish -> staged" row of ``make bench``.
        from qgitconf.mgmt.publishjobs import publish_targets

        results = publish_targets(repo, names, QrexecClient(), progress=progress, note=note)
    else:
        results = publish_each(repo, names, QrexecClient(), progress=progress, note=note)
    _out(publish_lines(results, as_json))
    return EXIT_FAILURE if any(r.status not in OK_STATUSES for r in results) else 0
