"""The target qube's commands that set it up and look at it: target init/remove, status,
review, diff, log, pull and git."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from qgitconf.cli.common import (
    PROGRESS_OPTION,
    counts_text,
    env,
    home,
    is_target,
    mgmt_repo,
    only_in_target,
    print_json,
    progress_echo,
    transport,
)
from qgitconf.errors import UsageError
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import RemovePlan

# Domain modules are imported in the command bodies: every process that reaches click
# pays for this module's top-level imports (the "start-up: qgitconf --version" row of
# docs/benchmarks.md).


@click.command("init")
@click.option("--source", required=True, help="The config-mgmt qube allowed to send updates.")
@click.option(
    "--key-file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Public key file holding exactly the key to pin.",
)
@click.option("--fingerprint", help="Expected full fingerprint (checked against the file).")
@click.option(
    "--allow",
    "allow",
    multiple=True,
    metavar="GLOB",
    help="Path glob updates may write (repeatable) [default: **].",
)
@click.option(
    "--force", is_flag=True, help="Also in the qube that holds the config-mgmt repository."
)
def target_init(
    source: str, key_file: str, fingerprint: str | None, allow: tuple[str, ...], force: bool
) -> None:
    """Make this qube a target: pin the signing key and the source qube.

    In the config-mgmt qube (it holds the repository) it refuses [wrong-side] unless
    --force: that would let what config-mgmt publishes change its own $HOME.
    """
    from qgitconf.agent.target import target_init as do
    from qgitconf.ops.side import check_target_init

    check_target_init(home(), env(), force=force)

    out = do(home(), source, Path(key_file), fingerprint, allow)
    click.echo(f"pinned {out['fingerprint']} ({', '.join(out['uids'])}); source {source}")
    click.echo(f"config: {out['config']}")


@click.command("remove")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def target_remove(yes: bool, as_json: bool) -> None:
    """Stop being a target (in the target): unpin and forget.

    Removes ~/.config/qgitconf/target.toml, the pinned keys and the agent state
    (~/.local/share/qgitconf: generations, kept originals and backups, the staged
    update).  The files qgitconf applied stay in $HOME as they are, no longer managed.
    In the config-mgmt qube it refuses [wrong-side].
    """
    only_in_target("target remove")
    from qgitconf.agent.target import target_remove as do
    from qgitconf.agent.target import target_remove_plan

    plan = target_remove_plan(home(), env())
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("not a terminal: run `qgitconf target remove --yes`")
        for line in _remove_lines(plan):
            click.echo(line, err=as_json)
        click.confirm("Forget this target?", abort=True, err=as_json)
    out = do(home(), env())
    if out.get("recovered"):
        click.echo(f"qgitconf: {out['recovered']}", err=True)
    if as_json:
        print_json(out)
        return
    for path in out["removed"]:
        click.echo(f"removed {sanitize(path)}")
    click.echo(
        f"this qube is no longer a qgitconf target; {out['managed']} applied file(s) stay in "
        "$HOME as they are"
    )
    click.echo(
        "also: in dom0 `qvm-tags QUBE del qgitconf-target`; in config-mgmt its branch and "
        "kept update stay until you remove them"
    )


def _remove_lines(plan: RemovePlan) -> list[str]:
    lines = ["This removes (the files qgitconf applied stay in $HOME as they are):"]
    lines += [f"  {sanitize(p)}" for p in plan["remove"]]
    lines.append(
        f"{plan['managed']} applied file(s) stay, no longer managed; {plan['generations']} "
        "generation(s) are forgotten: `qgitconf revert` cannot go back any more"
    )
    if plan["kept_copies"]:
        lines.append(
            f"{plan['kept_copies']} kept copies of your earlier files (originals, backups) "
            "are deleted with the state"
        )
    if plan["pending"]:
        lines.append("a staged update that was never applied is dropped")
    return lines


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(as_json: bool) -> None:
    """Show the state of this qube (target) or of every target (config-mgmt)."""
    if is_target():
        from qgitconf.agent.commands import status as target_status
        from qgitconf.agent.view import status_lines as target_lines

        out = target_status(home(), env())
        if out["recovered"]:
            click.echo(f"qgitconf: {out['recovered']}", err=True)
        if as_json:
            print_json(out)
            return
        for line in target_lines(out):  # the same lines as qgitconf.entry's status
            click.echo(line)
        return
    from qgitconf.mgmt.status import mgmt_status, status_lines

    data = mgmt_status(mgmt_repo())
    if as_json:
        print_json(data)
        return
    for t in data["targets"]:
        for line in status_lines(t):
            click.echo(line)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (schema: docs/review.md).")
@click.option("--gui", is_flag=True, help="Show it in a dialog; apply only on its Apply button.")
@PROGRESS_OPTION
def review(as_json: bool, gui: bool, show_progress: bool) -> None:
    """Show who signed the staged update, its risk report and what it changes (git diff).

    It prints the command that applies exactly what was shown: qgitconf apply
    --commit COMMIT.  The diff is made by the system's git with your git config and
    attributes switched off, so an earlier update cannot hide a change.  On a terminal
    it goes through the pager of GIT_PAGER/PAGER (a system program; less otherwise).
    With --gui and a display, a zenity dialog shows the same and applies that commit
    only on Apply (exit 1 on Cancel); without a display it falls back to the terminal.
    """
    only_in_target("review")
    from qgitconf.agent import render
    from qgitconf.agent import review as rv

    if gui and not as_json:
        from qgitconf.agent.gui import review_dialog

        result, rec = review_dialog(home(), env())
        if result == "applied" and rec is not None:
            click.echo(f"generation {rec['number']}: applied {rec['commit']}")
            return
        if result == "cancelled":
            click.echo("cancelled: nothing applied")
            sys.exit(1)
        click.echo("qgitconf: no display or no zenity; showing the review here", err=True)
    out = rv.review(home(), env(), progress_echo(show_progress))
    if as_json:
        print_json(out)
    elif sys.stdout.isatty():
        render.page(render.render_text(out, render.diff_colors(env())), env())
    else:
        click.echo(render.render_text(out), nl=False)


@click.command()
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option("--json", "as_json", is_flag=True, help="Print paths, states and the diff as JSON.")
@click.option(
    "--exit-code",
    is_flag=True,
    help="Exit 1 if a managed file changed locally, 0 if none did (as git diff --exit-code).",
)
def diff(paths: tuple[str, ...], as_json: bool, exit_code: bool) -> None:
    """Show the managed files changed locally since they were applied (diff applied ->
    now), limited to PATHs (files or directories below $HOME) if given.

    Made like review's diff: the system's git with your git config and attributes
    switched off, every line escaped, paged on a terminal (GIT_PAGER/PAGER, a system
    program).  A file that cannot be shown as a diff (a directory now, blocked) is
    named with a note.  Changes nothing.
    """
    only_in_target("diff")
    from qgitconf.agent import render
    from qgitconf.agent.localdiff import local_diff
    from qgitconf.errors import EXIT_FAILURE

    out = local_diff(home(), env(), paths)
    if out["interrupted"]:
        click.echo("qgitconf: an apply was interrupted; `qgitconf status` recovers it", err=True)
    if as_json:
        print_json(out)
    else:
        text = "".join(
            f"# {d['path']}: {'; '.join(d['notes'])}\n" for d in out["drift"] if d["notes"]
        )
        if sys.stdout.isatty() and (text or out["diff"]):
            colors = render.diff_colors(env())
            render.page(
                text + (render.colorize(out["diff"], colors) if colors else out["diff"]), env()
            )
        else:
            click.echo(text + out["diff"], nl=False)
    if exit_code and out["drift"]:
        sys.exit(EXIT_FAILURE)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def log(as_json: bool) -> None:
    """List the generations applied in this qube."""
    only_in_target("log")
    from qgitconf.agent.gitcmd import log as do

    gens = do(home())
    if as_json:
        print_json(gens)
        return
    click.echo("generation 0: before qgitconf")
    for g in gens:
        commit_id = (g["commit"] or "-")[:12]
        click.echo(
            f"generation {g['number']}: {g['time']} {g['kind']} {commit_id} "
            f"({counts_text(g)}) {g['note']}"
        )


@click.command()
def pull() -> None:
    """Fetch the update kept for this qube from its source qube, verify and stage it."""
    only_in_target("pull")
    from qgitconf.agent.pull import pull as do

    out = do(home(), env(), transport())
    if out is None:
        click.echo("nothing published for this qube yet")
        return
    click.echo(f"{out.result}: commit {out.commit[:12]}, sequence {out.sequence}")
    if out.result == "staged":
        click.echo("review with `qgitconf review`, then `qgitconf apply`")


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def git(args: tuple[str, ...]) -> None:
    """Run git on the agent repository (GIT_DIR and GIT_WORK_TREE set)."""
    only_in_target("git")
    from qgitconf.agent.gitcmd import git as do

    sys.exit(do(home(), env(), args))
