"""The command line: help for every command, one-line errors with stable codes, exit statuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import qgitconf.agent.gitcmd
from qgitconf import __version__
from qgitconf.cli import cli, main
from tests.labkit import INCOMING, Lab, commit_files, publish, qg, snapshot

QGITCONF = str(Path(sys.executable).parent / "qgitconf")

COMMANDS = (
    "init",
    "target",
    "edit",
    "add",
    "commit",
    "publish",
    "status",
    "revert",
    "review",
    "apply",
    "restore",
    "log",
    "git",
    "policy",
    "persist",
    "doctor",
    "layer",
    "import",
    "pull",
    "squash",
    "diff",
    "system",
    "lab",
)
HELP_ARGV = [
    [],
    *([c] for c in COMMANDS),
    ["target", "add"],
    ["target", "init"],
    ["target", "list"],
    ["target", "remove"],
    ["system", "apply"],
    ["system", "revert"],
    ["system", "restore"],
    ["layer", "add"],
    ["layer", "list"],
    ["lab", "up"],
    ["lab", "down"],
    ["lab", "run"],
    ["lab", "shell"],
    ["lab", "demo"],
]


def _listed_commands(help_text: str) -> set[str]:
    lines = help_text.split("Commands:", 1)[1].splitlines()
    return {line.split()[0] for line in lines if line.startswith("  ") and line.split()}


def assert_one_line_error(proc: subprocess.CompletedProcess[bytes], code: str, status: int) -> str:
    err = proc.stderr.decode()
    assert proc.returncode == status, err
    assert err.startswith(f"qgitconf: error [{code}]: "), err
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


# -- 1. help ----------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    assert _listed_commands(result.output) == set(COMMANDS)


@pytest.mark.parametrize(
    ("group", "subcommands"),
    [("target", {"add", "init", "list"}), ("lab", {"up", "down", "run", "shell", "demo"})],
)
def test_group_help_lists_subcommands(group: str, subcommands: set[str]) -> None:
    result = CliRunner().invoke(cli, [group, "--help"])
    assert result.exit_code == 0, result.output
    assert _listed_commands(result.output) >= subcommands


@pytest.mark.parametrize("argv", HELP_ARGV, ids=lambda a: " ".join(a) or "top")
def test_every_command_help_exits_zero(argv: list[str]) -> None:
    result = CliRunner().invoke(cli, [*argv, "--help"])
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert result.output.startswith("Usage: ")
    assert " ".join(["cli", *argv]) in result.output.splitlines()[0]


# -- 3. version -------------------------------------------------------------------------


def test_version_through_the_installed_entry_point() -> None:
    proc = subprocess.run([QGITCONF, "--version"], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().strip() == f"qgitconf, version {__version__}"


def test_version_in_process() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


# -- 2. errors: one line, a stable code, a non-zero exit, no traceback --------------------


def test_review_in_a_home_not_set_up_is_a_config_error(tmp_path: Path) -> None:
    env = dict(os.environ, QGITCONF_SYSCONFDIR=str(tmp_path / "etc"))
    home = Path(env["HOME"])
    before = snapshot(home)
    proc = subprocess.run([QGITCONF, "review"], capture_output=True, check=False, env=env, cwd=home)
    assert_one_line_error(proc, "config", 4)
    assert proc.stdout == b""
    assert snapshot(home) == before


def test_apply_with_nothing_staged(lab: Lab) -> None:
    proc = qg(lab, "personal", "apply", "--yes", expect=None)
    assert_one_line_error(proc, "nothing-staged", 1)


def test_publish_unknown_target_is_a_usage_error(lab: Lab) -> None:
    proc = qg(lab, "config-mgmt", "publish", "nosuch", expect=None)
    err = assert_one_line_error(proc, "usage", 2)
    assert "nosuch" in err
    assert not (lab.home("config-mgmt") / "qgitconf.git/qgitconf/updates/nosuch.update").exists()


def test_publish_without_target_is_a_usage_error(lab: Lab) -> None:
    proc = qg(lab, "config-mgmt", "publish", expect=None)
    assert_one_line_error(proc, "usage", 2)


def test_target_init_with_a_bad_source_name(lab: Lab) -> None:
    before = snapshot(lab.home("personal"))
    proc = qg(
        lab,
        "personal",
        "target",
        "init",
        "--source",
        "bad/name",
        "--key-file",
        INCOMING,
        "--fingerprint",
        lab.fingerprint,
        expect=None,
    )
    err = assert_one_line_error(proc, "usage", 2)
    assert "bad/name" in err
    assert snapshot(lab.home("personal")) == before


def test_apply_without_yes_and_no_terminal_refuses(lab: Lab) -> None:
    commit_files(lab, "personal", {".inputrc": "set bell-style none\n"}, "inputrc")
    assert publish(lab, "personal")["status"] == "staged"
    # stdin is a pipe that would even say yes: apply must still refuse without --yes.
    proc = qg(lab, "personal", "apply", input=b"y\n", expect=None)
    err = assert_one_line_error(proc, "usage", 2)
    assert "--yes" in err
    assert not (lab.home("personal") / ".inputrc").exists()
    # ... and the staged update is still there to apply explicitly.
    qg(lab, "personal", "apply", "--yes")
    assert (lab.home("personal") / ".inputrc").read_text() == "set bell-style none\n"


def test_click_usage_error_has_no_traceback(lab: Lab) -> None:
    proc = qg(lab, "config-mgmt", "publish", "--no-such-option", expect=None)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "No such option" in err
    assert "Traceback" not in err


def test_error_detail_is_sanitised(lab: Lab) -> None:
    proc = qg(lab, "config-mgmt", "publish", "evil\x1b[2J\u202e", expect=None)
    err = assert_one_line_error(proc, "usage", 2)
    assert "\x1b" not in err
    assert "\u202e" not in err


# -- 4. internal errors -----------------------------------------------------------------


def _boom(*_args: object, **_kw: object) -> object:
    raise RuntimeError("simulated bug")


@pytest.mark.parametrize("debug", [False, True])
def test_internal_error_exit_70(
    debug: bool, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `qgitconf log` imports its implementation at call time: replace it with a bug.
    monkeypatch.setattr(qgitconf.agent.gitcmd, "log", _boom)
    with pytest.raises(SystemExit) as exc:
        main(["--debug", "log"] if debug else ["log"])
    assert exc.value.code == 70
    out = capsys.readouterr()
    assert out.out == ""
    last = out.err.splitlines()[-1]
    assert last.startswith("qgitconf: internal error")
    assert "simulated bug" in last
    if debug:
        assert "Traceback (most recent call last)" in out.err
        assert "RuntimeError: simulated bug" in out.err
    else:
        assert "Traceback" not in out.err
        assert len(out.err.splitlines()) == 1
        assert "--debug" in out.err


def test_qgitconf_error_in_process_maps_exit_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from qgitconf.errors import DriftError

    def drift(*_args: object, **_kw: object) -> object:
        raise DriftError("~/.bashrc changed locally")

    monkeypatch.setattr(qgitconf.agent.gitcmd, "log", drift)
    with pytest.raises(SystemExit) as exc:
        main(["log"])
    assert exc.value.code == 1
    assert capsys.readouterr().err == "qgitconf: error [drift]: ~/.bashrc changed locally\n"


@pytest.mark.parametrize(
    "content",
    [pytest.param("[]", id="not-an-object"), pytest.param("{", id="not-json")],
)
def test_corrupt_state_json_is_a_local_state_error(lab: Lab, content: str) -> None:
    lab.write("personal", ".local/share/qgitconf/state.json", content.encode(), mode=0o600)
    proc = qg(lab, "personal", "status", expect=None)
    assert_one_line_error(proc, "local-state", 6)
