"""Generate the ``qgitconf(1)`` man page from the click command tree.

``make man`` runs ``python -m qgitconf.manpage > docs/qgitconf.1``; the generated file is
checked in and shipped by the packages, and a test keeps it in step with the CLI.  No
dependency beyond click: every command's usage, help text and options are walked and
written as roff.  The output is deterministic (no date), so it only changes when the
CLI does.
"""

from __future__ import annotations

import sys

import click

from qgitconf import __version__
from qgitconf.cli import cli

__all__ = ["render"]


def _esc(text: str) -> str:
    """Escape text for roff: backslashes, and a leading ``.`` or ``'``."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    lines = [("\\&" + line if line.startswith((".", "'")) else line) for line in out.split("\n")]
    return "\n".join(lines)


def _paragraphs(text: str) -> list[str]:
    paras = [" ".join(p.split()) for p in text.replace("\b", "").split("\n\n")]
    return [p for p in paras if p]


def _command(out: list[str], ctx: click.Context, cmd: click.Command, path: list[str]) -> None:
    if cmd.hidden:
        return
    name = " ".join(path)
    if len(path) > 1:
        out.append(f".SS {_esc(name)}")
        pieces = " ".join(cmd.collect_usage_pieces(ctx))
        out.append(f".B {_esc(name)}")
        if pieces:
            out.append(_esc(pieces))
        out.append(".PP")
        for para in _paragraphs(cmd.help or cmd.short_help or ""):
            out.append(_esc(para))
            out.append(".PP")
        for param in cmd.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is None:
                continue
            opts, text = record
            out.append(".TP")
            out.append(f".B {_esc(opts)}")
            out.append(_esc(" ".join(text.split())) or "\\&")
    if isinstance(cmd, click.Group):
        for sub_name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, sub_name)
            if sub is None:
                continue
            sub_ctx = click.Context(sub, info_name=sub_name, parent=ctx)
            _command(out, sub_ctx, sub, [*path, sub_name])


def render(cli: click.Group, name: str = "qgitconf") -> str:
    """The man page for ``cli`` as roff text.

    Args:
        cli: The top-level click group.
        name: The program name.

    Returns:
        The page, ending with a newline.
    """
    # The group's context_settings (e.g. -h as well as --help) apply to every command;
    # sub-contexts inherit them from their parent.
    ctx = click.Context(cli, info_name=name, **cli.context_settings)
    out = [
        f'.TH {name.upper()} 1 "" "{name} {__version__}" "User Commands"',
        ".SH NAME",
        f"{name} \\- {_esc((cli.help or '').strip().splitlines()[0])}",
        ".SH SYNOPSIS",
        f".B {name}",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".SH DESCRIPTION",
    ]
    for para in _paragraphs(cli.help or "")[1:]:
        out.append(_esc(para))
        out.append(".PP")
    out.append(".SH OPTIONS")
    for param in cli.get_params(ctx):
        record = param.get_help_record(ctx)
        if record:
            out += [".TP", f".B {_esc(record[0])}", _esc(record[1])]
    out.append(".SH COMMANDS")
    _command(out, ctx, cli, [name])
    out += [
        ".SH EXIT STATUS",
        "0 success; 1 a check or step needs attention; 2 usage error; 3 untrusted input "
        "rejected; 4 configuration error; 5 qrexec refused or failed; 6 local state "
        "error; 70 internal error.",
        ".SH FILES",
        ".TP",
        ".B ~/.config/qgitconf/target.toml, /etc/qgitconf/target.toml",
        "Target configuration: source qube, pinned keys (keys/FPR.asc beside it), allowlist.",
        ".TP",
        ".B ~/.local/share/qgitconf/",
        "Agent state: repository, generations, manifest, backups, rejected.log.",
        ".TP",
        ".B ~/qgitconf.git",
        "The config\\-mgmt repository (or $QGITCONF_REPO).",
        ".SH SEE ALSO",
        "git(1), gpg(1), qvm\\-features(1), qvm\\-tags(1); docs/setup.md and docs/usage.md.",
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    """Print the page for qgitconf's CLI."""
    sys.stdout.write(render(cli))


if __name__ == "__main__":
    main()
