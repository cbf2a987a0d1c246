"""The config-mgmt qube's commands: init, target add/list, layer add/list, edit, add,
commit, publish, squash and import."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from qgitconf.cli.common import (
    complete_names,
    env,
    home,
    mgmt_for,
    mgmt_repo,
    print_json,
    transport,
)
from qgitconf.errors import UsageError
from qgitconf.sanitize import sanitize

# Domain modules are imported in the command bodies: every process that reaches click
# pays for this module's top-level imports (the "start-up: qgitconf --version" row of
# docs/benchmarks.md).


@click.command()
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
    from qgitconf.mgmt.repoedit import init_repo
    from qgitconf.ops.side import check_mgmt_init

    check_mgmt_init(home(), env(), force=force)
    r = mgmt_repo(repo)
    has_key = init_repo(
        r, signing_key, gpg_program, Path(key_file).read_bytes() if key_file else None
    )
    click.echo(f"initialised {r.path} (signing key {signing_key}, gpg.program {gpg_program})")
    if not has_key:
        click.echo(
            "warning: public key not found: the pre-receive hook refuses every push until "
            f"it is saved as {r.meta / 'signing-key.asc'}",
            err=True,
        )


@click.command("add")
@click.argument("name")
@click.option(
    "--layer",
    "layers",
    multiple=True,
    help="Shared branch merged into this target.",
    shell_complete=complete_names(targets=False, layers=True),
)
def target_add(name: str, layers: tuple[str, ...]) -> None:
    """Create the branch for target qube NAME (config-mgmt)."""
    tip = mgmt_for("target add").target_add(name, layers)
    click.echo(f"target {name}: branch refs/heads/{name} at {tip[:12]}")


@click.command("list")
def target_list() -> None:
    """List the targets of the config-mgmt repository."""
    for name, info in sorted(mgmt_for("target list").targets().items()):
        layers = ", ".join(info.get("layers", []))
        click.echo(f"{name}" + (f" (layers: {layers})" if layers else ""))


@click.command("add")
@click.argument("name", shell_complete=complete_names(targets=False, layers=True))
@click.option(
    "--to",
    "to",
    multiple=True,
    metavar="TARGET",
    help="Also merge it into TARGET.",
    shell_complete=complete_names(),
)
def layer_add(name: str, to: tuple[str, ...]) -> None:
    """Create the shared branch NAME (config-mgmt) and/or merge it into existing targets.

    New targets name layers with `target add NAME --layer LAYER`.
    """
    repo = mgmt_for("layer add")
    if name not in repo.layers() or not to:
        tip = repo.layer_add(name)
        click.echo(f"layer {name}: branch refs/heads/{name} at {tip[:12]}")
    for t in to:
        repo.attach_layer(name, t)
        click.echo(f"target {t}: merges layer {name} at publish")


@click.command("list")
def layer_list() -> None:
    """List the layers and the targets that use them."""
    repo = mgmt_for("layer list")
    targets = repo.targets()
    for name in sorted(repo.layers()):
        users = [t for t, info in sorted(targets.items()) if name in info.get("layers", [])]
        click.echo(f"{name} (used by: {', '.join(users) or '-'})")


@click.command()
@click.argument("name", shell_complete=complete_names(layers=True))
def edit(name: str) -> None:
    """Print the path of a worktree of NAME's branch to edit and commit in with git."""
    click.echo(str(mgmt_for("edit").worktree(name)))


@click.command()
@click.argument("name", shell_complete=complete_names(layers=True))
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
    from qgitconf.mgmt.repoedit import add_files

    repo = mgmt_for("add")
    for rel in add_files(repo, name, [Path(f) for f in files], dest, allow_large=allow_large):
        click.echo(f"added {rel}")


@click.command()
@click.argument("name", shell_complete=complete_names(layers=True))
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
    sha = mgmt_for("commit").commit(name, message, allow_large=allow_large)
    click.echo(f"{name}: committed {sha[:12]} (signed)")


@click.command()
@click.argument("targets", nargs=-1, shell_complete=complete_names())
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
    from qgitconf.mgmt.publish import OK_STATUSES, PublishResult
    from qgitconf.mgmt.publishjobs import publish_targets
    from qgitconf.mgmt.view import note_line, progress_line, publish_lines

    repo = mgmt_for("publish")
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

    results = publish_targets(repo, names, transport(), jobs=jobs, progress=progress, note=note)
    for line in publish_lines(results, as_json):
        click.echo(line)
    if any(r.status not in OK_STATUSES for r in results):
        sys.exit(EXIT_FAILURE)


def _publish_dry_run(repo: Any, names: list[str], as_json: bool) -> None:
    from qgitconf.mgmt.publish import plan_publish
    from qgitconf.mgmt.sizes import human

    plans = plan_publish(repo, names)
    if as_json:
        print_json(
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


@click.command()
@click.argument("name", shell_complete=complete_names())
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

    plan = do(mgmt_for("squash"), name, dry_run=dry_run)
    if as_json:
        print_json({**plan.as_json(), "dry_run": dry_run})
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


@click.command("import")
@click.argument("qube", required=False)
@click.argument("path", required=False)
@click.option(
    "--into",
    metavar="TARGET",
    help="Target branch the file is for.",
    shell_complete=complete_names(),
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

    repo = mgmt_for("import")
    actions = sum(x is not None for x in (review_id, accept_id, drop_id)) + list_
    if actions > 1 or (actions and (qube or path)):
        raise UsageError("use one of QUBE PATH --into TARGET, --list, --review, --accept, --drop")
    if as_json and not list_:
        raise UsageError("--json goes with --list")
    if list_ and as_json:
        print_json(importing.list_imports(repo))
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
        ident = importing.import_file(repo, qube, path, into, transport())
        click.echo(f"import {ident}: in quarantine; review with: qgitconf import --review {ident}")
