"""The command line's entry: run the command tree, the one place where errors become exit
statuses (``QgitconfError.exit_status``; an unexpected exception is a bug, exit 70, shown
with a traceback only under ``--debug``)."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click

from qgitconf.cli.tree import cli
from qgitconf.errors import EXIT_BUG, EXIT_INTERRUPTED, QgitconfError, leaving_process
from qgitconf.sanitize import sanitize


def _run(argv: list[str] | None) -> Any:
    try:
        return cli.main(args=argv, prog_name="qgitconf", standalone_mode=False)
    finally:
        if argv is None:  # the qgitconf command's process: it exits now
            leaving_process()


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI; the one place where errors become exit statuses."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        rv = _run(argv)
    except QgitconfError as e:
        click.echo(
            f"qgitconf: error [{e.code}]: {sanitize(e.detail, keep_newlines=True)}", err=True
        )
        sys.exit(e.exit_status)
    except click.exceptions.Abort as e:
        if isinstance(e.__context__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            click.echo("qgitconf: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("qgitconf: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:
        if debug:
            import traceback  # only on this path: it costs every command a few ms

            traceback.print_exc()
        click.echo(
            f"qgitconf: internal error: {sanitize(repr(e))} (run with --debug for details)",
            err=True,
        )
        sys.exit(EXIT_BUG)
    sys.exit(rv if isinstance(rv, int) else 0)
