"""The set-up and diagnostics commands: system apply/revert/restore (the root step),
policy check, persist and doctor."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from qgitconf.cli.common import complete_names, env, home, is_target, mgmt_repo, print_json
from qgitconf.errors import UsageError
from qgitconf.sanitize import sanitize

# Domain modules are imported in the command bodies: every process that reaches click
# pays for this module's top-level imports (the "start-up: qgitconf --version" row of
# docs/benchmarks.md).


def _print_system(rec: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(rec)
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


@click.command("apply")
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


@click.command("revert")
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


@click.command("restore")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def system_restore(as_json: bool) -> None:
    """Re-create applied system files a reboot dropped; never over a local change (as root)."""
    from qgitconf.system.step import restore_system

    rec = restore_system()
    if as_json:
        print_json(rec)
        return
    click.echo(f"restored {len(rec['restored'])} missing system file(s)")
    for path in rec["restored"]:
        click.echo(f"  restored {sanitize(path)}")
    for line in rec["left"]:
        click.echo(f"  {line}")


@click.command("check")
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


@click.command()
@click.argument("target", required=False, shell_complete=complete_names())
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
    if is_target():
        from qgitconf.qubes.qubesdb import own_name, read

        name = target or own_name()
        paths = p.managed_paths_from_state(home())
        enabled = read("/qubes-service/custom-persist") == "1"
    else:
        if target is None:
            raise UsageError("name the TARGET qube")
        name = target
        paths = p.managed_paths_from_branch(mgmt_repo().require().path, target, env())
    for line in p.persist_commands(name, paths, home=home_dir, user=user, custom_persist=enabled):
        click.echo(line)


@click.command()
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

    role, checks = run_doctor(home(), env(), sign=not no_sign)
    failed = any(c.result == "fail" for c in checks)
    if as_json:
        print_json({"role": role, "ok": not failed, "checks": [c.as_dict() for c in checks]})
    else:
        click.echo(f"role: {role}")
        width = max(len(c.name) for c in checks)
        for c in checks:
            click.echo(f"{c.result.upper():<4}  {c.name:<{width}}  {c.message}")
    if failed:
        sys.exit(EXIT_FAILURE)
