"""Review shown on a terminal: the text of the report, qgitconf's own fixed colours laid
over sanitised text (rule 11), and a pager from the system PATH run with an empty
HOME (rule 12; ``docs/review.md``, "What review honours")."""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qgitconf import sysprog
from qgitconf.core.risks import Finding
from qgitconf.gitpack.store import (
    EMPTY_TREE,
)
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import Review, Risk

_DEFAULT_COLORS = {
    "meta": "\x1b[1m",
    "frag": "\x1b[36m",
    "old": "\x1b[31m",
    "new": "\x1b[32m",
    "high": "\x1b[1;31m",
    "medium": "\x1b[33m",
    "low": "\x1b[36m",
    "reset": "\x1b[m",
}


def diff_colors(env: Mapping[str, str]) -> dict[str, str]:
    """The colours of a review on a terminal: qgitconf's fixed palette (git's default
    diff colours), or none when ``NO_COLOR`` is set in the environment.

    The user's ``color.diff.*`` is deliberately not read: ``~/.gitconfig`` is written
    by updates, and a colour whose foreground equals the background (``black black``)
    would hide every added line of the next update.
    """
    if env.get("NO_COLOR"):
        return {}
    return dict(_DEFAULT_COLORS)


def colorize(text: str, colors: Mapping[str, str]) -> str:
    """Colour an already sanitised diff (it holds no ESC; only these SGRs are added)."""
    reset = colors.get("reset", "\x1b[m")
    out: list[str] = []
    in_header = False
    for line in text.split("\n"):
        slot: str | None = None
        if line.startswith("diff --git "):
            in_header, slot = True, "meta"
        elif line.startswith("@@"):
            in_header, slot = False, "frag"
        elif in_header:
            slot = "meta"
        elif line.startswith("+"):
            slot = "new"
        elif line.startswith("-"):
            slot = "old"
        seq = colors.get(slot, "") if slot else ""
        out.append(f"{seq}{line}{reset}" if seq and line else line)
    return "\n".join(out)


def apply_command(commit: str) -> str:
    """The command that applies exactly ``commit`` and refuses anything else."""
    return f"qgitconf apply --commit {commit}"


def risks_by_path(findings: Sequence[Finding]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for f in findings:
        out.setdefault(f.path, []).append(f)
    return out


def render_text(out: Review, colors: Mapping[str, str] | None = None) -> str:
    """The terminal review: header, risk report per file, then the diff.

    Everything in ``out`` is already sanitised; ``colors`` (SGR sequences, see
    :func:`diff_colors`) are the only escape sequences added.
    """
    colors = colors or {}
    reset = colors.get("reset", "") if colors else ""
    lines: list[str] = []
    signer = out["signer"]
    uids = ", ".join(signer["uids"]) or "?"
    pinned = "pinned" if signer.get("pinned") else "NOT PINNED ANY MORE"
    lines.append(f"signed by: {signer['fingerprint']} ({uids}) [{pinned}]")
    lines.append(
        f"update:    sequence {out['sequence']}, commit {out['commit']}, created {out['created']}"
    )
    lines.append(f"date:      {out.get('date', '?')}  author: {out.get('author', '?')}")
    lines.append(f"applied:   {out['applied'] or '(nothing yet)'}")
    message = str(out["message"]).replace("\n", "\n           ")
    lines.append(f"message:   {message}")
    for c in out["changes"]:
        lines.append(f"  {c['op']:8} {c['path']}")
    for line in out["conflicts"]:
        lines.append(f"  CONFLICT {line}")
    for line in out.get("blockers", []):
        lines.append(f"  BLOCKED  {line}")
    auto = out.get("auto_apply")
    if auto and auto.get("commit") == out["commit"]:
        lines.append(f"auto-apply: {auto['result']}: {auto['reason']}")
    lines.append("")
    counts = out["risk_summary"]
    lines.append(
        f"risk report: {counts['high']} high, {counts['medium']} medium, {counts['low']} low"
        " (docs/risks.md)"
    )
    by_path: dict[str, list[Risk]] = {}
    for r in out["risks"]:
        by_path.setdefault(r["path"], []).append(r)
    for f in out["files"]:
        risks = by_path.get(f["path"], [])
        notes = f"  ({'; '.join(f['notes'])})" if f["notes"] else ""
        lines.append(f"  {f['path']}{notes}")
        for r in risks:
            where = f" line {r['line']}" if r["line"] is not None else ""
            text = f": {r['text']}" if r["text"] else ""
            seq = colors.get(r["severity"], "")
            sev = f"{seq}{r['severity'].upper():<6}{reset if seq else ''}"
            lines.append(f"    {sev} {r['rule']}{where}{text}")
            lines.append(f"           {r['explanation']}")
    lines.append("")
    lines.append(
        "full diff with your difftool: "
        "qgitconf git difftool refs/qgitconf/applied refs/qgitconf/staged"
        if out["applied"]
        else "full diff with your difftool: qgitconf git difftool "
        f"{EMPTY_TREE} refs/qgitconf/staged"
    )
    lines.append(f"apply what is shown here: {apply_command(str(out['commit']))}")
    lines.append("")
    diff = colorize(str(out["diff"]), colors) if colors else str(out["diff"])
    return "\n".join(lines) + "\n" + diff


_PAGER_VARS = ("TERM", "COLUMNS", "LINES", "LESS")
"""What the pager may take from the environment review was started in."""


@dataclass(frozen=True)
class PagerChoice:
    """The pager review runs: ``argv`` (absolute program first) or None for none, and
    ``note``: why the user's own setting was not used (None if it was)."""

    argv: list[str] | None
    note: str | None = None


def _system_program(word: str) -> str | None:
    """``word`` as a program on the system PATH: a bare name found there, or an
    absolute path that is exactly what the system PATH finds for its name."""
    if "/" not in word:
        return sysprog.find(word)
    found = sysprog.find(os.path.basename(word))
    return found if found == word else None


def _default_pager() -> PagerChoice:
    for name in ("less", "more"):
        found = sysprog.find(name)
        if found is not None:
            return PagerChoice([found])
    return PagerChoice(None)


def choose_pager(env: Mapping[str, str]) -> PagerChoice:
    """The pager of ``env`` (``GIT_PAGER``, else ``PAGER``, else ``less``), made safe.

    Only the environment counts, never ``core.pager`` or ``pager.*``: ``~/.gitconfig``
    is written by updates.  Empty or ``cat`` means no pager.  Otherwise the setting is
    split like a shell word list (no shell runs it); its first word must be a program
    on the system PATH and every other word an option (``-R``, ``--quit-if-one-screen``):
    a pager in ``~/bin``, a relative path, shell syntax or a file name falls back to
    the system's ``less`` (``note`` says why).
    """
    setting = env.get("GIT_PAGER")
    if setting is None:
        setting = env.get("PAGER")
    if setting is None:
        return _default_pager()
    try:
        words: list[str] | None = shlex.split(setting)
    except ValueError:
        words = None  # unbalanced quotes: not usable
    if words is not None:
        if not words or words in (["cat"], [sysprog.find("cat")]):
            return PagerChoice(None)
        program = _system_program(words[0]) if "\0" not in setting else None
        if program is not None and all(w.startswith("-") for w in words[1:]):
            return PagerChoice([program, *words[1:]])
    fallback = _default_pager()
    shown = sanitize(setting)
    return PagerChoice(
        fallback.argv,
        f"pager {shown!r} not used (review runs only a program from the system PATH, "
        "with options); using " + (fallback.argv[0] if fallback.argv else "no pager"),
    )


def pager_env(env: Mapping[str, str], empty_home: Path | str) -> dict[str, str]:
    """The pager's whole environment: built from nothing, with ``HOME`` an empty
    directory (no ``~/.lesskey``, ``~/.config/...`` of any pager is read), less in
    secure mode with no lesskey file, no ``LESSOPEN`` and no history file, and only
    ``TERM``, ``COLUMNS``, ``LINES`` and ``LESS`` (default ``FRX``) from ``env``."""
    penv = sysprog.base_env(empty_home)
    penv.update({k: env[k] for k in _PAGER_VARS if k in env})
    penv.setdefault("LESS", "FRX")  # as git does: quit if one screen, keep colours
    penv.update(
        LESSSECURE="1",
        LESSKEYIN="/dev/null",
        LESSKEY="/dev/null",
        LESSHISTFILE="-",
        LV="-c",
    )
    return penv


def git_pager(choice: PagerChoice, env: Mapping[str, str], empty_home: Path | str) -> str:
    """``GIT_PAGER`` for a git that pages itself (``qgitconf git``): the chosen pager
    started by the system's ``env -i`` with :func:`pager_env`, or ``cat``."""
    if choice.argv is None:
        return "cat"
    pairs = [f"{k}={v}" for k, v in sorted(pager_env(env, empty_home).items())]
    return shlex.join([sysprog.program("env"), "-i", *pairs, *choice.argv])


def page(text: str, env: Mapping[str, str]) -> None:
    """Show ``text`` (already sanitised, maybe coloured) through the pager of
    :func:`choose_pager`, with :func:`pager_env`; a note on stderr if the user's
    pager setting was not used."""
    choice = choose_pager(env)
    if choice.note:
        os.write(2, f"qgitconf: {choice.note}\n".encode("utf-8", "replace"))
    data = text.encode("utf-8", errors="replace")
    if choice.argv is None:
        os.write(1, data)
        return
    with tempfile.TemporaryDirectory(prefix="qgitconf-pager-") as empty:
        try:
            proc = subprocess.Popen(
                choice.argv, stdin=subprocess.PIPE, env=pager_env(env, empty), cwd=empty
            )
        except OSError:
            os.write(1, data)
            return
        if proc.stdin is None:  # cannot happen with stdin=PIPE; keeps the type checker honest
            return
        try:
            proc.stdin.write(data)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        proc.wait()
