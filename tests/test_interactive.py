"""`qgitconf apply --interactive` driven through a real pseudo-terminal.

Per changed file it must show the risk lines above the diff and ask; the test accepts
one file, skips another, and checks $HOME.

The lab is the real one.  qrexec carries no terminal (``qrexec-client -d QUBE
user:CMD`` gives the command pipes), so the pseudo-terminal is made inside the qube:
``script`` runs qgitconf on a new pty there, as the qube's user started by qrexec, and
relays the pty over qrexec's pipes (stdout and stderr both reach the screen).
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import subprocess
import time

from qgitconf.lab.build import SYS_PATH
from tests.labkit import Lab, commit_files, publish, qg, target_snapshot

TERM = {"TERM": "xterm"}
PROMPT = re.compile(rb"(accept \[a\], skip \[s\], quit \[q\]\?|overwrite .*?quit \[q\]\?) ")


class Terminal:
    """``args`` run in qube ``qube`` on a pty (``script`` there, through qrexec), with
    ``env`` added to its environment; ``expect`` reads until a pattern shows up."""

    def __init__(self, lab: Lab, qube: str, args: list[str], env: dict[str, str]) -> None:
        assigns = [f"{k}={v}" for k, v in env.items()]
        inner = shlex.join(args)
        line = "cd && exec " + shlex.join(["env", *assigns, "script", "-qefc", inner, "/dev/null"])
        self.proc = subprocess.Popen(
            lab.qrexec_argv(qube, line),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={"PATH": SYS_PATH, "LANG": "C.UTF-8"},
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.master = self.stdout.fileno()
        self.seen = b""

    def expect(self, pattern: re.Pattern[bytes], timeout: float = 60) -> bytes:
        deadline = time.monotonic() + timeout
        start = len(self.seen)
        while not pattern.search(self.seen, start):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; got:\n{self.text()}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"EOF waiting for {pattern!r}; got:\n{self.text()}")
                self.seen += chunk
        return self.seen[start:]

    def send(self, line: str) -> None:
        self.stdin.write(line.encode() + b"\r")
        self.stdin.flush()

    def finish(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                chunk = os.read(self.master, 65536)
                if not chunk:
                    break
                self.seen += chunk
        try:
            rc = self.proc.wait(max(0.1, deadline - time.monotonic()))
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.stdin.close()
            self.stdout.close()
        return rc

    def text(self) -> str:
        return self.seen.decode("utf-8", "replace")


def test_interactive_apply_accepts_one_file_and_skips_another(lab: Lab) -> None:
    commit_files(
        lab,
        "personal",
        {
            ".config/git/config": '[alias]\n\tst = status\n\tup = "!git pull"\n',
            ".config/zz/notes": "skip me \x1b[31m\n",
        },
        "two files",
    )
    publish(lab, "personal")
    term = Terminal(lab, "personal", ["qgitconf", "apply", "--interactive"], TERM)
    first = term.expect(PROMPT).decode()
    assert "[1/2] write .config/git/config" in first
    assert first.index("HIGH") < first.index("git-alias-shell") < first.index("diff --git")
    assert '+\tup = "!git pull"' in first
    term.send("a")
    second = term.expect(PROMPT).decode()
    assert "[2/2] write .config/zz/notes" in second and "no risk findings" not in second
    assert "hidden-characters" in second and "+skip me \\x1b[31m" in second
    # On a terminal the diff is coloured, but only by SGR sequences qgitconf adds itself.
    assert "\x1b" not in re.sub(r"\x1b\[[0-9;]*m", "", second)
    term.send("s")
    rc = term.finish()
    assert rc == 0, term.text()
    assert "generation 1: applied" in term.text()
    home = lab.home("personal")
    assert (home / ".config/git/config").read_text().endswith('"!git pull"\n')
    assert not (home / ".config/zz").exists()
    status = json.loads(qg(lab, "personal", "status", "--json").stdout)
    assert status["skipped"] == [".config/zz/notes"]


def test_interactive_quit_applies_nothing(lab: Lab) -> None:
    commit_files(lab, "personal", {".config/a": "a\n"}, "one")
    publish(lab, "personal")
    term = Terminal(lab, "personal", ["qgitconf", "apply", "--interactive"], TERM)
    term.expect(PROMPT)
    term.send("q")
    assert term.finish() == 0
    assert "quit: nothing applied" in term.text()
    assert not (lab.home("personal") / ".config/a").exists()


def test_interactive_needs_a_terminal(lab: Lab) -> None:
    commit_files(lab, "personal", {".config/a": "a\n"}, "one")
    publish(lab, "personal")
    proc = qg(lab, "personal", "apply", "--interactive", expect=2)
    assert b"needs a terminal" in proc.stderr


# -- DESIGN §4: what is applied is what the prompt showed -----------------------------------

CONFIRM = re.compile(rb"Apply update \d+, commit ([0-9a-f]{40})\? \[y/N\]: ")


def test_interactive_names_the_commit_and_refuses_one_staged_meanwhile(lab: Lab) -> None:
    a = commit_files(lab, "personal", {".config/a": "seen\n"}, "A")
    publish(lab, "personal")
    before = target_snapshot(lab, "personal")
    term = Terminal(lab, "personal", ["qgitconf", "apply", "--interactive"], TERM)
    shown = term.expect(PROMPT).decode()
    assert f"update: sequence 1, commit {a}" in shown
    assert f"[commit {a[:12]}] accept [a], skip [s], quit [q]? " in shown
    commit_files(lab, "personal", {".config/a": "unseen\n"}, "B")  # arrives meanwhile
    publish(lab, "personal")
    term.send("a")
    rc = term.finish()
    assert rc == 1, term.text()
    assert "error [staged-changed]" in term.text()
    after = target_snapshot(lab, "personal")
    assert {k: v for k, v in after.items() if ".local/share" not in k} == {
        k: v for k, v in before.items() if ".local/share" not in k
    }
    assert not (lab.home("personal") / ".config/a").exists()


def test_interactive_with_commit_refuses_to_start_on_another(lab: Lab) -> None:
    a = commit_files(lab, "personal", {".config/a": "seen\n"}, "A")
    publish(lab, "personal")
    commit_files(lab, "personal", {".config/a": "unseen\n"}, "B")
    publish(lab, "personal")
    before = target_snapshot(lab, "personal")
    cmd = ["qgitconf", "apply", "--interactive", "--commit", a]
    term = Terminal(lab, "personal", cmd, TERM)
    assert term.finish() == 1 and "error [staged-changed]" in term.text()
    assert target_snapshot(lab, "personal") == before


def test_apply_confirmation_names_the_commit_and_applies_only_it(lab: Lab) -> None:
    a = commit_files(lab, "personal", {".config/a": "seen\n"}, "A")
    publish(lab, "personal")
    term = Terminal(lab, "personal", ["qgitconf", "apply"], TERM)
    m = CONFIRM.search(term.expect(CONFIRM))
    assert m is not None and m.group(1).decode() == a
    b = commit_files(lab, "personal", {".config/a": "unseen\n"}, "B")
    publish(lab, "personal")
    before = target_snapshot(lab, "personal")
    term.send("y")
    assert term.finish() == 1 and "error [staged-changed]" in term.text()
    assert target_snapshot(lab, "personal") == before
    term = Terminal(lab, "personal", ["qgitconf", "apply"], TERM)
    m = CONFIRM.search(term.expect(CONFIRM))
    assert m is not None and m.group(1).decode() == b
    term.send("y")
    assert term.finish() == 0 and f"generation 1: applied {b} (" in term.text()
    assert (lab.home("personal") / ".config/a").read_text() == "unseen\n"
