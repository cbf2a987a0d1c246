"""Pinning from dom0: `qvm-features QUBE vm-config.qgitconf-key FPR` wins over target.toml.

The unit tests hand ``load_target_config`` a reader; the lab test runs the real agent
against the lab's QubesDB (``qubesdb-read`` in the qube's /usr/bin).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qgitconf.agent.config import load_target_config
from qgitconf.errors import ConfigError
from qgitconf.qubes.qubesdb import own_name
from tests.labkit import Lab, commit_files, export_key, make_key_in, publish, run, target_snapshot

A = "A" * 40
B = "B" * 40


def reader(values: dict[str, str]) -> Callable[[str], str | None]:
    """A QubesDB as the agent's reader sees it: the value, or None when absent."""
    return values.get


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    conf = home / ".config" / "qgitconf"
    (conf / "keys").mkdir(parents=True)
    (conf / "target.toml").write_text(f'source = "config-mgmt"\nkeys = ["{A}"]\n')
    (conf / "keys" / f"{A}.asc").write_bytes(b"key A")
    (conf / "keys" / f"{B}.asc").write_bytes(b"key B")
    return home


def test_no_qubesdb_uses_toml_keys(home: Path) -> None:
    assert list(load_target_config(home, read_qubesdb=reader({})).pinned) == [A]


def test_qubesdb_pin_wins_over_toml(home: Path) -> None:
    cfg = load_target_config(home, read_qubesdb=reader({"/vm-config/qgitconf-key": B}))
    assert dict(cfg.pinned) == {B: b"key B"}


def test_qubesdb_pin_lowercase_accepted(home: Path) -> None:
    read = reader({"/vm-config/qgitconf-key": B.lower()})
    assert list(load_target_config(home, read_qubesdb=read).pinned) == [B]


def test_absent_qubesdb_key_falls_back_to_toml(home: Path) -> None:
    read = reader({"/name": "personal"})
    assert list(load_target_config(home, read_qubesdb=read).pinned) == [A]


@pytest.mark.parametrize(
    "value",
    ["not-a-fingerprint", B[:39], B + "0", f"{B} {A}", "0x" + B[2:], B[:20] + "\x1b" + B[21:]],
    ids=["word", "short", "long", "two", "0x", "control"],
)
def test_bad_qubesdb_value_is_config_error(home: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="qgitconf-key"):
        load_target_config(home, read_qubesdb=reader({"/vm-config/qgitconf-key": value}))


def test_qubesdb_pin_needs_its_public_key(home: Path) -> None:
    (home / ".config/qgitconf/keys" / f"{B}.asc").unlink()
    with pytest.raises(ConfigError, match=B):
        load_target_config(home, read_qubesdb=reader({"/vm-config/qgitconf-key": B}))


# DESIGN rule 12: the environment a service starts with is what ~/.profile left.  Each
# row is a way an update (through ~/.profile or ~/bin) could try to tell the agent who
# it is or where its configuration is; none of them may be heard.
ENV_ATTACKS = [
    ("QGITCONF_QUBE_NAME", "work"),
    ("QGITCONF_SYSCONFDIR", "/tmp/attacker-etc"),
    ("PATH", "{bin}:/usr/bin:/bin"),
]


@pytest.mark.parametrize(("var", "value"), ENV_ATTACKS, ids=[v for v, _ in ENV_ATTACKS])
def test_environment_never_names_the_qube(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    """A `qubesdb-read` in ~/bin and QGITCONF_* variables are not consulted: on a
    machine without QubesDB the agent has no name at all."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "qubesdb-read"
    fake.write_text("#!/bin/sh\necho work\n")
    fake.chmod(0o755)
    monkeypatch.setenv(var, value.format(bin=bindir))
    if Path("/usr/bin/qubesdb-read").exists():
        pytest.skip("this machine has a real QubesDB")
    with pytest.raises(ConfigError) as e:
        own_name()
    assert e.value.code == "no-qubesdb"


def test_environment_never_moves_the_system_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "target.toml").write_text(f'source = "attacker"\nkeys = ["{A}"]\n')
    monkeypatch.setenv("QGITCONF_SYSCONFDIR", str(etc))
    home = tmp_path / "home"  # made empty by the hermetic fixture
    with pytest.raises(ConfigError, match="not set up"):
        load_target_config(home, dict(os.environ), read_qubesdb=reader({}))


def test_lab_qubesdb_pin_overrides_toml_in_receive(lab: Lab) -> None:
    """End to end: dom0 pins another key, so the vault-signed update is refused."""
    other = make_key_in(lab, "untrusted", "other <other@lab.invalid>")
    public = export_key(lab, "untrusted", other)
    lab.write("personal", f".config/qgitconf/keys/{other}.asc", public)
    lab.set_qubesdb("personal", "/vm-config/qgitconf-key", other)
    commit_files(lab, "personal", {".gitconfig": "[alias]\n\tst = status\n"}, "aliases")
    before = target_snapshot(lab, "personal")
    out = publish(lab, "personal", expect=1)
    assert out["status"] == "rejected"
    assert "signature-untrusted" in out["message"]
    assert target_snapshot(lab, "personal") == before

    # dom0 now pins the vault key: the same update is accepted.
    lab.set_qubesdb("personal", "/vm-config/qgitconf-key", lab.fingerprint)
    assert publish(lab, "personal")["status"] == "staged"


# `qubesdb-read -f KEY...` (one process for the Receive service's three values): one
# `KEY = VALUE` line per key found, in the order asked; anything else is no answer.
MANY = ["/vm-config/qgitconf-key", "/vm-config/qgitconf-system-paths", "/name"]


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (f"{MANY[0]} = {A}\n{MANY[1]} = /etc/vim/ /etc/gitconfig\n/name = personal\n",
         [A, "/etc/vim/ /etc/gitconfig", "personal"]),
        ("/name = personal\n", [None, None, "personal"]),
        (f"{MANY[1]} = a = b\n", [None, "a = b", None]),
        ("/name = \n", [None, None, ""]),
        ("", [None, None, None]),
        ("Failed connect to local daemon\n", [None, None, None]),
        (f"/name = personal\n{MANY[0]} = {A}\n", [None, None, None]),  # out of order
        ("/name = personal\n/name = work\n", [None, None, None]),  # twice
        ("/name = personal\nextra\n", [None, None, None]),
        ("/namex = personal\n", [None, None, None]),
        (f"{MANY[0]}={A}\n", [None, None, None]),
    ],
    ids=["all", "only-name", "value-with-equals", "empty-value", "nothing", "error-text",
         "out-of-order", "twice", "trailing-junk", "other-key", "no-spaces"],
)  # fmt: skip
def test_qubesdb_read_many_output_is_parsed_strictly(
    output: str, expected: list[str | None]
) -> None:
    from qgitconf.qubes.qubesdb import parse_fullpath

    assert parse_fullpath(output, MANY) == dict(zip(MANY, expected, strict=True))


def test_qubesdb_read_many_in_the_lab(lab: Lab) -> None:
    """One ``qubesdb-read -f`` (started, then waited for: ``start_many``) gives the
    keys found and None for the others, as one ``qubesdb-read`` per key did."""
    code = (
        "from qgitconf.qubes import qubesdb; "
        "print(qubesdb.start_many(['/vm-config/qgitconf-key', '/nosuch', '/name'])())"
    )
    out = run(lab, "personal", "python3", "-I", "-c", code).stdout.decode()
    assert out == "{'/vm-config/qgitconf-key': None, '/nosuch': None, '/name': 'personal'}\n"


def test_qubesdb_reader_caps_the_answer_and_kills_the_child() -> None:
    """The one QubesDB reader reads at most the cap and the child is killed past it: a
    program that prints without end (``yes``, found on the system PATH as every
    program is) gives no value, and no process is left."""
    from qgitconf.qubes import qubesdb

    got = qubesdb._spawn(["yes", "x" * 100])
    assert got is not None
    pid, r = got
    assert qubesdb._collect(pid, r, time.monotonic() + 10, qubesdb.MAX_QUBESDB_VALUE_BYTES) is None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped already
    assert qubesdb._run("yes", "x") is None  # read()/list_keys() through it: no value


def test_qubesdb_reader_times_out_and_kills_the_child() -> None:
    from qgitconf.qubes import qubesdb

    got = qubesdb._spawn(["sleep", "30"])
    assert got is not None
    pid, r = got
    t0 = time.monotonic()
    assert qubesdb._collect(pid, r, t0 + 0.3, qubesdb.MAX_QUBESDB_VALUE_BYTES) is None
    assert time.monotonic() - t0 < 5
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_qubesdb_reader_gives_exit_status_and_output() -> None:
    from qgitconf.qubes import qubesdb

    got = qubesdb._spawn(["printf", "/name = personal\\n"])
    assert got is not None
    assert qubesdb._collect(*got, time.monotonic() + 10, 100) == (0, b"/name = personal\n")
    assert qubesdb._spawn(["no-such-program-qgitconf"]) is None
