"""`qgitconf persist`: dom0 commands for custom-persist; the persistence verdict for doctor."""

from __future__ import annotations

import re
import shlex

import pytest

from qgitconf.core.paths import PathRules, check_tree_entry
from qgitconf.errors import ConfigError
from qgitconf.limits import MAX_HOME_PATH_BYTES, NAME_MAX
from qgitconf.ops.persist import (
    FEATURE_KEY_MAX,
    feature_key,
    persist_commands,
    persisted_dirs,
    state_persistence,
)
from tests.labkit import Lab, commit_files, publish, qg

STATE = "/home/user/.local/share/qgitconf"


def _commands(lines: list[str]) -> list[list[str]]:
    return [shlex.split(line) for line in lines if not line.startswith("#")]


def test_commands_declare_directories_and_never_enable_the_service() -> None:
    """custom-persist already on: the state, the configuration and the directories of
    the managed files, in dir: form; never ``qvm-service -e`` (issue 19: enabling it on
    a qube that did not use it rebuilds /home from /etc/skel at the next boot)."""
    lines = persist_commands("personal", [".bashrc", ".config/git/config"], custom_persist=True)
    cmds = _commands(lines)
    assert cmds == [
        [
            "qvm-features",
            "personal",
            "custom-persist.qgitconf-state",
            f"dir:user:user:0700:{STATE}",
        ],
        [
            "qvm-features",
            "personal",
            "custom-persist.qgitconf-config",
            "dir:user:user:0700:/home/user/.config/qgitconf",
        ],
        [
            "qvm-features",
            "personal",
            "custom-persist.qgitconf-d-config-git",
            "dir:user:user:0755:/home/user/.config/git",
        ],
    ]
    assert all("qvm-service" not in line or line.startswith("#") for line in lines)
    assert "#   /home/user/.bashrc" in lines  # a top-level file: explained, not declared


@pytest.mark.parametrize("enabled", [False, None])
def test_nothing_enables_custom_persist(enabled: bool | None) -> None:
    lines = persist_commands("work", [".bashrc", ".config/git/config"], custom_persist=enabled)
    assert _commands(lines) == []  # off: nothing to do; unknown: commented out
    assert not any("qvm-service -e" in line for line in lines)
    assert any("Never turn custom-persist on" in line for line in lines)
    if enabled is None:
        assert any("qvm-service work" in line and "Check first" not in line for line in lines)
        assert "#   qvm-features work custom-persist.qgitconf-d-config-git " in "\n".join(lines)
    else:
        assert any("Nothing to declare" in line for line in lines)


def test_directories_inside_declared_ones_are_not_declared_again() -> None:
    dirs, top = persisted_dirs([".a", ".config/git/config", ".config/git/x/y", ".vim/a/b"])
    assert dirs == [".config/git", ".vim/a"] and top == [".a"]


def test_feature_names_unique_and_paths_quoted() -> None:
    cmds = _commands(
        persist_commands("work", [".a-b/f", ".a.b/f", "my dir/f", "x'y/f"], custom_persist=True)
    )
    names = [c[2] for c in cmds[2:]]
    assert len(set(names)) == 4
    assert [c[3] for c in cmds[2:]] == [
        "dir:user:user:0755:/home/user/.a-b",
        "dir:user:user:0755:/home/user/.a.b",
        "dir:user:user:0755:/home/user/my dir",
        "dir:user:user:0755:/home/user/x'y",
    ]


def test_feature_keys_fit_qubesdb_for_the_longest_allowed_path() -> None:
    """core-admin ``qubes/ext/custom_persist.py``: a key longer than 63 - len("/persist/")
    = 54 characters is refused.  The longest path the allowlist admits, and paths that
    differ only past the cut, all get distinct keys that fit."""
    comp = "c" * NAME_MAX
    deep = comp
    while len(deep) < MAX_HOME_PATH_BYTES - 2:  # room for "/f"
        deep += "/" + "d" * min(NAME_MAX, MAX_HOME_PATH_BYTES - 2 - len(deep) - 1)
    longest = deep + "/f"
    assert len(longest.encode()) == MAX_HOME_PATH_BYTES
    rules = PathRules(allow=("**",), max_depth=64)
    assert check_tree_entry(longest.encode(), 0o100644, rules) == longest  # admitted
    files = [longest, deep[:-1] + "e/f", f"{comp}/{comp}/x/f", f"{comp}/{comp}/y/f"]
    cmds = _commands(persist_commands("work", files, custom_persist=True))
    keys = [c[2].removeprefix("custom-persist.") for c in cmds]
    assert FEATURE_KEY_MAX == 54
    assert all(0 < len(k) <= FEATURE_KEY_MAX for k in keys), keys
    assert all(re.fullmatch(r"[a-z0-9-]+", k) for k in keys)
    assert len(set(keys)) == len(keys) == 6
    assert feature_key("qgitconf-d", ".config/git") == "qgitconf-d-config-git"


def test_unprintable_paths_are_skipped_visibly() -> None:
    lines = persist_commands("work", [".ok/f", "evil\x1b[2Jname"], custom_persist=True)
    assert all("\x1b" not in line for line in lines)
    assert any(line.startswith("# skipped") and "\\x1b" in line for line in lines)
    assert len(_commands(lines)) == 3


def test_no_managed_files_yet() -> None:
    lines = persist_commands("work", [], custom_persist=True)
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
    assert "dir:user:user:0755:/home/user/.config/git" in out
    assert all(line.startswith("#") for line in out.splitlines())  # it cannot know
    assert "qvm-service personal" in out and "qvm-service -e" not in out
    # Target without custom-persist (QubesDB): nothing to declare, nothing enabled.
    out = qg(lab, "personal", "persist").stdout.decode()
    assert "custom-persist is off in personal" in out and "qvm-service -e" not in out
    assert all(line.startswith("#") for line in out.splitlines())
    lab.set_qubesdb("personal", "/qubes-service/custom-persist", "1")
    out = qg(lab, "personal", "persist").stdout.decode()
    assert "qvm-service -e" not in out
    assert "No managed files yet" in out
    assert publish(lab, "personal")["status"] == "staged"
    qg(lab, "personal", "apply", "--yes")
    out = qg(lab, "personal", "persist", "--home-dir", "/home/alice", "--user", "alice").stdout
    text = out.decode()
    assert "dir:alice:alice:0700:/home/alice/.local/share/qgitconf" in text
    assert "#   /home/alice/.bashrc" in text
    assert (
        "custom-persist.qgitconf-d-config-git dir:alice:alice:0755:/home/alice/.config/git" in text
    )
    # Unknown target branch in config-mgmt: a config error.
    proc = qg(lab, "config-mgmt", "persist", "nosuch", expect=4)
    assert b"no branch nosuch" in proc.stderr
