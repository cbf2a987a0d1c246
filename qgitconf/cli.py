"""The command line: parse, call the domain code, print, map errors to exit codes.

Only this module imports click.  Exit statuses come from ``QgitconfError.exit_status``
(see ``qgitconf.errors``); an unexpected exception is a bug (exit 70), shown with a
traceback only under ``--debug``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import click

from qgitconf import __version__
from qgitconf.errors import EXIT_BUG, EXIT_INTERRUPTED, QgitconfError, UsageError
from qgitconf.sanitize import sanitize


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def _env() -> dict[str, str]:
    return dict(os.environ)


def _mgmt_repo(repo: str | None = None) -> Any:
    from qgitconf.mgmt.repo import MgmtRepo, default_repo_path

    path = Path(repo) if repo else default_repo_path(_home(), _env())
    return MgmtRepo(path, _home(), _env())


def _is_target() -> bool:
    from qgitconf.agent.config import system_config_path, user_config_path

    return user_config_path(_home()).is_file() or system_config_path(_env()).is_file()


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _counts(rec: dict[str, Any]) -> str:
    parts = [f"{len(rec.get(k) or [])} {k}" for k in ("written", "removed", "restored")]
    return ", ".join(parts)


def _transport() -> Any:
    from qgitconf.transport import QrexecClient

    return QrexecClient()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qgitconf")
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Signed, Git-backed dotfiles for Qubes OS qubes.

    In the config-mgmt qube: init, target add, edit/add/commit, publish, status,
    revert TARGET.  In a target qube: target init, review, apply, revert, status,
    log, git.  Anywhere: lab (a simulated Qubes for trying it out).
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
def init(signing_key: str, gpg_program: str, repo: str | None) -> None:
    """Create the config-mgmt repository (bare, signed commits)."""
    r = _mgmt_repo(repo)
    r.init(signing_key, gpg_program)
    click.echo(f"initialised {r.path} (signing key {signing_key}, gpg.program {gpg_program})")


@cli.group()
def target() -> None:
    """Manage target qubes (add in config-mgmt, init in the target)."""


@target.command("add")
@click.argument("name")
@click.option("--layer", "layers", multiple=True, help="Shared branch merged into this target.")
def target_add(name: str, layers: tuple[str, ...]) -> None:
    """Create the branch for target qube NAME (config-mgmt)."""
    tip = _mgmt_repo().require().target_add(name, layers)
    click.echo(f"target {name}: branch refs/heads/{name} at {tip[:12]}")


@target.command("list")
def target_list() -> None:
    """List the targets of the config-mgmt repository."""
    for name, info in sorted(_mgmt_repo().require().targets().items()):
        layers = ", ".join(info.get("layers", []))
        click.echo(f"{name}" + (f" (layers: {layers})" if layers else ""))


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
def target_init(
    source: str, key_file: str, fingerprint: str | None, allow: tuple[str, ...]
) -> None:
    """Make this qube a target: pin the signing key and the source qube."""
    from qgitconf.agent.commands import target_init as do

    out = do(_home(), source, Path(key_file), fingerprint, allow)
    click.echo(f"pinned {out['fingerprint']} ({', '.join(out['uids'])}); source {source}")
    click.echo(f"config: {out['config']}")


@cli.command()
@click.argument("name")
def edit(name: str) -> None:
    """Print the path of a worktree of NAME's branch to edit and commit in with git."""
    click.echo(str(_mgmt_repo().require().worktree(name)))


@cli.command()
@click.argument("name")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--as", "dest", metavar="PATH", help="Path in the branch (default: relative to $HOME)."
)
def add(name: str, files: tuple[str, ...], dest: str | None) -> None:
    """Copy FILES into NAME's branch worktree and stage them."""
    for rel in _mgmt_repo().require().add(name, [Path(f) for f in files], dest):
        click.echo(f"added {rel}")


@cli.command()
@click.argument("name")
@click.option("-m", "--message", required=True, help="Commit message.")
def commit(name: str, message: str) -> None:
    """Commit what is staged for NAME (signed through gpg.program)."""
    sha = _mgmt_repo().require().commit(name, message)
    click.echo(f"{name}: committed {sha[:12]} (signed)")


@cli.command()
@click.argument("targets", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Publish to every target.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def publish(targets: tuple[str, ...], all_: bool, as_json: bool) -> None:
    """Build, sign and send updates to TARGETS over qrexec."""
    from qgitconf.errors import EXIT_FAILURE
    from qgitconf.mgmt.publish import publish as do

    repo = _mgmt_repo().require()
    names = sorted(repo.targets()) if all_ else list(targets)
    if not names:
        raise UsageError("name a target or use --all")
    results = [do(repo, n, _transport()) for n in names]
    if as_json:
        _print_json(
            [
                {
                    "target": r.target,
                    "status": r.status,
                    "sequence": r.sequence,
                    "commit": r.commit,
                    "bytes": r.size,
                    "message": r.message,
                }
                for r in results
            ]
        )
    else:
        for r in results:
            extra = f": {sanitize(r.message)}" if r.message else ""
            click.echo(
                f"{r.target}: {r.status} (sequence {r.sequence}, {r.commit[:12]}, "
                f"{r.size} bytes){extra}"
            )
    if any(r.status not in ("staged", "up-to-date") for r in results):
        sys.exit(EXIT_FAILURE)


# -- both sides ---------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(as_json: bool) -> None:
    """Show the state of this qube (target) or of every target (config-mgmt)."""
    if _is_target():
        from qgitconf.agent.commands import status as target_status

        out = target_status(_home(), _env())
        if as_json:
            _print_json(out)
            return
        click.echo(
            f"source: {out['source']}   sequence: {out['sequence']}   "
            f"generation: {out['generation']}"
        )
        click.echo(f"staged:  {out['staged'] or '-'}")
        click.echo(f"applied: {out['applied'] or '-'}")
        if out["pending"]:
            click.echo("an update is staged: run `qgitconf review`, then `qgitconf apply`")
        for p in out["drift"]:
            click.echo(f"changed locally: {p}")
        if out["interrupted"]:
            click.echo("an apply was interrupted")
        return
    from qgitconf.mgmt.status import mgmt_status

    data = mgmt_status(_mgmt_repo())
    if as_json:
        _print_json(data)
        return
    for t in data["targets"]:
        rep = t["reported_by_target"]
        click.echo(
            f"{t['target']}: tip {str(t['tip'])[:12]}  published seq "
            f"{t['published']['sequence']} {str(t['published']['commit'])[:12]}  "
            f"reported by target: {rep['result'] or '-'}"
            + (f" ({rep['reason']})" if rep["reason"] else "")
            + ("  [pending]" if t["pending"] else "")
        )


@cli.command()
@click.argument("name", required=False)
@click.option("--to", "to", help="Generation (target) or commit (config-mgmt) to go back to.")
@click.option(
    "--overwrite", is_flag=True, help="Target: overwrite local changes (kept as backups)."
)
def revert(name: str | None, to: str | None, overwrite: bool) -> None:
    """Go back: in a target, to an earlier generation; in config-mgmt, NAME's branch to an
    earlier commit (as a new signed commit)."""
    if name is not None:
        from qgitconf.mgmt.revert import revert_branch

        sha = revert_branch(_mgmt_repo().require(), name, to)
        click.echo(f"{name}: committed {sha[:12]} restoring an earlier tree; publish it to send")
        return
    from qgitconf.agent.commands import revert as do

    number = None
    if to is not None:
        if not to.isdigit():
            raise UsageError("--to takes a generation number in a target qube")
        number = int(to)
    rec = do(_home(), _env(), to=number, overwrite=overwrite)
    click.echo(f"generation {rec['number']}: {rec['note']} ({_counts(rec)})")


# -- target ------------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def review(as_json: bool) -> None:
    """Show who signed the staged update and what it changes (git diff)."""
    from qgitconf.agent.commands import review as do

    out = do(_home(), _env())
    if as_json:
        _print_json(out)
        return
    uids = ", ".join(out["signer"]["uids"]) or "?"
    click.echo(f"signed by: {out['signer']['fingerprint']} ({uids}) [pinned]")
    click.echo(
        f"update:    sequence {out['sequence']}, commit {out['commit']}, created {out['created']}"
    )
    click.echo(f"applied:   {out['applied'] or '(nothing yet)'}")
    click.echo(f"message:   {out['message']}")
    for c in out["changes"]:
        click.echo(f"  {c['op']:8} {c['path']}")
    for c in out["conflicts"]:
        click.echo(f"  CONFLICT {c}")
    click.echo("")
    click.echo(out["diff"], nl=False)


@cli.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Overwrite files changed locally or not written by qgitconf (kept for revert).",
)
def apply(yes: bool, overwrite: bool) -> None:
    """Apply the staged update into $HOME (atomic writes, backups, journal)."""
    from qgitconf.agent.commands import apply as do

    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("not a terminal: review with `qgitconf review`, then use --yes")
        click.confirm("Apply the staged update?", abort=True)
    rec = do(_home(), _env(), overwrite=overwrite)
    if rec["number"] is None:
        click.echo(f"already applied: {rec['commit'][:12]}")
        return
    click.echo(f"generation {rec['number']}: applied {rec['commit'][:12]} ({_counts(rec)})")
    for line in rec.get("left", []):
        click.echo(f"  {line}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def log(as_json: bool) -> None:
    """List the generations applied in this qube."""
    from qgitconf.agent.commands import log as do

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


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def git(args: tuple[str, ...]) -> None:
    """Run git on the agent repository (GIT_DIR and GIT_WORK_TREE set)."""
    from qgitconf.agent.commands import git as do

    sys.exit(do(_home(), _env(), args))


# -- lab -----------------------------------------------------------------------------------


@cli.group()
def lab() -> None:
    """A simulated Qubes OS for trying qgitconf and for its tests."""


@lab.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
def lab_init(directory: str) -> None:
    """Create a lab in DIRECTORY: dom0 policy, vault key, config-mgmt, personal, work, untrusted."""
    from qgitconf.lab.lab import init_lab

    lb = init_lab(Path(directory))
    click.echo(f"lab ready in {lb.root} (vault key {lb.fingerprint})")


@lab.command(
    "run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.argument("qube")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def lab_run(directory: str, qube: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside QUBE of the lab in DIRECTORY (use -- before COMMAND)."""
    from qgitconf.lab.lab import Lab

    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError("no COMMAND given")
    lb = Lab(Path(directory))
    env = lb.env(qube)
    os.chdir(lb.home(qube))
    try:
        os.execvpe(command[0], list(command), env)
    except OSError as e:
        raise UsageError(f"cannot run {command[0]}: {e}") from e


@lab.command("demo")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
def lab_demo(directory: str | None) -> None:
    """Run the whole story in a fresh lab; exit 0 only if every step behaved."""
    from qgitconf.lab.demo import run_demo

    sys.exit(run_demo(Path(directory) if directory else None, click.echo))


# -- entry point -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI; the one place where errors become exit statuses."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        rv = cli.main(args=argv, prog_name="qgitconf", standalone_mode=False)
    except QgitconfError as e:
        click.echo(
            f"qgitconf: error [{e.code}]: {sanitize(e.detail, keep_newlines=True)}", err=True
        )
        sys.exit(e.exit_status)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except Exception as e:
        if debug:
            traceback.print_exc()
        click.echo(
            f"qgitconf: internal error: {sanitize(repr(e))} (run with --debug for details)",
            err=True,
        )
        sys.exit(EXIT_BUG)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
