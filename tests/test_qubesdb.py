"""Pinning from dom0: `qvm-features QUBE vm-config.qgitconf-key FPR` wins over target.toml.

A lab-style `qubesdb-read` shim on PATH answers from files under a directory, the way
the real tool answers from QubesDB: the value and a newline, or exit 1 when absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qgitconf.agent.config import load_target_config
from qgitconf.agent.receive import own_name
from qgitconf.errors import ConfigError
from qgitconf.lab.lab import Lab, make_key
from tests.labkit import commit_files, publish, target_snapshot

A = "A" * 40
B = "B" * 40

SHIM = """#!/bin/sh
# qubesdb-read shim: answers KEY from $QUBESDB_ROOT/KEY (lab-style), exit 1 if absent.
f="{root}$1"
if [ ! -f "$f" ]; then echo "Failed to read $1" >&2; exit 1; fi
cat "$f"; echo
"""


def install_shim(bindir: Path, db: Path, values: dict[str, str]) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    for key, value in values.items():
        p = db / key.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(value)
    shim = bindir / "qubesdb-read"
    shim.write_text(SHIM.format(root=str(db)))
    shim.chmod(0o755)


@pytest.fixture
def target(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    home = tmp_path / "home"
    conf = home / ".config" / "qgitconf"
    (conf / "keys").mkdir(parents=True)
    (conf / "target.toml").write_text(f'source = "config-mgmt"\nkeys = ["{A}"]\n')
    (conf / "keys" / f"{A}.asc").write_bytes(b"key A")
    (conf / "keys" / f"{B}.asc").write_bytes(b"key B")
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    return home, env


def test_no_qubesdb_uses_toml_keys(target: tuple[Path, dict[str, str]]) -> None:
    home, _ = target
    cfg = load_target_config(home, {"PATH": "/nonexistent"})
    assert list(cfg.pinned) == [A]


def test_qubesdb_pin_wins_over_toml(tmp_path: Path, target: tuple[Path, dict[str, str]]) -> None:
    home, env = target
    install_shim(tmp_path / "bin", tmp_path / "db", {"/vm-config/qgitconf-key": B})
    cfg = load_target_config(home, env)
    assert dict(cfg.pinned) == {B: b"key B"}


def test_qubesdb_pin_lowercase_accepted(
    tmp_path: Path, target: tuple[Path, dict[str, str]]
) -> None:
    home, env = target
    install_shim(tmp_path / "bin", tmp_path / "db", {"/vm-config/qgitconf-key": B.lower()})
    assert list(load_target_config(home, env).pinned) == [B]


def test_absent_qubesdb_key_falls_back_to_toml(
    tmp_path: Path, target: tuple[Path, dict[str, str]]
) -> None:
    home, env = target
    install_shim(tmp_path / "bin", tmp_path / "db", {"/name": "personal"})
    assert list(load_target_config(home, env).pinned) == [A]


@pytest.mark.parametrize(
    "value",
    ["not-a-fingerprint", B[:39], B + "0", f"{B} {A}", "0x" + B[2:], B[:20] + "\x1b" + B[21:]],
    ids=["word", "short", "long", "two", "0x", "control"],
)
def test_bad_qubesdb_value_is_config_error(
    tmp_path: Path, target: tuple[Path, dict[str, str]], value: str
) -> None:
    home, env = target
    install_shim(tmp_path / "bin", tmp_path / "db", {"/vm-config/qgitconf-key": value})
    with pytest.raises(ConfigError, match="qgitconf-key"):
        load_target_config(home, env)


def test_qubesdb_pin_needs_its_public_key(
    tmp_path: Path, target: tuple[Path, dict[str, str]]
) -> None:
    home, env = target
    (home / ".config/qgitconf/keys" / f"{B}.asc").unlink()
    install_shim(tmp_path / "bin", tmp_path / "db", {"/vm-config/qgitconf-key": B})
    with pytest.raises(ConfigError, match=B):
        load_target_config(home, env)


def test_own_name_from_qubesdb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_shim(tmp_path / "bin", tmp_path / "db", {"/name": "personal"})
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert own_name({}) == "personal"
    assert own_name({"QGITCONF_QUBE_NAME": "work"}) == "work"


def test_lab_qubesdb_pin_overrides_toml_in_receive(lab: Lab, tmp_path: Path) -> None:
    """End to end: dom0 pins another key, so the vault-signed update is refused."""
    other_home = Path(lab.root) / "otherkey"
    other = make_key(other_home, "other <other@lab.invalid>")
    try:
        import subprocess

        public = subprocess.run(
            ["gpg", "--homedir", str(other_home), "--armor", "--export", other],
            capture_output=True,
            check=True,
        ).stdout
    finally:
        subprocess.run(["gpgconf", "--homedir", str(other_home), "--kill", "all"], check=False)
    keys = lab.home("personal") / ".config/qgitconf/keys"
    (keys / f"{other}.asc").write_bytes(public)
    install_shim(
        lab.qube("personal") / "bin",
        lab.qube("personal") / "qubesdb",
        {"/vm-config/qgitconf-key": other, "/name": "personal"},
    )
    commit_files(lab, "personal", {".gitconfig": "[alias]\n\tst = status\n"}, "aliases")
    before = target_snapshot(lab, "personal")
    out = publish(lab, "personal", expect=1)
    assert out["status"] == "rejected"
    assert "signature-untrusted" in out["message"]
    assert target_snapshot(lab, "personal") == before

    # dom0 now pins the vault key: the same update is accepted.
    (lab.qube("personal") / "qubesdb/vm-config/qgitconf-key").write_text(lab.fingerprint)
    assert publish(lab, "personal")["status"] == "staged"
