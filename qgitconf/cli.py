"""The command line: parse, call the domain code, print, map errors to exit codes.

Only this module imports click.  Exit statuses come from ``QgitconfError.exit_status``
(see ``qgitconf.errors``); an unexpected exception is a bug (exit 70), shown with a
traceback only under ``--debug``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from qgitconf import __version__
from qgitconf.agent.view import SHOWN_SKIPPED
from qgitconf.errors import (
    EXIT_BUG,
    EXIT_INTERRUPTED,
    QgitconfError,
    UsageError,
    leaving_process,
)
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import ApplyResult, Generation, RemovePlan


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def _env() -> dict[str, str]:
    return dict(os.environ)


def _mgmt_repo(repo: str | None = None) -> Any:
    from qgitconf.mgmt.repo import MgmtRepo, default_repo_path

    path = Path(repo) if repo else default_repo_path(_home(), _env())
    return MgmtRepo(path, _home(), _env())


def _mgmt(command: str) -> Any:
    """The config-mgmt repository for ``command``; in a target qube, say where it runs."""
    from qgitconf.ops.side import require_mgmt

    require_mgmt(_home(), _env(), command)
    return _mgmt_repo().require()


def _target(command: str) -> None:
    """In the config-mgmt qube, say that target command ``command`` runs in a target."""
    from qgitconf.ops.side import require_target

    require_target(_home(), _env(), command)


def _is_target() -> bool:
    from qgitconf.agent.where import system_config_path, user_config_path

    return user_config_path(_home()).is_file() or system_config_path().is_file()


def _progress(flag: bool) -> Callable[[str], None] | None:
    """Where progress lines go: stderr, when it is a terminal or with --progress."""
    if not (flag or sys.stderr.isatty()):
        return None
    return lambda text: click.echo(f"qgitconf: {text}", err=True)


_PROGRESS_OPTION = click.option(
    "--progress",
    "show_progress",
    is_flag=True,
    help="Report progress on stderr for big trees (2,000 files or more) even when "
    "stderr is not a terminal.",
)


def _names(targets: bool = True, layers: bool = False) -> Callable[..., list[Any]]:
    """A shell_complete callback: the repository's target (and/or layer) names that
    start with what was typed; nothing in a target qube."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        from qgitconf.ops.side import completion_names

        names = completion_names(_home(), _env(), targets=targets, layers=layers)
        return [CompletionItem(n) for n in names if n.startswith(incomplete)]

    return complete


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _counts(rec: Generation | ApplyResult) -> str:
    from qgitconf.agent.view import counts

    return counts(rec)


def _transport() -> Any:
    from qgitconf.qubes.qrexec import QrexecClient

    return QrexecClient()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qgitconf")
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Signed, Git-backed dotfiles for Qubes OS qubes.

    In the config-mgmt qube: init, target add, layer add, edit/add/commit, publish,
    status, revert TARGET, squash TARGET, import.  In a target qube: target init, pull, review,
    apply, revert, status, log, git; as root, system apply/revert/restore (files in /etc
    and /usr/local, where dom0 allows them).  Anywhere: lab (Qubes' own qrexec and
    split-GPG on this machine, for trying it out).
    """
    ctx.obj = {"debug": debug}


# -- config-mgmt ------------------------------------------------------------------------


@cli.command()
@click.option(
    "--signing-key",
    required=True,
    metavar="FPR",
    help="Key (in the vault) that signs commits and updates.",
)
@click.option(
    "--gpg-program",
    default="qubes-gpg-client-wrapper",
    show_default=True,
    help="Program git and publish sign with (split-GPG in Qubes).",
)
@click.option("--repo", type=click.Path(), help="Bare repository path [default: ~/qgitconf.git].")
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Public half of the signing key, for the pre-receive hook "
    "[default: looked for in ~/QubesIncoming/*/].",
)
@click.option("--force", is_flag=True, help="Also in a qube that is a target.")
def init(
    signing_key: str, gpg_program: str, repo: str | None, key_file: str | None, force: bool
) -> None:
    """Create the config-mgmt repository (bare, signed commits, hooks).

    In a target qube it refuses [wrong-side] unless --force.
    """
    from qgitconf.ops.side import check_mgmt_init

    check_mgmt_init(_home(), _env(), force=force)
    r = _mgmt_repo(repo)
    has_key = r.init(signing_key, gpg_program, Path(key_file).read_bytes() if key_file else None)
    click.echo(f"initialised {r.path} (signing key {signing_key}, gpg.program {gpg_program})")
    if not has_key:
        click.echo(
            "warning: public key not found: the pre-receive hook refuses every push until "
            f"it is saved as {r.meta / 'signing-key.asc'}",
            err=True,
        )


@cli.group()
def target() -> None:
    """Manage target qubes (add in config-mgmt, init in the target)."""


@target.command("add")
@click.argument("name")
@click.option(
    "--layer",
    "layers",
    multiple=True,
    help="Shared branch merged into this target.",
    shell_complete=_names(targets=False, layers=True),
)
def target_add(name: str, layers: tuple[str, ...]) -> None:
    """Create the branch for target qube NAME (config-mgmt)."""
    tip = _mgmt("target add").target_add(name, layers)
    click.echo(f"target {name}: branch refs/heads/{name} at {tip[:12]}")


@target.command("list")
def target_list() -> None:
    """List the targets of the config-mgmt repository."""
    for name, info in sorted(_mgmt("target list").targets().items()):
        layers = ", ".join(info.get("layers", []))
        click.echo(f"{name}" + (f" (layers: {layers})" if layers else ""))


@cli.group()
def layer() -> None:
    """Manage layers: shared branches merged into the targets that name them."""


@layer.command("add")
@click.argument("name", shell_complete=_names(targets=False, layers=True))
@click.option(
    "--to",
    "to",
    multiple=True,
    metavar="TARGET",
    help="Also merge it into TARGET.",
    shell_complete=_names(),
)
def layer_add(name: str, to: tuple[str, ...]) -> None:
    """Create the shared branch NAME (config-mgmt) and/or merge it into existing targets.

    New targets name layers with `target add NAME --layer LAYER`.
    """
    repo = _mgmt("layer add")
    if name not in repo.layers() or not to:
        tip = repo.layer_add(name)
        click.echo(f"layer {name}: branch refs/heads/{name} at {tip[:12]}")
    for t in to:
        repo.attach_layer(name, t)
        click.echo(f"target {t}: merges layer {name} at publish")


@layer.command("list")
def layer_list() -> None:
    """List the layers and the targets that use them."""
    repo = _mgmt("layer list")
    targets = repo.targets()
    for name in sorted(repo.layers()):
        users = [t for t, info in sorted(targets.items()) if name in info.get("layers", [])]
        click.echo(f"{name} (used by: {', '.join(users) or '-'})")


@target.command("init")
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

    check_target_init(_home(), _env(), force=force)

    out = do(_home(), source, Path(key_file), fingerprint, allow)
    click.echo(f"pinned {out['fingerprint']} ({', '.join(out['uids'])}); source {source}")
    click.echo(f"config: {out['config']}")


@target.command("remove")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def target_remove(yes: bool, as_json: bool) -> None:
    """Stop being a target (in the target): unpin and forget.

    Removes ~/.config/qgitconf/target.toml, the pinned keys and the agent state
    (~/.local/share/qgitconf: generations, kept originals and backups, the staged
    update).  The files qgitconf applied stay in $HOME as they are, no longer managed.
    In the config-mgmt qube it refuses [wrong-side].
    """
    _target("target remove")
    from qgitconf.agent.target import target_remove as do
    from qgitconf.agent.target import target_remove_plan

    plan = target_remove_plan(_home(), _env())
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("not a terminal: run `qgitconf target remove --yes`")
        for line in _remove_lines(plan):
            click.echo(line, err=as_json)
        click.confirm("Forget this target?", abort=True, err=as_json)
    out = do(_home(), _env())
    if out.get("recovered"):
        click.echo(f"qgitconf: {out['recovered']}", err=True)
    if as_json:
        _print_json(out)
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


@cli.command()
@click.argument("name", shell_complete=_names(layers=True))
def edit(name: str) -> None:
    """Print the path of a worktree of NAME's branch to edit and commit in with git."""
    click.echo(str(_mgmt("edit").worktree(name)))


@cli.command()
@click.argument("name", shell_complete=_names(layers=True))
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--as", "dest", metavar="PATH", help="Path in the branch (default: relative to $HOME)."
)
@click.option(
    "--allow-large",
    is_flag=True,
    help="Take files larger than a target accepts by default (64 MiB; only for targets "
    "whose target.toml raises max_object_bytes).",
)
def add(name: str, files: tuple[str, ...], dest: str | None, allow_large: bool) -> None:
    """Copy FILES into NAME's branch worktree and stage them.

    A file larger than a target accepts is refused (it would block every later
    update to the target), unless --allow-large.
    """
    repo = _mgmt("add")
    for rel in repo.add(name, [Path(f) for f in files], dest, allow_large=allow_large):
        click.echo(f"added {rel}")


@cli.command()
@click.argument("name", shell_complete=_names(layers=True))
@click.option("-m", "--message", required=True, help="Commit message.")
@click.option(
    "--allow-large",
    is_flag=True,
    help="Commit files larger than a target accepts by default (see add --allow-large).",
)
def commit(name: str, message: str, allow_large: bool) -> None:
    """Commit what is staged for NAME (signed through gpg.program).

    A staged file larger than a target accepts is refused, unless --allow-large.
    """
    sha = _mgmt("commit").commit(name, message, allow_large=allow_large)
    click.echo(f"{name}: committed {sha[:12]} (signed)")


@cli.command()
@click.argument("targets", nargs=-1, shell_complete=_names())
@click.option("--all", "all_", is_flag=True, help="Publish to every target.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option(
    "-j",
    "--jobs",
    default=4,
    show_default=True,
    type=click.IntRange(1, 32),
    help="Targets published at once.",
)
@click.option(
    "-n",
    "--dry-run",
    is_flag=True,
    help="Show what would be sent (sequence, commit, prerequisite, size); sign and send nothing.",
)
def publish(targets: tuple[str, ...], all_: bool, as_json: bool, jobs: int, dry_run: bool) -> None:
    """Merge layers, then build, sign and send updates to TARGETS over qrexec.

    A target that qrexec refuses (exit 126) is reported as denied: dom0's policy
    refused the call, or the target is not running and the policy does not start it
    (qrexec does not say which); a stopped target gets the kept update with
    `qgitconf pull` when it starts.
    """
    from qgitconf.errors import EXIT_FAILURE
    from qgitconf.mgmt.publish import OK_STATUSES, PublishResult, publish_targets
    from qgitconf.mgmt.view import note_line, progress_line, publish_lines

    repo = _mgmt("publish")
    names = sorted(repo.targets()) if all_ else list(targets)
    if not names:
        raise UsageError("name a target or use --all")
    if dry_run:
        _publish_dry_run(repo, names, as_json)
        return

    def progress(done: int, total: int, r: PublishResult) -> None:
        line = progress_line(done, total, r)
        if line is not None:
            click.echo(line, err=True)

    def note(text: str) -> None:
        click.echo(note_line(text), err=True)

    results = publish_targets(repo, names, _transport(), jobs=jobs, progress=progress, note=note)
    for line in publish_lines(results, as_json):
        click.echo(line)
    if any(r.status not in OK_STATUSES for r in results):
        sys.exit(EXIT_FAILURE)


def _publish_dry_run(repo: Any, names: list[str], as_json: bool) -> None:
    from qgitconf.mgmt.publish import plan_publish
    from qgitconf.mgmt.sizes import human

    plans = plan_publish(repo, names)
    if as_json:
        _print_json(
            [
                {
                    "target": p.target,
                    "action": p.action,
                    "sequence": p.sequence,
                    "commit": p.commit,
                    "base": p.base,
                    "prerequisite": p.prerequisite,
                    "bundle_bytes": p.bundle_bytes,
                    "merges": list(p.merges),
                    "too_large": [{"path": f.path, "size": f.size} for f in p.too_large],
                }
                for p in plans
            ]
        )
        return
    for p in plans:
        what = "resend the kept update" if p.action == "resend" else "new update"
        commit = p.commit[:12] if p.commit else f"merge of {', '.join(p.merges)} onto {p.base[:12]}"
        prereq = p.prerequisite[:12] if p.prerequisite else "none (full history)"
        click.echo(
            f"{p.target}: would send {what}: seq {p.sequence}, commit {commit}, "
            f"prerequisite {prereq}, bundle {human(p.bundle_bytes)} ({p.bundle_bytes} bytes)"
        )
        for f in p.too_large:
            click.echo(
                f"  too large for a target's default limit: {sanitize(f.path)} ({human(f.size)})"
            )


@cli.command()
@click.argument("name", shell_complete=_names())
@click.option("-n", "--dry-run", is_flag=True, help="Show what it would drop; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def squash(name: str, dry_run: bool, as_json: bool) -> None:
    """Replace the commits target NAME has not accepted yet by one signed commit.

    Its parent is the last commit NAME reported as accepted and its tree is the
    branch tip's, so NAME still receives a descendant of what it accepted.  The way
    out after a commit NAME refuses (a file over its size limit): remove the file,
    commit, squash, publish.
    """
    from qgitconf.mgmt.sizes import human
    from qgitconf.mgmt.squash import squash as do

    plan = do(_mgmt("squash"), name, dry_run=dry_run)
    if as_json:
        _print_json({**plan.as_json(), "dry_run": dry_run})
        return
    if not plan.dropped:
        click.echo(f"{name}: nothing to squash (no commits beyond what {name} accepted)")
        return
    verb = "would replace" if dry_run else "replaced"
    base = f"on {plan.base[:12]}" if plan.base else "as a new root commit"
    click.echo(f"{name}: {verb} {len(plan.dropped)} commits by one {base}:")
    for sha, subject in plan.dropped:
        click.echo(f"  {sha[:12]} {subject}")
    for layer, point in plan.layers:
        click.echo(f"  keeps layer {layer} at {point[:12]} as a parent")
    for f in plan.removed:
        click.echo(f"  drops {sanitize(f.path)} ({human(f.size)}) from the unaccepted history")
    if plan.new:
        click.echo(f"{name}: committed {plan.new[:12]} (signed); publish it to send")


@cli.command("import")
@click.argument("qube", required=False)
@click.argument("path", required=False)
@click.option(
    "--into", metavar="TARGET", help="Target branch the file is for.", shell_complete=_names()
)
@click.option("--list", "list_", is_flag=True, help="List the imports in quarantine.")
@click.option("--review", "review_id", metavar="ID", help="Show a quarantined import.")
@click.option("--accept", "accept_id", metavar="ID", help="Commit it (signed) onto its branch.")
@click.option("--drop", "drop_id", metavar="ID", help="Discard it.")
@click.option("--allow-secret", is_flag=True, help="Accept even if it looks like a secret.")
@click.option("--json", "as_json", is_flag=True, help="With --list: the list as JSON.")
def import_(
    qube: str | None,
    path: str | None,
    into: str | None,
    list_: bool,
    review_id: str | None,
    accept_id: str | None,
    drop_id: str | None,
    allow_secret: bool,
    as_json: bool,
) -> None:
    """Fetch PATH (relative to its home) out of QUBE into quarantine, for TARGET.

    The qube's qgitconf.Export service sends it (dom0 asks you first).  It lands on
    refs/qgitconf/import/ID, never on a branch: review it with --review ID, then
    --accept ID (a new signed commit) or --drop ID.
    """
    from qgitconf.mgmt import importing

    repo = _mgmt("import")
    actions = sum(x is not None for x in (review_id, accept_id, drop_id)) + list_
    if actions > 1 or (actions and (qube or path)):
        raise UsageError("use one of QUBE PATH --into TARGET, --list, --review, --accept, --drop")
    if as_json and not list_:
        raise UsageError("--json goes with --list")
    if list_ and as_json:
        _print_json(importing.list_imports(repo))
    elif list_:
        for e in importing.list_imports(repo):
            click.echo(
                f"{e['id']}: {sanitize(e['path'])} from {e['qube']} for {e['into']} "
                f"({e['size']} bytes, {e['created']})"
            )
    elif review_id is not None:
        out = importing.review(repo, review_id)
        click.echo(
            f"import {out['id']}: {out['path']} from {out['qube']} (untrusted) for {out['into']}"
        )
        click.echo(f"mode {out['mode']}, {out['size']} bytes")
        for note in out["notes"]:
            click.echo(f"  RISK: {note}")
        click.echo("")
        click.echo(out["diff"], nl=False)
    elif accept_id is not None:
        sha = importing.accept(repo, accept_id, allow_secret)
        click.echo(f"import {accept_id}: committed {sha[:12]} (signed); publish it to send")
    elif drop_id is not None:
        importing.drop(repo, drop_id)
        click.echo(f"import {drop_id}: dropped")
    else:
        if not (qube and path and into):
            raise UsageError("usage: qgitconf import QUBE PATH --into TARGET")
        ident = importing.import_file(repo, qube, path, into, _transport())
        click.echo(f"import {ident}: in quarantine; review with: qgitconf import --review {ident}")


# -- both sides ---------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(as_json: bool) -> None:
    """Show the state of this qube (target) or of every target (config-mgmt)."""
    if _is_target():
        from qgitconf.agent.commands import status as target_status
        from qgitconf.agent.view import status_lines as target_lines

        out = target_status(_home(), _env())
        if out["recovered"]:
            click.echo(f"qgitconf: {out['recovered']}", err=True)
        if as_json:
            _print_json(out)
            return
        for line in target_lines(out):  # the same lines as qgitconf.entry's status
            click.echo(line)
        return
    from qgitconf.mgmt.status import mgmt_status, status_lines

    data = mgmt_status(_mgmt_repo())
    if as_json:
        _print_json(data)
        return
    for t in data["targets"]:
        for line in status_lines(t):
            click.echo(line)


@cli.command()
@click.argument("name", required=False, shell_complete=_names())
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
@_PROGRESS_OPTION
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
        sha = revert_branch(_mgmt("revert"), name, to)
        click.echo(f"{name}: committed {sha[:12]} restoring an earlier tree; publish it to send")
        return
    _target("revert")
    from qgitconf.agent.commands import revert as do

    number = None
    if to is not None:
        if not to.isdigit():
            raise UsageError("--to takes a generation number in a target qube")
        number = int(to)
    if dry_run:
        _dry_run(as_json, kind="revert", to=number, overwrite=overwrite)
        return
    rec = do(_home(), _env(), to=number, overwrite=overwrite, progress=_progress(show_progress))
    if rec.get("recovered"):
        click.echo(f"qgitconf: {rec['recovered']}", err=True)
    if as_json:
        _print_json(rec)
        return
    click.echo(f"generation {rec['number']}: {rec['note']} ({_counts(rec)})")
    for line in rec.get("left", []):
        click.echo(f"  {line}")
    _print_kept(rec)


# -- target ------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON (schema: docs/review.md).")
@click.option("--gui", is_flag=True, help="Show it in a dialog; apply only on its Apply button.")
@_PROGRESS_OPTION
def review(as_json: bool, gui: bool, show_progress: bool) -> None:
    """Show who signed the staged update, its risk report and what it changes (git diff).

    It prints the command that applies exactly what was shown: qgitconf apply
    --commit COMMIT.  The diff is made by the system's git with your git config and
    attributes switched off, so an earlier update cannot hide a change.  On a terminal
    it goes through the pager of GIT_PAGER/PAGER (a system program; less otherwise).
    With --gui and a display, a zenity dialog shows the same and applies that commit
    only on Apply (exit 1 on Cancel); without a display it falls back to the terminal.
    """
    _target("review")
    from qgitconf.agent import render
    from qgitconf.agent import review as rv

    if gui and not as_json:
        from qgitconf.agent.gui import review_dialog

        result, rec = review_dialog(_home(), _env())
        if result == "applied" and rec is not None:
            click.echo(f"generation {rec['number']}: applied {rec['commit']}")
            return
        if result == "cancelled":
            click.echo("cancelled: nothing applied")
            sys.exit(1)
        click.echo("qgitconf: no display or no zenity; showing the review here", err=True)
    out = rv.review(_home(), _env(), _progress(show_progress))
    if as_json:
        _print_json(out)
    elif sys.stdout.isatty():
        render.page(render.render_text(out, render.diff_colors(_env())), _env())
    else:
        click.echo(render.render_text(out), nl=False)


@cli.command()
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
    _target("diff")
    from qgitconf.agent import render
    from qgitconf.agent.localdiff import local_diff
    from qgitconf.errors import EXIT_FAILURE

    out = local_diff(_home(), _env(), paths)
    if out["interrupted"]:
        click.echo("qgitconf: an apply was interrupted; `qgitconf status` recovers it", err=True)
    if as_json:
        _print_json(out)
    else:
        text = "".join(
            f"# {d['path']}: {'; '.join(d['notes'])}\n" for d in out["drift"] if d["notes"]
        )
        if sys.stdout.isatty() and (text or out["diff"]):
            colors = render.diff_colors(_env())
            render.page(
                text + (render.colorize(out["diff"], colors) if colors else out["diff"]), _env()
            )
        else:
            click.echo(text + out["diff"], nl=False)
    if exit_code and out["drift"]:
        sys.exit(EXIT_FAILURE)


def _apply_interactive(commit: str | None) -> ApplyResult | None:
    """apply --interactive: the picker (agent/interactive.py) decides the --only list."""
    from qgitconf.agent import interactive
    from qgitconf.agent.render import diff_colors

    if not sys.stdin.isatty():
        raise UsageError("--interactive needs a terminal")
    colors = diff_colors(_env()) if sys.stdout.isatty() else None
    choices = interactive.choose(
        _home(),
        _env(),
        lambda q: click.prompt(q, default="", show_default=False),
        click.echo,
        colors,
        expect=commit,
    )
    rec = interactive.apply_choices(_home(), _env(), choices)
    if rec is None:
        click.echo("quit: nothing applied" if choices.quit else "nothing accepted: nothing applied")
    return rec


@cli.command()
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
@_PROGRESS_OPTION
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
    _target("apply")
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
            _home(),
            _env(),
            overwrite=overwrite,
            keep=keep,
            only=only or None,
            commit=commit,
            progress=_progress(show_progress),
        )
    if rec.get("recovered"):
        click.echo(f"qgitconf: {rec['recovered']}", err=True)
    if as_json:
        _print_json(rec)
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
        _home(), _env(), overwrite=overwrite, keep=keep, only=only or None, commit=commit
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
    plan = plan_preview(_home(), _env(), kind=kind, only=only or None, **options)
    if as_json:
        _print_json(plan)
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


def _print_skipped(skipped: list[str], *, verbose: bool) -> None:
    """The files --keep/--only left out: all with --verbose, else a count and the first few."""
    from qgitconf.agent.view import skipped_lines

    for line in skipped_lines(skipped, verbose=verbose):
        click.echo(line)


@cli.command()
def restore() -> None:
    """Re-create applied files that are missing (never over a local change)."""
    _target("restore")
    from qgitconf.agent.commands import restore as do

    rec = do(_home(), _env())
    if rec.get("recovered"):
        click.echo(f"qgitconf: {rec['recovered']}", err=True)
    click.echo(f"restored {len(rec['restored'])} missing file(s)")
    for path in rec["restored"]:
        click.echo(f"  restored {sanitize(path)}")
    for line in rec["left"]:
        click.echo(f"  {line}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def log(as_json: bool) -> None:
    """List the generations applied in this qube."""
    _target("log")
    from qgitconf.agent.gitcmd import log as do

    gens = do(_home())
    if as_json:
        _print_json(gens)
        return
    click.echo("generation 0: before qgitconf")
    for g in gens:
        commit_id = (g["commit"] or "-")[:12]
        click.echo(
            f"generation {g['number']}: {g['time']} {g['kind']} {commit_id} "
            f"({_counts(g)}) {g['note']}"
        )


@cli.command()
def pull() -> None:
    """Fetch the update kept for this qube from its source qube, verify and stage it."""
    _target("pull")
    from qgitconf.agent.pull import pull as do

    out = do(_home(), _env(), _transport())
    if out is None:
        click.echo("nothing published for this qube yet")
        return
    click.echo(f"{out.result}: commit {out.commit[:12]}, sequence {out.sequence}")
    if out.result == "staged":
        click.echo("review with `qgitconf review`, then `qgitconf apply`")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def git(args: tuple[str, ...]) -> None:
    """Run git on the agent repository (GIT_DIR and GIT_WORK_TREE set)."""
    _target("git")
    from qgitconf.agent.gitcmd import git as do

    sys.exit(do(_home(), _env(), args))


# -- setup and diagnostics (policy check, persist, doctor) ---------------------------------


@cli.group()
def system() -> None:
    """The root step: system files (/etc, /usr/local) of the staged update.

    Off unless dom0 allows prefixes (qvm-features QUBE
    vm-config.qgitconf-system-paths '/etc/gitconfig /etc/vim/') and pins the key
    (vm-config.qgitconf-key).  Run as root: `sudo qgitconf system apply`, or from dom0
    `qvm-run -u root QUBE 'qgitconf system apply --yes'` (docs/setup.md).
    """


def _print_system(rec: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(rec)
        return
    if rec.get("dry_run"):
        click.echo(f"dry run: nothing was changed. commit {rec['commit']}:")
    elif rec.get("generation") is not None:
        click.echo(f"system generation {rec['generation']}: commit {rec['commit']}")
    for ch in rec.get("changes", []):
        click.echo(f"  {ch['op']:<8} {sanitize(ch['path'])}")
    for line in rec.get("conflicts", []):
        click.echo(f"  CONFLICT {line}")
    for path in rec.get("bind_dirs", []):
        click.echo(f"  kept across reboots by bind-dirs: {sanitize(path)}")
    if rec.get("custom_persist"):
        click.echo(
            "  custom-persist is on here: bind-dirs reads only dom0's declarations. To keep"
            " these files, in dom0:"
        )
        for line in rec["custom_persist"]:
            click.echo(f"    {sanitize(line)}")


@system.command("apply")
@click.option(
    "--user", "user", metavar="USER", help="Whose staged update (default: QubesDB /default-user)."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--overwrite", is_flag=True, help="Overwrite system files changed locally (kept for revert)."
)
@click.option("-n", "--dry-run", is_flag=True, help="Verify and print the plan; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def system_apply(
    user: str | None, yes: bool, overwrite: bool, dry_run: bool, as_json: bool
) -> None:
    """Verify the staged update again, as root, and apply its system files.

    Root trusts nothing of the user's side: it verifies the kept signed statement and
    the commit against the key dom0 pinned, checks every system path against the
    prefixes dom0 allowed and the fixed deny list, then writes through the same
    journal, backups and drift rules as $HOME.  In an AppVM the files under /etc are
    listed for bind-dirs so they survive a reboot.
    """
    from qgitconf.system.step import apply_system

    if not yes and not dry_run:
        plan = apply_system(user=user, overwrite=overwrite, dry_run=True)
        _print_system(plan, False)
        if not plan["changes"]:
            click.echo("nothing to do")
            return
        if not click.confirm("apply these system files as root?", default=False):
            raise UsageError("not applied")
    _print_system(apply_system(user=user, overwrite=overwrite, dry_run=dry_run), as_json)


@system.command("revert")
@click.option(
    "--to", "to", type=int, metavar="N", help="Generation to go back to (0: before qgitconf)."
)
@click.option(
    "--overwrite", is_flag=True, help="Also over system files changed locally (kept for revert)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def system_revert(to: int | None, overwrite: bool, as_json: bool) -> None:
    """Go back to an earlier system generation (as root)."""
    from qgitconf.system.step import revert_system

    _print_system(revert_system(to=to, overwrite=overwrite), as_json)


@system.command("restore")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def system_restore(as_json: bool) -> None:
    """Re-create applied system files a reboot dropped; never over a local change (as root)."""
    from qgitconf.system.step import restore_system

    rec = restore_system()
    if as_json:
        _print_json(rec)
        return
    click.echo(f"restored {len(rec['restored'])} missing system file(s)")
    for path in rec["restored"]:
        click.echo(f"  restored {sanitize(path)}")
    for line in rec["left"]:
        click.echo(f"  {line}")


@cli.group()
def policy() -> None:
    """The dom0 qrexec policy (policy/90-qgitconf.policy)."""


@policy.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--samples/--no-samples",
    default=None,
    help="Also evaluate the built-in sample requests [default: only for 90-qgitconf.policy].",
)
@click.option(
    "--mgmt-qube",
    default="config-mgmt",
    show_default=True,
    help="Name of the management qube (tagged qgitconf-mgmt) in the samples' model.",
)
def policy_check(files: tuple[str, ...], samples: bool | None, mgmt_qube: str) -> None:
    """Check policy FILES (R4.1+ format) before installing them in dom0.

    Prints FILE:LINE: problem for each problem; exits 0 when clean, 4 otherwise.
    """
    from qgitconf.errors import EXIT_CONFIG
    from qgitconf.ops.policycheck import check_files

    report = check_files([Path(f) for f in files], samples=samples, mgmt=mgmt_qube)
    for problem in report.problems:
        click.echo(problem)
    if not report.ok:
        click.echo(f"{len(report.problems)} problem(s)", err=True)
        sys.exit(EXIT_CONFIG)
    extra = f", {report.samples_run} sample requests as expected" if report.samples_run else ""
    click.echo(f"{len(files)} file(s) OK{extra}")


@cli.command()
@click.argument("target", required=False, shell_complete=_names())
@click.option("--home-dir", default="/home/user", show_default=True, help="$HOME in the qube.")
@click.option("--user", "user", default="user", show_default=True, help="Owner of the state.")
def persist(target: str | None, home_dir: str, user: str) -> None:
    """Print the dom0 commands that keep qgitconf's state and files across reboots.

    Only for qubes that already use custom-persist (Qubes OS R4.3); never the command
    that turns it on.  In a target, whether it is on comes from QubesDB and the paths
    from what was applied; in config-mgmt, TARGET's paths come from its branch and the
    commands are printed commented out, after what to check.
    """
    from qgitconf.ops import persist as p

    enabled: bool | None = None
    if _is_target():
        from qgitconf.qubes.qubesdb import own_name, read

        name = target or own_name()
        paths = p.managed_paths_from_state(_home())
        enabled = read("/qubes-service/custom-persist") == "1"
    else:
        if target is None:
            raise UsageError("name the TARGET qube")
        name = target
        paths = p.managed_paths_from_branch(_mgmt_repo().require().path, target, _env())
    for line in p.persist_commands(name, paths, home=home_dir, user=user, custom_persist=enabled):
        click.echo(line)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option(
    "--no-sign", is_flag=True, help="config-mgmt: do not make a test signature via gpg.program."
)
def doctor(as_json: bool, no_sign: bool) -> None:
    """Check this qube's set-up (gpg, pinned keys, repository, journal, persistence, policy).

    Exits 1 if any check fails.
    """
    from qgitconf.errors import EXIT_FAILURE
    from qgitconf.ops.doctor import run_doctor

    role, checks = run_doctor(_home(), _env(), sign=not no_sign)
    failed = any(c.result == "fail" for c in checks)
    if as_json:
        _print_json({"role": role, "ok": not failed, "checks": [c.as_dict() for c in checks]})
    else:
        click.echo(f"role: {role}")
        width = max(len(c.name) for c in checks)
        for c in checks:
            click.echo(f"{c.result.upper():<4}  {c.name:<{width}}  {c.message}")
    if failed:
        sys.exit(EXIT_FAILURE)


# -- lab -----------------------------------------------------------------------------------


@cli.group()
def lab() -> None:
    """A Qubes system on this machine: the real qrexec and split-GPG (root; docs/lab.md)."""


_LAB_OPTION = click.option(
    "--lab",
    "lab_dir",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="The lab's directory (default: the one `lab up` last started).",
)


@lab.command("up")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
def lab_up(directory: str | None) -> None:
    """Boot a lab that stays up (in DIRECTORY, new or empty) until `lab down`."""
    from qgitconf.lab import real_session

    st = real_session.up(directory)
    click.echo(
        f"lab up in {st['root']} (kept by process {st['pid']}, boot {st['boot_seconds']:.1f} s)"
    )
    click.echo(f"backend: {st['backend']}")
    click.echo(f"vault key {st['fingerprint']}")
    at = "" if st["current"] else f" --lab {st['root']}"
    click.echo(f"next: qgitconf lab shell{at} personal | lab run{at} QUBE -- CMD | lab down{at}")


@lab.command("down")
@_LAB_OPTION
def lab_down(lab_dir: str | None) -> None:
    """Stop the running lab and remove its run tree."""
    from qgitconf.lab import real_session

    click.echo(f"lab in {real_session.down(lab_dir)} stopped")


@lab.command(
    "run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@_LAB_OPTION
@click.option(
    "-u",
    "--user",
    "user",
    type=click.Choice(["user", "root"]),
    default="user",
    show_default=True,
    help="Run as the qube's user or as root (as qvm-run -u root does).",
)
@click.argument("qube")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def lab_run(lab_dir: str | None, user: str, qube: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in QUBE through qrexec, in its home (-- before COMMAND)."""
    from qgitconf.lab import real_session

    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("no COMMAND given")
    real_session.exec_in_qube(lab_dir, qube, list(command), user=user)


@lab.command("shell")
@_LAB_OPTION
@click.argument("qube")
def lab_shell(lab_dir: str | None, qube: str) -> None:
    """Open an interactive bash in QUBE through qrexec (the prompt names the qube)."""
    from qgitconf.lab import real_session

    sys.exit(real_session.shell(lab_dir, qube))


@lab.command("demo")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
def lab_demo(directory: str | None) -> None:
    """Run the whole story on a freshly booted lab; exit 0 only if every step behaved."""
    from qgitconf.lab.demo import run_demo

    sys.exit(
        run_demo(
            Path(directory) if directory else None, click.echo, lambda m: click.echo(m, err=True)
        )
    )


# -- entry point -----------------------------------------------------------------------------


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


if __name__ == "__main__":
    main()
