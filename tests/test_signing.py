"""Signature acceptance (rule 2) and key pinning at `target init`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import gnupg
import pytest

from qgitconf import sysprog
from qgitconf.agent.target import target_init
from qgitconf.errors import CommitSignatureError, ConfigError, SignatureError
from qgitconf.gpg.homes import HomeCache, pin_digest
from qgitconf.gpg.judge import counted_signer
from qgitconf.gpg.keys import inspect_key_file
from qgitconf.gpg.signing import Verifier
from tests.keys import make_key
from tests.labkit import snapshot


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


# -- kept verification homes (issue 8: no key import per receive) ----------------------


def _cache(tmp_path: Path) -> HomeCache:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return HomeCache(tmp_path / "homes", tmp_path / "tmp")


def _kept(cache: HomeCache) -> list[str]:
    return sorted(os.listdir(cache.root)) if cache.root.exists() else []


def test_home_is_kept_after_success_and_reused_without_import(
    keys: tuple[Path, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, a, _b = keys
    cache, pins = _cache(tmp_path), {a: _export(home, a)}
    with Verifier(pins, cache) as v:
        assert v.verify(b"payload", _sign(home, a, b"payload")) == a
    assert _kept(cache) == [pin_digest(pins)] and os.listdir(cache.tmp) == []

    def no_import(*args: object, **kw: object) -> None:
        raise AssertionError("keys imported again")

    monkeypatch.setattr(gnupg.GPG, "import_keys", no_import)
    with Verifier(pins, cache) as v:
        assert v.verify(b"payload", _sign(home, a, b"payload")) == a
    assert os.listdir(cache.tmp) == []


def test_failed_verification_keeps_nothing(keys: tuple[Path, str, str], tmp_path: Path) -> None:
    """Rule 8: a rejected update leaves the state as it was."""
    home, a, b = keys
    cache = _cache(tmp_path)
    with pytest.raises(SignatureError), Verifier({a: _export(home, a)}, cache) as v:
        v.verify(b"payload", _sign(home, b, b"payload"))
    assert not cache.root.exists() and os.listdir(cache.tmp) == []
    with pytest.raises(ConfigError), Verifier({a: _export(home, a, b)}, cache):
        pass
    assert not cache.root.exists() and os.listdir(cache.tmp) == []


def test_a_started_verification_runs_beside_other_work(
    keys: tuple[Path, str, str], tmp_path: Path
) -> None:
    """``start`` leaves gpg running; ``result`` judges it like ``verify``; leaving the
    context stops gpg and removes the spooled signature and payload either way."""
    home, a, b = keys
    cache, pins = _cache(tmp_path), {a: _export(home, a)}

    def spooled() -> int:
        return len(list(tmp_path.glob("**/signature-*")))

    with Verifier(pins, cache) as v:
        with v.start(b"payload", _sign(home, a, b"payload")) as good:
            assert spooled() == 2  # the signature and the payload
            assert good.result() == a and good.result() == a
        with v.start(b"payload", _sign(home, b, b"payload"), CommitSignatureError) as bad:
            for _ in range(2):  # asked twice, refused twice
                with pytest.raises(CommitSignatureError, match="does not count"):
                    bad.result()
        with v.start(b"payload", _sign(home, a, b"payload")) as left:
            pass  # never asked: stopped
        assert left._proc.returncode is not None
        assert spooled() == 0
    with Verifier(pins, cache) as v, v.start(b"payload", _sign(home, a, b"payload")):
        assert spooled() == 2  # beside the kept home, in its scratch directory
    assert spooled() == 0 and os.listdir(cache.tmp) == []


def test_changed_pins_make_a_new_home(keys: tuple[Path, str, str], tmp_path: Path) -> None:
    home, a, b = keys
    cache = _cache(tmp_path)
    with Verifier({a: _export(home, a)}, cache) as v:
        v.verify(b"p", _sign(home, a, b"p"))
    with Verifier({b: _export(home, b)}, cache) as v:
        with pytest.raises(SignatureError):  # a is no longer pinned
            v.verify(b"p", _sign(home, a, b"p"))
        assert v.verify(b"p", _sign(home, b, b"p")) == b
    assert _kept(cache) == [pin_digest({b: _export(home, b)})]
    assert pin_digest({a: _export(home, a)}) != pin_digest({b: _export(home, b)})
    assert pin_digest({a: _export(home, a)}) != pin_digest({a: _export(home, a) + b"\n"})


@pytest.mark.parametrize("tamper", ["extra-key", "gpg.conf", "fifo", "symlink", "open-mode"])
def test_a_changed_kept_home_is_not_trusted(
    keys: tuple[Path, str, str], tmp_path: Path, tamper: str
) -> None:
    """A kept home that no longer holds exactly what was checked is ignored: a
    signature by a key planted in it does not count, and the next successful
    verification replaces it."""
    home, a, b = keys
    cache, pins = _cache(tmp_path), {a: _export(home, a)}
    with Verifier(pins, cache) as v:
        v.verify(b"p", _sign(home, a, b"p"))
    kept = cache.root / pin_digest(pins)
    if tamper == "extra-key":
        subprocess.run(
            ["gpg", "--homedir", str(kept), "--batch", "--no-autostart", "--import"],
            input=_export(home, b),
            capture_output=True,
            check=False,  # exit 2: no agent to talk to; the key is in all the same
        )
        assert b in _list(kept)
    elif tamper == "gpg.conf":
        (kept / "gpg.conf").write_text("trust-model always\n")
    elif tamper == "fifo":  # must not hang the receive
        os.mkfifo(kept / "gpg.conf")
    elif tamper == "symlink":
        os.rename(kept, tmp_path / "real")
        kept.symlink_to(tmp_path / "real")
    else:
        kept.chmod(0o755)
    with Verifier(pins, cache) as v:
        with pytest.raises(SignatureError):
            v.verify(b"p", _sign(home, b, b"p"))
        assert v.verify(b"p", _sign(home, a, b"p")) == a
    assert kept.is_dir() and not kept.is_symlink() and not os.path.lexists(kept / "gpg.conf")
    listed = _list(kept)
    assert b not in listed and a in listed


def _list(gnupghome: Path) -> str:
    return subprocess.run(
        ["gpg", "--homedir", str(gnupghome), "--batch", "--with-colons", "--list-keys"],
        capture_output=True,
        check=True,
    ).stdout.decode()


def test_target_init_keeps_the_verification_home(
    keys: tuple[Path, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first receive after `target init` finds the pinned key's home ready."""
    from qgitconf.agent.config import load_target_config
    from qgitconf.agent.state import AgentState, state_dir
    from qgitconf.agent.target import target_init

    home, a, _b = keys
    key_file = tmp_path / "key.asc"
    key_file.write_bytes(_export(home, a))
    target = tmp_path / "target"
    target.mkdir()
    target_init(target, "config-mgmt", key_file, a, [])
    no_system = tmp_path / "no-etc/target.toml"  # never the host's /etc/qgitconf
    pinned = load_target_config(target, {"HOME": str(target)}, system_config=no_system).pinned
    state = AgentState(state_dir(target))
    assert _kept(HomeCache(state.verify_homes, state.tmp)) == [pin_digest(pinned)]

    def no_import(*args: object, **kw: object) -> None:
        raise AssertionError("keys imported again")

    monkeypatch.setattr(gnupg.GPG, "import_keys", no_import)
    with Verifier(pinned, HomeCache(state.verify_homes, state.tmp)) as v:
        assert v.verify(b"payload", _sign(home, a, b"payload")) == a


# --- counted_signer: the status lines of one gpg --verify ---------------------------

_PRIMARY = "277E0A5E027F5A068CEBABE7ECE60B11D2DDF09C"
_SUBKEY = "0123456789ABCDEF0123456789ABCDEF01234567"
_GOOD = (
    "[GNUPG:] NEWSIG\n"
    f"[GNUPG:] KEY_CONSIDERED {_PRIMARY} 0\n"
    "[GNUPG:] SIG_ID NmJuMlxGQ2mWRFz+7ZYi2v7RyG8 2026-11-29 1795913905\n"
    "[GNUPG:] GOODSIG ECE60B11D2DDF09C vault <vault@test.invalid>\n"
    f"[GNUPG:] VALIDSIG {_PRIMARY} 2026-11-29 1795913905 0 4 0 22 8 00 {_PRIMARY}\n"
    "[GNUPG:] TRUST_UNDEFINED 0 pgp\n"
)
_BY_SUBKEY = _GOOD.replace(f"VALIDSIG {_PRIMARY}", f"VALIDSIG {_SUBKEY}").replace(
    "GOODSIG ECE60B11D2DDF09C", "GOODSIG 89ABCDEF01234567"
)


def test_a_good_signature_counts() -> None:
    assert counted_signer(_GOOD.encode(), 0) == _PRIMARY
    assert counted_signer(_BY_SUBKEY.encode(), 0) == _PRIMARY  # the primary, not the subkey
    # Printed for any expired or revoked subkey of the key, even one that did not sign.
    other_subkeys = "[GNUPG:] KEYEXPIRED 1700000000\n[GNUPG:] KEYREVOKED\n"
    assert counted_signer((other_subkeys + _GOOD).encode(), 0) == _PRIMARY


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        ("", 2, "0 signatures"),
        (_GOOD + _GOOD, 0, "2 signatures"),
        (_GOOD, 1, "gpg exit status 1"),
        (_GOOD.replace("GOODSIG", "EXPKEYSIG"), 0, "EXPKEYSIG"),
        (_GOOD.replace("GOODSIG", "REVKEYSIG"), 0, "REVKEYSIG"),
        (_GOOD.replace("GOODSIG", "EXPSIG"), 0, "EXPSIG"),
        (_GOOD.replace("TRUST_UNDEFINED", "TRUST_NEVER"), 0, "TRUST_NEVER"),
        (_GOOD + "[GNUPG:] FAILURE gpg-exit 33554433\n", 0, "FAILURE"),
        (_GOOD + "[GNUPG:] SOMETHING_NEW 1\n", 0, "SOMETHING_NEW"),  # unknown: refused
        ("[GNUPG:] NEWSIG\n[GNUPG:] ERRSIG ECE60B11D2DDF09C 22 8 00 1 9\n", 2, "ERRSIG"),
        ("[GNUPG:] NEWSIG\n[GNUPG:] BADSIG ECE60B11D2DDF09C vault\n", 1, "BADSIG"),
        (_GOOD.replace(f"[GNUPG:] VALIDSIG {_PRIMARY}", "[GNUPG:] SIG_ID"), 0, "not reported"),
        (_GOOD.replace("GOODSIG ECE60B11D2DDF09C", "GOODSIG 1111111111111111"), 0, "malformed"),
        (_GOOD.replace(f" 00 {_PRIMARY}", " 00"), 0, "malformed"),  # no primary fingerprint
        (_GOOD.replace(f" 00 {_PRIMARY}", " 00 277e0a5e"), 0, "malformed"),
        ("gpg: Signature made ...\n" + _GOOD, 0, "malformed"),  # not a status line
        (_GOOD + "[GNUPG:] NOTATION_NAME x\n" * 5000, 0, "too much"),
    ],
)
def test_anything_else_does_not_count(status: str, code: int, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        counted_signer(status.encode(), code)


# -- gpg is the system's, in a clean environment, and leaves a kept home as it was --------

_GARBAGE_SIGNATURE = (
    b"-----BEGIN PGP SIGNATURE-----\n\niQEzBAABCAAdFiEE\n-----END PGP SIGNATURE-----\n"
)


def _fake_gpg(tmp_path: Path) -> tuple[Path, Path]:
    """A ``gpg`` that logs its arguments and environment, then runs the real one.

    Like the gpg versions the issue saw, it rewrites ``random_seed`` in the home it
    uses unless it is given ``--no-random-seed-file`` (gpg 2.2.40 with libgcrypt 1.10
    does so only when it used its random pool, which a verification need not).
    """
    real = shutil.which("gpg", path=sysprog.SYSTEM_PATH)
    assert real is not None
    log = tmp_path / "gpg-calls.log"
    bin_dir = tmp_path / "user-bin"
    bin_dir.mkdir()
    fake = bin_dir / "gpg"
    fake.write_text(
        "#!/bin/sh\n"
        f"log='{log}'\n"
        'printf "ARGS %s\\n" "$*" >> "$log"\n'
        '/usr/bin/env | /usr/bin/sort | /usr/bin/sed "s/^/ENV /" >> "$log"\n'
        "home=; seed=1; prev=\n"
        'for a in "$@"; do\n'
        '  [ "$prev" = --homedir ] && home=$a\n'
        '  [ "$a" = --no-random-seed-file ] && seed=0\n'
        "  prev=$a\n"
        "done\n"
        'if [ $seed = 1 ] && [ -n "$home" ]; then\n'
        '  /usr/bin/head -c 600 /dev/urandom > "$home/random_seed"\n'
        "fi\n"
        f'exec {real} "$@"\n'
    )
    fake.chmod(0o755)
    return fake, log


def _user_path_with(monkeypatch: pytest.MonkeyPatch, fake: Path) -> None:
    """The user's environment at a Receive: ``~/bin`` first on PATH, their own
    GNUPGHOME and agent."""
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    monkeypatch.setenv("GNUPGHOME", str(fake.parent / "users-gnupg"))
    monkeypatch.setenv("GPG_AGENT_INFO", "/tmp/S.gpg-agent:0:1")
    sysprog.find.cache_clear()


@pytest.mark.parametrize("bad", ["other-key", "garbage"])
def test_a_rejected_signature_leaves_the_kept_home_byte_identical(
    keys: tuple[Path, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    """Issue 14 §5: random_seed included (gpg given --no-random-seed-file)."""
    home, a, b = keys
    cache, pins = _cache(tmp_path), {a: _export(home, a)}
    good = _sign(home, a, b"payload")
    signature = _sign(home, b, b"payload") if bad == "other-key" else _GARBAGE_SIGNATURE
    with Verifier(pins, cache) as v:
        assert v.verify(b"payload", good) == a
    kept = cache.root / pin_digest(pins)
    assert kept.is_dir()
    # From here on gpg is one that rewrites random_seed unless told not to.
    fake, _log = _fake_gpg(tmp_path)
    _user_path_with(monkeypatch, fake)
    monkeypatch.setattr(sysprog, "find", lambda name: str(fake) if name == "gpg" else None)
    for _ in range(2):
        before = snapshot(cache.root)
        with pytest.raises(SignatureError), Verifier(pins, cache) as v:
            v.verify(b"payload", signature)
        assert snapshot(cache.root) == before
        assert not (kept / "random_seed").exists()
    assert os.listdir(cache.tmp) == []
    with Verifier(pins, cache) as v:  # and the kept home is still the one used
        assert v.verify(b"payload", good) == a
    assert snapshot(cache.root) == before


def test_gpg_is_the_system_one_never_found_on_the_users_path(
    keys: tuple[Path, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14 §1: a ``gpg`` in ``~/bin`` (first on the PATH ~/.profile sets) is never run."""
    home, a, b = keys
    cache, pins = _cache(tmp_path), {a: _export(home, a)}
    good, other = _sign(home, a, b"payload"), _sign(home, b, b"payload")
    fake, log = _fake_gpg(tmp_path)
    _user_path_with(monkeypatch, fake)
    with Verifier(pins, cache) as v:
        assert v.verify(b"payload", good) == a
    with pytest.raises(SignatureError), Verifier(pins, cache) as v:
        v.verify(b"payload", other)
    assert inspect_key_file(pins[a])[0].fingerprint == a
    assert not log.exists()


def test_gpg_runs_in_an_environment_built_from_nothing(
    keys: tuple[Path, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, a, _b = keys
    pins, good = {a: _export(home, a)}, _sign(home, a, b"payload")
    fake, log = _fake_gpg(tmp_path)
    _user_path_with(monkeypatch, fake)
    monkeypatch.setenv("LD_PRELOAD", "/nonexistent/evil.so")
    monkeypatch.setattr(sysprog, "find", lambda name: str(fake) if name == "gpg" else None)
    with Verifier(pins) as v:
        assert v.verify(b"payload", good) == a
    text = log.read_text()
    assert "--verify" in text and "--no-random-seed-file" in text
    env_lines = {line for line in text.splitlines() if line.startswith("ENV ")}
    names = {line[4:].split("=", 1)[0] for line in env_lines}
    assert not names & {"GNUPGHOME", "GPG_AGENT_INFO", "LD_PRELOAD"}
    assert f"ENV PATH={sysprog.SYSTEM_PATH}" in env_lines


_GPG_BATCH = ("gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "")


def _gpg(home: Path, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*_GPG_BATCH, "--homedir", str(home), *args],
        input=data,
        capture_output=True,
        check=False,
    )


def _split_gpg2_home(vault: Path, fpr: str, dest: Path) -> Path:
    """What split-gpg2 serves from: a new GnuPG home holding only the *secret subkeys*
    (splitgpg2/__init__.py ``setup_subkey_keyring``: ``--export-secret-subkeys``)."""
    dest.mkdir(mode=0o700)
    subkeys = _gpg(vault, "--export-secret-subkeys", fpr).stdout
    assert subkeys
    assert _gpg(dest, "--import", data=subkeys).returncode == 0
    return dest


def test_split_gpg2_key_as_setup_md_makes_it_signs_and_the_primary_is_pinned(
    tmp_path: Path,
) -> None:
    """Issue 19.2: docs/setup.md's split-GPG v2 key (primary + signing subkey, made with
    real gpg exactly as the doc says) signs through a subkeys-only home, and the
    agent's verifier accepts it with the *primary* fingerprint pinned (VALIDSIG)."""
    vault = tmp_path / "vault"
    vault.mkdir(mode=0o700)
    uid = "qgitconf <qgitconf@vault>"
    assert _gpg(vault, "--quick-gen-key", uid, "ed25519", "sign", "2y").returncode == 0
    listed = _gpg(vault, "--with-colons", "--list-keys", "qgitconf").stdout.decode()
    fpr = next(ln.split(":")[9] for ln in listed.splitlines() if ln.startswith("fpr:"))
    # the old setup (primary only): split-gpg2's home has no usable secret key
    old = _split_gpg2_home(vault, fpr, tmp_path / "old")
    assert _gpg(old, "--armor", "--detach-sign", "-u", fpr, data=b"x").returncode != 0
    # the setup as docs/setup.md now says it
    assert _gpg(vault, "--quick-add-key", fpr, "ed25519", "sign", "2y").returncode == 0
    served = _split_gpg2_home(vault, fpr, tmp_path / "served")
    payload = b"qgitconf statement\n"
    sig = _gpg(served, "--armor", "--detach-sign", "-u", fpr, data=payload)
    assert sig.returncode == 0, sig.stderr.decode()
    with Verifier({fpr: _export(vault, fpr)}) as v:
        assert v.verify(payload, sig.stdout) == fpr
    for home in (vault, old, served):
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
