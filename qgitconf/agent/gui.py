"""The desktop side of review: a notification on arrival and a zenity review dialog.

Follows the split-GPG pattern (REFERENCE "Prompts"): ``notify-send`` to say something
arrived, ``zenity`` to ask.  Two rules:

* The Receive service never waits for the GUI: :func:`notify` starts ``notify-send``
  in its own session with no stdin/stdout (stdout is the qrexec data channel), under
  ``timeout``, and ignores every failure.  Without ``DISPLAY``/``WAYLAND_DISPLAY`` it
  does nothing.
* The dialog applies only on an explicit "Apply" (zenity exit status 0), and only the
  commit that was shown: it passes that commit to apply, which refuses any other
  (``staged-changed``).  The text is the same sanitised review as in the terminal
  (rule 11); zenity's ``--text-info`` shows it as plain text (no markup), and the error
  dialog uses ``--no-markup``.

``notify-send``, ``timeout`` and ``zenity`` are the system's (DESIGN rule 12: found on
:data:`qgitconf.sysprog.SYSTEM_PATH`, never ``~/bin``), started with an environment
built from nothing that keeps only the session variables.  zenity also gets an empty
``HOME``: a ``~/.config/gtk-3.0/gtk.css`` written by an update must not style the
review text away.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from qgitconf import sysprog
from qgitconf.agent.commands import apply as do_apply
from qgitconf.agent.render import render_text
from qgitconf.agent.review import review
from qgitconf.errors import QgitconfError
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import ApplyResult, Review

NOTIFY_TIMEOUT_S = 20
"""``notify-send`` is killed after this long (it can hang without a notification daemon)."""


def has_display(env: Mapping[str, str]) -> bool:
    return bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def notify(env: Mapping[str, str], summary: str, body: str, home: Path | str | None = None) -> bool:
    """Show a desktop notification without waiting for it; True if one was started.

    Never raises and never blocks: the caller may be the Receive service.  ``home``
    (default ``HOME`` of ``env``) is the notifier's ``HOME``.
    """
    if not has_display(env):
        return False
    tool = sysprog.find("notify-send")
    if tool is None:
        return False
    # Some notification daemons read a markup subset in the body: escape it.
    text = _escape_markup(sanitize(body))
    cmd = [tool, "--app-name=qgitconf", "--expire-time=15000", sanitize(summary), text]
    limit = sysprog.find("timeout")
    if limit is not None:
        cmd = [limit, str(NOTIFY_TIMEOUT_S), *cmd]
    try:
        subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            env=sysprog.base_env(home if home is not None else env.get("HOME", "/"), session=env),
        )
    except (OSError, ValueError):
        return False
    return True


def _escape_markup(text: str) -> str:
    """``html.escape(text, quote=False)`` without importing ``html`` (and its table of
    entities) into the Receive service that notifies: ``&``, ``<`` and ``>``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def zenity_available(env: Mapping[str, str] | None = None) -> bool:
    """The system has zenity (``~/bin/zenity`` does not count)."""
    return sysprog.find("zenity") is not None


def _zenity(env: Mapping[str, str], args: list[str], text: str | None = None) -> int:
    tool = sysprog.program("zenity")
    with tempfile.TemporaryDirectory(prefix="qgitconf-zenity-") as empty:
        proc = subprocess.run(
            [tool, *args],
            input=None if text is None else text.encode("utf-8", "replace"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=sysprog.base_env(empty, session=env),
            cwd=empty,
            check=False,
        )
    return proc.returncode


def dialog_text(out: Review) -> str:
    """What the dialog shows: a banner, then the terminal review (all sanitised)."""
    counts = out["risk_summary"]
    banner = [
        f"Apply writes the changes below into this qube's home directory: commit "
        f"{out['commit']} (sequence {out['sequence']}), and no other.",
        f"Risk report: {counts['high']} high, {counts['medium']} medium, {counts['low']} low.",
    ]
    if counts["high"]:
        banner.append("HIGH-RISK changes can run code: read them before you press Apply.")
    if out["conflicts"] or out.get("blockers"):
        banner.append("Files changed locally are in the way: Apply will stop (see CONFLICT).")
    return "\n".join(banner) + "\n\n" + render_text(out)


def review_dialog(home: Path, env: Mapping[str, str]) -> tuple[str, ApplyResult | None]:
    """Show the review in a zenity dialog; apply only if the user presses Apply, and
    then exactly the commit the dialog showed.

    Returns:
        ``("applied", record)``, ``("cancelled", None)``, or ``("no-display", None)``
        when there is no display or no zenity (the caller falls back to the terminal).

    Raises:
        QgitconfError: the review or the apply failed (an error dialog was shown).
    """
    if not has_display(env) or not zenity_available(env):
        return "no-display", None
    out = review(home, env)
    title = f"qgitconf: review update {out['sequence']} ({out['commit'][:12]})"
    rc = _zenity(
        env,
        [
            "--text-info",
            f"--title={title}",
            "--width=960",
            "--height=720",
            "--font=monospace",
            "--ok-label=Apply",
            "--cancel-label=Cancel",
        ],
        dialog_text(out),
    )
    if rc != 0:
        return "cancelled", None
    try:
        rec = do_apply(home, env, overwrite=False, commit=out["commit"])
    except QgitconfError as e:
        _zenity(
            env,
            [
                "--error",
                "--no-markup",
                "--title=qgitconf: not applied",
                f"--text=Nothing was applied: [{e.code}] {sanitize(e.detail, keep_newlines=True)}",
            ],
        )
        raise
    return "applied", rec
