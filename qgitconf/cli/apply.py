"""The commands that write a target's $HOME: apply (with its confirmation, dry run and
interactive picker), revert and restore."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from qgitconf.agent.view import SHOWN_SKIPPED
from qgitconf.cli.common import (
    PROGRESS_OPTION,
    complete_names,
    counts_text,
    env,
    home,
    mgmt_for,
    only_in_target,
    print_json,
    progress_echo,
)
from qgitconf.errors import UsageError
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import ApplyResult

# Domain modules are imported in the command bodies: every process that reaches click
# pays for this module's top-level imports (the "start-up: qgitconf --version" row of
# docs/benchmarks.md).


def _apply_interactive(commit: str | None) -> ApplyResult | None:
    """apply --interactive: the picker (agent/interactive.py) decides the --only list."""
    from qgitconf.agent import interactive
    from qgitconf.agent.render import diff_colors

    if not sys.stdin.isatty():
        raise UsageError("--interactive needs a terminal")
    colors = diff_colors(env()) if sys.stdout.isatty() else None
    choices = interactive.choose(
        home(),
        env(),
        lambda q: click.prompt(q, default="", show_default=False),
        click.echo,
        colors,
        expect=commit,
    )
    rec = interactive.apply_choices(home(), env(), choices)
    if rec is None:
        click.echo("quit: nothing applied" if choices.quit else "nothing accepted: nothing applied")
    return rec


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Overwrite files changed locally or not written by qgitconf (kept for revert).",
)
@click.option(
    "--keep",
    "keep",
    multiple=True,
    metavar="PATH",
    help="Leave PATH (a file or directory below $HOME) as it is this time (repeatable).",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    metavar="PATH",
    help="Apply only PATH (a file or directory below $HOME); repeatable.",
)
@click.option(
    "-i",
    "--interactive",
    is_flag=True,
    help="Show each changed file (risks, then diff) and accept or skip it.",
)
@click.option(
    "--commit",
    "commit",
    metavar="COMMIT",
    help="Apply only if the staged commit is COMMIT (the full id review printed); "
    "otherwise apply nothing and exit 1 [staged-changed].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help=f"List every file left out by --keep/--only (otherwise the first {SHOWN_SKIPPED}).",
)
@click.option(
    "-n",
    "--dry-run",
    is_flag=True,
    help="Print what it would write, remove, keep and stop on; change nothing.",
)
@PROGRESS_OPTION
def apply(
    yes: bool,
    overwrite: bool,
    keep: tuple[str, ...],
    only: tuple[str, ...],
    interactive: bool,
    commit: str | None,
    as_json: bool,
    verbose: bool,
    dry_run: bool,
    show_progress: bool,
) -> None:
    """Apply the staged update into $HOME (atomic writes, backups, journal).

    It names the commit it applies.  To apply exactly what `qgitconf review` showed,
    use the command it printed: qgitconf apply --commit COMMIT (a later update staged
    meanwhile is then refused, not applied unseen).  Without --yes it asks, naming the
    staged commit, and applies only that one.  --dry-run prints the plan and changes
    nothing.

    Nothing is written while any file in the way changed locally or was not written
    by qgitconf: apply then lists them and exits 1 [drift], before asking (see them
    with `qgitconf diff`); choose with --overwrite, --keep PATH or --only PATH (an
    --only PATH that matches no file is a usage error).  An interrupted earlier apply is rolled back
    (or finished) first; Ctrl-C (SIGINT) or SIGTERM part-way rolls back and exits 130
    or 143 [interrupted, terminated].
    """
    only_in_target("apply")
    from qgitconf.agent.commands import apply as do
    from qgitconf.agent.commands import check_commit_id

    if commit is not None:
        commit = check_commit_id(commit)
    if interactive:
        if yes or overwrite or keep or only or as_json or dry_run:
            raise UsageError(
                "--interactive asks per file: use it without "
                "--yes/--overwrite/--keep/--only/--json/--dry-run"
            )
        picked = _apply_interactive(commit)
        if picked is None:
            return
        rec = picked
    elif dry_run:
        _dry_run(as_json, kind="apply", overwrite=overwrite, keep=keep, only=only, commit=commit)
        return
    else:
        if not yes:
            commit = _confirm_apply(overwrite, keep, only, commit, as_json)
        rec = do(
            home(),
            env(),
            overwrite=overwrite,
            keep=keep,
            only=only or None,
            commit=commit,
            progress=progress_echo(show_progress),
        )
    if rec.get("recovered"):
        click.echo(f"qgitconf: {rec['recovered']}", err=True)
    if as_json:
        print_json(rec)
        return
    from qgitconf.agent.view import apply_lines

    for line in apply_lines(rec, verbose=verbose):  # the same lines as qgitconf.entry's apply
        click.echo(line)


def _confirm_apply(
    overwrite: bool,
    keep: tuple[str, ...],
    only: tuple[str, ...],
    commit: str | None,
    as_json: bool,
) -> str:
    """apply without --yes: stop at once on drift (named, with the choices), else ask,
    naming the commit and any file --overwrite would write over; the commit asked about.
    """
    from qgitconf.agent.preview import check_preview, plan_preview

    if not sys.stdin.isatty():
        raise UsageError(
            "not a terminal: review with `qgitconf review`, then use the "
            "`qgitconf apply --commit COMMIT` it prints, with --yes"
        )
    plan = plan_preview(
        home(), env(), overwrite=overwrite, keep=keep, only=only or None, commit=commit
    )
    check_preview(plan)  # drift without --overwrite: say so now, not after "y"
    shown = str(plan["commit"])
    if plan["up_to_date"]:
        return shown
    if plan["conflicts"]:
        click.echo("--overwrite writes over these files (the current ones are kept):", err=as_json)
        for line in plan["conflicts"]:
            click.echo(f"  {line}", err=as_json)
    click.confirm(f"Apply update {plan['sequence']}, commit {shown}?", abort=True, err=as_json)
    return shown  # apply what the question named, nothing staged after it


def _dry_run(as_json: bool, *, kind: str, **options: Any) -> None:
    """apply/revert --dry-run: print the plan (or its JSON); exit 1 [drift] if the real
    run would stop."""
    from qgitconf.agent.preview import check_preview, plan_preview

    only = options.pop("only", None)
    plan = plan_preview(home(), env(), kind=kind, only=only or None, **options)
    if as_json:
        print_json(plan)
    else:
        for line in _plan_lines(plan):
            click.echo(line)
    check_preview(plan)


def _plan_lines(plan: Mapping[str, Any]) -> list[str]:
    """The text of a dry run (everything in ``plan`` is sanitised already)."""
    head = "dry run: nothing was changed. "
    if plan["kind"] == "apply":
        head += f"apply update {plan['sequence']}, commit {plan['commit']}"
    else:
        head += f"revert to generation {plan['to']}, " + (
            f"commit {plan['commit']}" if plan["commit"] else "before qgitconf"
        )
    if plan["up_to_date"]:
        return [head, "  already applied: nothing to do"]
    lines = [head + f" would make generation {plan['generation']}:"]
    if plan.get("interrupted"):
        lines.append("  an interrupted apply is recovered first; the plan may then differ")
    kept = {k["path"]: k["at"] for k in plan["kept"]}
    for op, key in (("write", "write"), ("remove", "remove"), ("restore", "restore")):
        for path in plan[key]:
            extra = f"  (the current one kept in {kept[path]})" if path in kept else ""
            lines.append(f"  {op:<8} {path}{extra}")
    for path in plan["adopt"]:
        lines.append(f"  {'adopt':<8} {path}  (already as wanted; a copy is kept for revert)")
    for line in plan["conflicts"]:
        lines.append(f"  CONFLICT {line}")
    for line in plan["blockers"]:
        lines.append(f"  BLOCKED  {line}")
    for line in plan["left"]:
        lines.append(f"  {line}")
    if plan["skipped"]:
        lines.append(f"  left out this time: {len(plan['skipped'])} files")
    counts = ", ".join(f"{len(plan[k])} {k}" for k in ("write", "remove", "restore"))
    lines.append(f"  total: {counts}")
    return lines


def _print_kept(rec: ApplyResult) -> None:
    """Where --overwrite kept what it wrote over (`qgitconf revert` puts it back)."""
    from qgitconf.agent.view import kept_lines

    for line in kept_lines(rec):
        click.echo(line)


@click.command()
@click.argument("name", required=False, shell_complete=complete_names())
@click.option("--to", "to", help="Generation (target) or commit (config-mgmt) to go back to.")
@click.option(
    "--overwrite", is_flag=True, help="Target: overwrite local changes (kept as backups)."
)
@click.option("--json", "as_json", is_flag=True, help="Target: print the result as JSON.")
@click.option(
    "-n",
    "--dry-run",
    is_flag=True,
    help="Target: print what it would write, remove, keep and stop on; change nothing.",
)
@PROGRESS_OPTION
def revert(
    name: str | None,
    to: str | None,
    overwrite: bool,
    as_json: bool,
    dry_run: bool,
    show_progress: bool,
) -> None:
    """Go back: in a target, to an earlier generation; in config-mgmt, NAME's branch to an
    earlier commit (as a new signed commit)."""
    if name is not None:
        from qgitconf.mgmt.revert import revert_branch

        if dry_run:
            raise UsageError("--dry-run is for a target's revert (without NAME)")
        sha = revert_branch(mgmt_for("revert"), name, to)
        click.echo(f"{name}: committed {sha[:12]} restoring an earlier tree; publish it to send")
        return
    only_in_target("revert")
    from qgitconf.agent.commands import revert as do

    number = None
    if to is not None:
        if not to.isdigit():
            raise UsageError("--to takes a generation number in a target qube")
        number = int(to)
    if dry_run:
        _dry_run(as_json, kind="revert", to=number, overwrite=overwrite)
        return
    rec = do(home(), env(), to=number, overwrite=overwrite, progress=progress_echo(show_progress))
    if rec.get("recovered"):
        click.echo(f"qgitconf: {rec['recovered']}", err=True)
    if as_json:
        print_json(rec)
        return
    click.echo(f"generation {rec['number']}: {rec['note']} ({counts_text(rec)})")
    for line in rec.get("left", []):
        click.echo(f"  {line}")
    _print_kept(rec)


@click.command()
def restore() -> None:
    """Re-create applied files that are missing (never over a local change)."""
    only_in_target("restore")
    from qgitconf.agent.commands import restore as do

    rec = do(home(), env())
    if rec.get("recovered"):
        click.echo(f"qgitconf: {rec['recovered']}", err=True)
    click.echo(f"restored {len(rec['restored'])} missing file(s)")
    for path in rec["restored"]:
        click.echo(f"  restored {sanitize(path)}")
    for line in rec["left"]:
        click.echo(f"  {line}")
