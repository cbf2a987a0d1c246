"""The lab's commands: up, down, run, shell and demo."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from qgitconf.errors import UsageError

# Domain modules are imported in the command bodies: every process that reaches click
# pays for this module's top-level imports (the "start-up: qgitconf --version" row of
# docs/benchmarks.md).


_LAB_OPTION = click.option(
    "--lab",
    "lab_dir",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="The lab's directory (default: the one `lab up` last started).",
)


@click.command("up")
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


@click.command("down")
@_LAB_OPTION
def lab_down(lab_dir: str | None) -> None:
    """Stop the running lab and remove its run tree."""
    from qgitconf.lab import real_session

    click.echo(f"lab in {real_session.down(lab_dir)} stopped")


@click.command(
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


@click.command("shell")
@_LAB_OPTION
@click.argument("qube")
def lab_shell(lab_dir: str | None, qube: str) -> None:
    """Open an interactive bash in QUBE through qrexec (the prompt names the qube)."""
    from qgitconf.lab import real_session

    sys.exit(real_session.shell(lab_dir, qube))


@click.command("demo")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
def lab_demo(directory: str | None) -> None:
    """Run the whole story on a freshly booted lab; exit 0 only if every step behaved."""
    from qgitconf.lab.demo import run_demo

    sys.exit(
        run_demo(
            Path(directory) if directory else None, click.echo, lambda m: click.echo(m, err=True)
        )
    )
