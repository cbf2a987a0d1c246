"""`qgitconf persist`: dom0 commands for custom-persist; the persistence verdict for doctor."""

from __future__ import annotations

import shlex

import pytest

from qgitconf.errors import ConfigError
from qgitconf.persist import persist_commands, state_persistence
from tests.labkit import Lab, commit_files, publish, qg

STATE = "/home/user/.local/share/qgitconf"


def _commands(lines: list[str]) -> list[list[str]]:
    return [shlex.split(line) for line in lines if not line.startswith("#")]


def test_commands_declare_state_in_dir_form_first_and_enable_the_service_last() -> None:
    """The script's own comment: declare the state BEFORE enabling custom-persist (issue
    16: the service was enabled first, so a reboot in between lost the state)."""
    lines = persist_commands("personal", [".bashrc", ".config/git/config"])
    assert any("BEFORE enabling the service" in line for line in lines)
    cmds = _commands(lines)
    assert cmds[0] == [
        "qvm-features",
        "personal",
        "custom-persist.qgitconf-state",
        f"dir:user:user:0700:{STATE}",
    ]
    assert cmds[1] == [
        "qvm-features",
        "personal",
        "custom-persist.qgitconf-config",
        "dir:user:user:0700:/home/user/.config/qgitconf",
    ]
    assert cmds[2:4] == [
        ["qvm-features", "personal", "custom-persist.qgitconf-f-bashrc", "/home/user/.bashrc"],
        [
            "qvm-features",
            "personal",
            "custom-persist.qgitconf-f-config-git-config",
            "/home/user/.config/git/config",
        ],
    ]
    assert cmds[-1] == ["qvm-service", "-e", "personal", "custom-persist"]
    assert [c[0] for c in cmds].count("qvm-service") == 1


def test_feature_names_unique_and_paths_quoted() -> None:
    cmds = _commands(persist_commands("work", [".a-b", ".a.b", "my file", "x'y"]))
    names = [c[2] for c in cmds[2:-1]]
    assert len(set(names)) == 4
    assert [c[3] for c in cmds[2:-1]] == [
        "/home/user/.a-b",
        "/home/user/.a.b",
        "/home/user/my file",
        "/home/user/x'y",
    ]


def test_unprintable_paths_are_skipped_visibly() -> None:
    lines = persist_commands("work", [".ok", "evil\x1b[2Jname"])
    assert all("\x1b" not in line for line in lines)
    assert any(line.startswith("# skipped") and "\\x1b" in line for line in lines)
    assert len(_commands(lines)) == 4


def test_no_managed_files_yet() -> None:
    lines = persist_commands("work", [])
    assert any("No managed files yet" in line for line in lines)


@pytest.mark.parametrize(
    ("qube", "home", "user"),
    [("a;rm -rf /", "/home/user", "user"), ("work", "home", "user"), ("work", "/h", "r;t")],
)
def test_bad_names_refused(qube: str, home: str, user: str) -> None:
    with pytest.raises(ConfigError):
        persist_commands(qube, [], home=home, user=user)


def _db(values: dict[str, str]):  # type: ignore[no-untyped-def]
    return values.get


@pytest.mark.parametrize(
    ("values", "entries", "result", "text"),
    [
        ({}, [], "skip", "not in a Qubes qube"),
        ({"/name": "p", "/type": "AppVM"}, [], "ok", "custom-persist is off"),
        ({"/name": "p", "/type": "DispVM"}, [], "warn", "disposable"),
        ({"/name": "p", "/type": "StandaloneVM"}, [], "ok", "persist"),
        (
            {"/name": "p", "/type": "AppVM", "/qubes-service/custom-persist": "1"},
            [],
            "warn",
            "not declared",
        ),
        (
            {
                "/name": "p",
                "/type": "AppVM",
                "/qubes-service/custom-persist": "1",
                "/persist/qgitconf-state": f"dir:user:user:0700:{STATE}",
            },
            ["qgitconf-state"],
            "ok",
            "qgitconf-state",
        ),
        (
            {
                "/name": "p",
                "/type": "AppVM",
                "/qubes-service/custom-persist": "1",
                "/persist/home": "/home",
            },
            ["home"],
            "ok",
            "/home",
        ),
        (
            {
                "/name": "p",
                "/type": "AppVM",
                "/qubes-service/custom-persist": "1",
                "/persist/other": "/home/user/.local/share/qgitconf-other",
            },
            ["other"],
            "warn",
            "not declared",
        ),
    ],
    ids=[
        "no-qubesdb",
        "appvm",
        "dispvm",
        "standalone",
        "cp-undeclared",
        "cp-dir",
        "cp-home",
        "prefix",
    ],
)
def test_state_persistence(
    values: dict[str, str], entries: list[str], result: str, text: str
) -> None:
    verdict = state_persistence(_db(values), STATE, entries)
    assert verdict.result == result
    assert text in verdict.message


def test_persist_in_lab_both_sides(lab: Lab) -> None:
    commit_files(
        lab, "personal", {".bashrc": "PS1='$ '\n", ".config/git/config": "[user]\n"}, "files"
    )
    # config-mgmt: from the branch tip, before anything was published.
    out = qg(lab, "config-mgmt", "persist", "personal").stdout.decode()
    assert "custom-persist.qgitconf-state dir:user:user:0700:" in out
    assert "/home/user/.config/git/config" in out
    # Target: nothing applied yet, then the manifest after apply.
    out = qg(lab, "personal", "persist").stdout.decode()
    assert "qvm-service -e personal custom-persist" in out
    assert "No managed files yet" in out
    assert publish(lab, "personal")["status"] == "staged"
    qg(lab, "personal", "apply", "--yes")
    out = qg(lab, "personal", "persist", "--home-dir", "/home/alice", "--user", "alice").stdout
    text = out.decode()
    assert "dir:alice:alice:0700:/home/alice/.local/share/qgitconf" in text
    assert "/home/alice/.bashrc" in text and "/home/alice/.config/git/config" in text
    # Unknown target branch in config-mgmt: a config error.
    proc = qg(lab, "config-mgmt", "persist", "nosuch", expect=4)
    assert b"no branch nosuch" in proc.stderr
