"""Issue 16, "should fix": diff, drift before y/N, dry runs, interactive conflicts,
target remove, progress, completion of target names, on the real lab."""

from __future__ import annotations

import json
import re

from tests.labkit import Lab, commit_files, publish, qg, run, target_snapshot
from tests.test_interactive import PROMPT, TERM, Terminal

STATE = ".local/share/qgitconf"


def _applied(lab: Lab, files: dict[str, str | bytes]) -> None:
    commit_files(lab, "personal", files, "files")
    publish(lab, "personal")
    qg(lab, "personal", "apply", "--yes")


# -- qgitconf diff -----------------------------------------------------------------------------


def test_diff_shows_local_drift_applied_to_disk_isolated_and_escaped(lab: Lab) -> None:
    _applied(
        lab,
        {".config/app/a.conf": "one\ntwo\n", ".bashrc": "alias ll='ls -l'\n", ".gone": "g\n"},
    )
    home = lab.home("personal")
    # Local drift: an edit carrying an escape sequence, and a deletion.
    lab.write("personal", ".config/app/a.conf", b"one\nTWO \x1b[31mred\n")
    run(lab, "personal", "rm", ".gone")
    # Settings an earlier update could have written: none may change the diff (rule 12).
    lab.write("personal", ".gitconfig", b"[diff]\n\tnoprefix = true\n\tcontext = 0\n")
    lab.write("personal", ".config/git/attributes", b"* binary\n")
    before = target_snapshot(lab, "personal")

    out = qg(lab, "personal", "diff").stdout.decode()
    assert "diff --git a/.config/app/a.conf b/.config/app/a.conf" in out
    assert "-two\n+TWO \\x1b[31mred\n" in out
    assert " one\n" in out  # context kept: diff.context from ~/.gitconfig not read
    assert "Binary files" not in out and "\x1b" not in out
    assert "diff --git a/.gone b/.gone\ndeleted file mode 100644" in out
    assert ".bashrc" not in out  # unchanged
    assert qg(lab, "personal", "diff", "--exit-code", expect=1).stdout.decode() == out
    assert qg(lab, "personal", "diff", "--exit-code", "~/.bashrc").stdout == b""

    data = json.loads(qg(lab, "personal", "diff", "--json").stdout)
    assert [(d["path"], d["state"]) for d in data["drift"]] == [
        (".config/app/a.conf", "modified"),
        (".gone", "missing"),
    ]
    assert data["diff_tool"] == "git" and data["diff"] == out
    assert data["managed"] == 3
    part = json.loads(qg(lab, "personal", "diff", "--json", ".config").stdout)
    assert [d["path"] for d in part["drift"]] == [".config/app/a.conf"]
    assert target_snapshot(lab, "personal") == before  # diff changes nothing
    assert (home / ".gone").exists() is False


def test_diff_runs_in_a_target_only(lab: Lab) -> None:
    proc = qg(lab, "config-mgmt", "diff", expect=2)
    assert b"[wrong-side]" in proc.stderr and b"runs in a target qube" in proc.stderr
    assert qg(lab, "personal", "diff", "--exit-code").stdout == b""  # nothing applied yet


# -- apply: drift before the question; dry runs -------------------------------------------


def _drifted_update(lab: Lab) -> None:
    """.config/a applied, then changed locally, then changed by a staged update."""
    _applied(lab, {".config/a": "applied\n", ".config/b": "b1\n"})
    lab.write("personal", ".config/a", b"mine\n")
    commit_files(lab, "personal", {".config/a": "update\n", ".config/c": "new\n"}, "second")
    publish(lab, "personal")


CONFIRM = re.compile(rb"Apply update \d+, commit [0-9a-f]{40}\? \[y/N\]: ")


def test_apply_reports_drift_before_asking(lab: Lab) -> None:
    _drifted_update(lab)
    before = target_snapshot(lab, "personal")
    term = Terminal(lab, "personal", ["qgitconf", "apply"], TERM)
    assert term.finish() == 1
    text = term.text()
    assert "[y/N]" not in text  # it never asked
    assert "error [drift]" in text and "changed locally since the last apply: .config/a" in text
    assert "--overwrite" in text and "--keep PATH" in text and "qgitconf diff" in text
    assert target_snapshot(lab, "personal") == before
    # With --overwrite, the question names the file it writes over.
    term = Terminal(lab, "personal", ["qgitconf", "apply", "--overwrite"], TERM)
    asked = term.expect(CONFIRM).decode()
    assert "--overwrite writes over these files" in asked
    assert asked.index("changed locally since the last apply: .config/a") < asked.index(
        "Apply update 2"
    )
    term.send("y")
    assert term.finish() == 0, term.text()
    assert (lab.home("personal") / ".config/a").read_text() == "update\n"
    assert "overwritten .config/a: the previous one is kept in" in term.text()


def test_dry_run_apply_and_revert_print_the_plan_and_change_nothing(lab: Lab) -> None:
    _drifted_update(lab)
    before = target_snapshot(lab, "personal")

    proc = qg(lab, "personal", "apply", "--dry-run", expect=1)
    out = proc.stdout.decode()
    assert "dry run: nothing was changed. apply update 2" in out
    assert "  write    .config/a" in out and "  write    .config/c" in out
    assert "CONFLICT changed locally since the last apply: .config/a" in out
    assert b"error [drift]" in proc.stderr and b"apply would stop" in proc.stderr

    plan = json.loads(qg(lab, "personal", "apply", "-n", "--overwrite", "--json").stdout)
    assert plan["dry_run"] is True and plan["kind"] == "apply" and plan["generation"] == 2
    assert plan["write"] == [".config/a", ".config/c"] and plan["would_stop"] is False
    assert [k["path"] for k in plan["kept"]] == [".config/a"]
    assert plan["kept"][0]["at"].endswith(f"{STATE}/backups/2/.config/a")
    keep = json.loads(qg(lab, "personal", "apply", "-n", "--keep", ".config/a", "--json").stdout)
    assert keep["write"] == [".config/c"] and keep["skipped"] == [".config/a"]

    rev = json.loads(qg(lab, "personal", "revert", "--dry-run", "--to", "0", "--json").stdout)
    assert rev["kind"] == "revert" and rev["to"] == 0 and rev["commit"] is None
    assert rev["remove"] == [".config/b"] and rev["would_stop"] is False
    assert rev["left"] == ["no longer managed, changed locally, left in place: .config/a"]
    text = qg(lab, "personal", "revert", "-n").stdout.decode()
    assert "revert to generation 0, before qgitconf" in text and "remove   .config/b" in text
    assert target_snapshot(lab, "personal") == before
    proc = qg(lab, "config-mgmt", "revert", "personal", "--dry-run", expect=2)
    assert b"--dry-run is for a target's revert" in proc.stderr


# -- apply --interactive ---------------------------------------------------------------------


def test_interactive_conflict_shows_its_diff_bad_key_lists_choices_skipped_note(
    lab: Lab,
) -> None:
    commit_files(lab, "personal", {".config/a": "a1\n", ".config/b": "b1\n"}, "two")
    publish(lab, "personal")
    term = Terminal(lab, "personal", ["qgitconf", "apply", "--interactive"], TERM)
    term.expect(PROMPT)
    term.send("a")
    term.expect(PROMPT)
    term.send("s")  # .config/b skipped: never written
    assert term.finish() == 0, term.text()
    lab.write("personal", ".config/a", b"a1\nmine\n")
    commit_files(lab, "personal", {".config/a": "a2\n"}, "a2")
    publish(lab, "personal")

    term = Terminal(lab, "personal", ["qgitconf", "apply", "--interactive"], TERM)
    first = term.expect(PROMPT).decode()
    assert "[1/2] write .config/a" in first
    assert "CONFLICT changed locally since the last apply: .config/a" in first
    local = first.index("changed locally since the last apply (applied -> now)")
    assert first.index("+mine", local) < first.index("overwrite the local file")
    term.send("a")  # not a choice for a file in conflict
    again = term.expect(PROMPT).decode()
    assert "a local file is in the way, so a does not take it: answer o" in again
    term.send("zz")
    assert "answer o (overwrite it" in term.expect(PROMPT).decode()
    term.send("s")
    second = term.expect(PROMPT).decode()
    assert "[2/2] write .config/b" in second
    assert "left out of an earlier apply" in second
    assert "puts back what qgitconf applied" not in second  # the wrong note of issue 16
    assert "+b1" in second
    term.send("x")
    assert "answer a (accept), s (skip) or q (quit" in term.expect(PROMPT).decode()
    term.send("a")
    assert term.finish() == 0, term.text()
    home = lab.home("personal")
    assert (home / ".config/b").read_text() == "b1\n"
    assert (home / ".config/a").read_text() == "a1\nmine\n"


# -- target remove ---------------------------------------------------------------------------


def test_target_remove_forgets_and_keeps_the_applied_files(lab: Lab) -> None:
    _applied(lab, {".config/a": "a\n", ".bashrc": "b\n"})
    home = lab.home("personal")
    proc = qg(lab, "personal", "target", "remove", expect=2)  # no terminal, no --yes
    assert b"--yes" in proc.stderr
    assert qg(lab, "config-mgmt", "target", "remove", "--yes", expect=2).stderr.startswith(
        b"qgitconf: error [wrong-side]: this is the config-mgmt qube"
    )
    files = {k: v for k, v in target_snapshot(lab, "personal").items() if "qgitconf" not in k}
    out = json.loads(qg(lab, "personal", "target", "remove", "--yes", "--json").stdout)
    assert sorted(out["removed"]) == sorted(
        [
            "/home/user/.config/qgitconf/target.toml",
            "/home/user/.config/qgitconf/keys",
            f"/home/user/{STATE}",
        ]
    )
    assert out["managed"] == 2 and out["generations"] == 1
    assert not (home / ".config/qgitconf").exists() and not (home / STATE).exists()
    assert (home / ".config/a").read_text() == "a\n" and (home / ".bashrc").read_text() == "b\n"
    assert {
        k: v for k, v in target_snapshot(lab, "personal").items() if "qgitconf" not in k
    } == files
    assert b"not set up as a qgitconf target" in qg(lab, "personal", "review", expect=4).stderr


def test_target_remove_asks_first(lab: Lab) -> None:
    _applied(lab, {".config/a": "a\n"})
    term = Terminal(lab, "personal", ["qgitconf", "target", "remove"], TERM)
    asked = term.expect(re.compile(rb"Forget this target\? \[y/N\]: ")).decode()
    assert "/home/user/.config/qgitconf/target.toml" in asked
    assert "1 applied file(s) stay" in asked and "cannot go back" in asked
    term.send("n")
    assert term.finish() == 1
    assert (lab.home("personal") / ".config/qgitconf/target.toml").is_file()


# -- progress on big trees ---------------------------------------------------------------------


def _many(lab: Lab, n: int) -> None:
    for i in range(n):
        lab.write("config-mgmt", f"src/personal/.many/d{i // 100:02}/f{i:04}", f"{i}\n".encode())
    run(
        lab,
        "config-mgmt",
        "sh",
        "-c",
        "cd src/personal && qgitconf add personal $(find . -type f | sed 's|^./||') "
        "&& qgitconf commit personal -m many",
    )
    publish(lab, "personal")


def _lines(err: bytes, what: str) -> list[str]:
    return [x for x in err.decode().splitlines() if x.startswith(f"qgitconf: {what}")]


def test_progress_for_big_review_and_apply_on_stderr_only(lab: Lab) -> None:
    _many(lab, 2000)
    quiet = qg(lab, "personal", "review", "--json")  # stderr is no terminal: no progress
    assert _lines(quiet.stderr, "review") == []
    proc = qg(lab, "personal", "review", "--json", "--progress")
    json.loads(proc.stdout)  # stdout is the JSON alone
    lines = _lines(proc.stderr, "review")
    assert "qgitconf: review: comparing the trees: 2000/2000 files" in lines
    assert "qgitconf: review: making the diff" in lines

    proc = qg(lab, "personal", "apply", "--yes", "--json", "--progress")
    assert json.loads(proc.stdout)["number"] == 1
    lines = _lines(proc.stderr, "apply")
    assert re.fullmatch(r"qgitconf: apply: 20\d\d changes planned", lines[0]), lines  # + dirs
    assert "qgitconf: apply: writing: 2000/2000 files" in lines
    # every file is new, in a directory the apply makes: created in place, none renamed
    assert not [x for x in lines if "moving into place" in x], lines
    assert all(re.fullmatch(r"qgitconf: apply: [a-z ]+(: \d+/\d+ files)?", x) for x in lines[1:])
    assert len(lines) < 20, lines


def test_no_progress_for_small_trees(lab: Lab) -> None:
    commit_files(lab, "personal", {".config/a": "a\n"}, "small")
    publish(lab, "personal")
    assert b"qgitconf: " not in qg(lab, "personal", "apply", "--yes", "--progress").stderr


# -- completion of target names --------------------------------------------------------------


def _complete(lab: Lab, qube: str, words: str) -> list[str]:
    env = ["_QGITCONF_COMPLETE=bash_complete", f"COMP_WORDS={words}"]
    cword = f"COMP_CWORD={len(words.split()) - (0 if words.endswith(' ') else 1)}"
    out = run(lab, qube, "env", *env, cword, "qgitconf").stdout.decode()
    return [line.split(",", 1)[1] for line in out.splitlines() if line.startswith("plain,")]


def test_completion_of_target_names_in_config_mgmt_only(lab: Lab) -> None:
    qg(lab, "config-mgmt", "layer", "add", "common")
    assert _complete(lab, "config-mgmt", "qgitconf publish ") == ["personal", "work"]
    assert _complete(lab, "config-mgmt", "qgitconf publish w") == ["work"]
    assert _complete(lab, "config-mgmt", "qgitconf squash p") == ["personal"]
    assert _complete(lab, "config-mgmt", "qgitconf edit ") == ["common", "personal", "work"]
    assert _complete(lab, "config-mgmt", "qgitconf import --into ") == ["personal", "work"]
    assert _complete(lab, "personal", "qgitconf publish ") == []
    assert _complete(lab, "personal", "qgitconf persist ") == []
