"""What every command module shares: $HOME and the environment, the side checks, the
progress option, name completion and JSON output."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from qgitconf.agent.records import ApplyResult, Generation

# Domain modules are imported inside the helpers: every process that reaches click pays
# for what the cli package imports at its top (the "start-up: qgitconf --version" row of
# docs/benchmarks.md).


def home() -> Path:
    """$HOME (the password database's home without it)."""
    return Path(os.environ.get("HOME") or Path.home())


def env() -> dict[str, str]:
    """A copy of the environment, as the domain functions take it."""
    return dict(os.environ)


def mgmt_repo(repo: str | None = None) -> Any:
    """The config-mgmt repository at ``repo`` (default: ~/qgitconf.git or $QGITCONF_REPO)."""
    from qgitconf.mgmt.repo import MgmtRepo, default_repo_path

    path = Path(repo) if repo else default_repo_path(home(), env())
    return MgmtRepo(path, home(), env())


def mgmt_for(command: str) -> Any:
    """The config-mgmt repository for ``command``; in a target qube, say where it runs."""
    from qgitconf.ops.side import require_mgmt

    require_mgmt(home(), env(), command)
    return mgmt_repo().require()


def only_in_target(command: str) -> None:
    """In the config-mgmt qube, say that target command ``command`` runs in a target."""
    from qgitconf.ops.side import require_target

    require_target(home(), env(), command)


def is_target() -> bool:
    """Whether this qube is a target (a target.toml exists)."""
    from qgitconf.agent.where import system_config_path, user_config_path

    return user_config_path(home()).is_file() or system_config_path().is_file()


def progress_echo(flag: bool) -> Callable[[str], None] | None:
    """Where progress lines go: stderr, when it is a terminal or with --progress."""
    if not (flag or sys.stderr.isatty()):
        return None
    return lambda text: click.echo(f"qgitconf: {text}", err=True)


PROGRESS_OPTION = click.option(
    "--progress",
    "show_progress",
    is_flag=True,
    help="Report progress on stderr for big trees (2,000 files or more) even when "
    "stderr is not a terminal.",
)


def complete_names(targets: bool = True, layers: bool = False) -> Callable[..., list[Any]]:
    """A shell_complete callback: the repository's target (and/or layer) names that
    start with what was typed; nothing in a target qube."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        from qgitconf.ops.side import completion_names

        names = completion_names(home(), env(), targets=targets, layers=layers)
        return [CompletionItem(n) for n in names if n.startswith(incomplete)]

    return complete


def print_json(value: Any) -> None:
    """Print ``value`` as --json does: indented, keys sorted."""
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def counts_text(rec: Generation | ApplyResult) -> str:
    """A generation's counts as status and log print them (``agent.view.counts``)."""
    from qgitconf.agent.view import counts

    return counts(rec)


def transport() -> Any:
    """The qrexec transport publish, pull and import call through."""
    from qgitconf.qubes.qrexec import QrexecClient

    return QrexecClient()
