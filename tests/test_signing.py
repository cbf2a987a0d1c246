"""Signature acceptance (rule 2) and key pinning at `target init`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from qgitconf.agent.commands import target_init
from qgitconf.errors import ConfigError, SignatureError
from qgitconf.lab.lab import make_key
from qgitconf.signing import Verifier, inspect_key_file


def _export(home: Path, *fprs: str) -> bytes:
    return subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--armor", "--export", *fprs],
        capture_output=True,
        check=True,
    ).stdout


def _sign(home: Path, fpr: str, data: bytes) -> bytes:
    return subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--armor", "--detach-sign", "-u", fpr],
        input=data,
        capture_output=True,
        check=True,
    ).stdout


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    home = tmp_path_factory.mktemp("k") / "g"
    a = make_key(home, "A <a@test.invalid>")
    b = make_key(home, "B <b@test.invalid>")
    yield home, a, b
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def test_good_signature_by_pin_returns_primary_fingerprint(keys: tuple[Path, str, str]) -> None:
    home, a, _b = keys
    with Verifier({a: _export(home, a)}) as v:
        assert v.verify(b"payload", _sign(home, a, b"payload")) == a


def test_signature_by_other_key_fails(keys: tuple[Path, str, str]) -> None:
    home, a, b = keys
    with Verifier({a: _export(home, a)}) as v, pytest.raises(SignatureError):
        v.verify(b"payload", _sign(home, b, b"payload"))


def test_signature_over_other_payload_fails(keys: tuple[Path, str, str]) -> None:
    home, a, _b = keys
    with Verifier({a: _export(home, a)}) as v, pytest.raises(SignatureError):
        v.verify(b"payload!", _sign(home, a, b"payload"))


def test_pinned_key_file_smuggling_a_second_key_is_refused(keys: tuple[Path, str, str]) -> None:
    """A key file for pin A that also holds key B must not make B's signatures count."""
    home, a, b = keys
    with pytest.raises(ConfigError), Verifier({a: _export(home, a, b)}):
        pass


def test_target_init_refuses_a_key_file_with_two_keys(
    keys: tuple[Path, str, str], tmp_path: Path
) -> None:
    home, a, b = keys
    key_file = tmp_path / "two.asc"
    key_file.write_bytes(_export(home, a, b))
    target = tmp_path / "target"
    with pytest.raises(ConfigError, match="2 keys"):
        target_init(target, "config-mgmt", key_file, None, [])
    assert not (target / ".config").exists()


def test_target_init_refuses_a_fingerprint_mismatch(
    keys: tuple[Path, str, str], tmp_path: Path
) -> None:
    home, a, b = keys
    key_file = tmp_path / "a.asc"
    key_file.write_bytes(_export(home, a))
    with pytest.raises(ConfigError):
        target_init(tmp_path / "target", "config-mgmt", key_file, b, [])


def test_inspect_key_file_reads_uids(keys: tuple[Path, str, str]) -> None:
    home, a, _b = keys
    [info] = inspect_key_file(_export(home, a))
    assert info.fingerprint == a and info.uids == ("A <a@test.invalid>",)
