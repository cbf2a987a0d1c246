"""OpenPGP signing and verification (DESIGN rule 2 and rule 6).

Verification happens in a private GnuPG home that holds only the pinned public keys,
so nothing in the user's keyring and nothing an update carries can make a signature
count.  The home is made afresh for each ``Verifier``, or - when the caller names a
``HomeCache`` (the agent state, which no update may write, rule 7) - kept
there per set of pinned keys, so that a receive does not import the keys again; a
kept home is used only while it still holds exactly what was checked when it was
built (see ``HomeCache``).  ``gpg --verify`` runs there with ``--status-fd``, and
``counted_signer`` judges its status lines: a signature counts only when gpg exits 0,
there is exactly one signature, it is reported good and valid, nothing else is
reported but a fixed list of informational lines, and the ``VALIDSIG`` primary-key
fingerprint is one of the pins.  User-id text and short key ids are never looked at.
python-gnupg imports the pinned keys into a home and reads key files.

gpg runs by its absolute system path (``sysprog.program``, never found on the user's
``PATH``: an update could have placed ``~/bin/gpg``), in an environment built from
nothing (``sysprog.base_env``: no ``GNUPGHOME``, no ``GPG_AGENT_INFO``, no user
variables), with ``--no-options`` (no ``gpg.conf``) and ``--no-random-seed-file``: gpg
would otherwise rewrite ``random_seed`` in the home it uses, and a rejected update must
leave a kept home byte-identical (rule 8).  The same holds for python-gnupg's imports.

Signing goes through the configured ``gpg.program`` (``qubes-gpg-client-wrapper`` in
Qubes, which forwards to the vault) with only the options split-GPG allows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from qgitconf import sysprog
from qgitconf.errors import ConfigError, GitError, SignatureError, UntrustedInputError
from qgitconf.limits import MAX_GPG_STATUS_BYTES

_GPG_OPTIONS = [
    "--no-options",
    "--no-auto-key-retrieve",
    "--no-autostart",
    "--no-greeting",
    "--no-random-seed-file",
]

# What ``gpg --verify --status-fd`` may report for a signature that counts (GnuPG's
# doc/DETAILS): exactly one each of these ...
_COUNTED = ("NEWSIG", "GOODSIG", "VALIDSIG")
# ... and any number of these, which only inform.  Any other keyword (BADSIG, ERRSIG,
# EXPSIG, EXPKEYSIG, REVKEYSIG, NO_PUBKEY, TRUST_NEVER, FAILURE, ERROR, PLAINTEXT, one
# gpg adds in a later version, ...) means it does not.  KEYEXPIRED and KEYREVOKED only
# inform: gpg prints them for any expired or revoked subkey of the key, used or not
# (DETAILS: "not very useful"); an expired or revoked key that made the signature
# turns GOODSIG into EXPKEYSIG or REVKEYSIG.
_INFORMATIONAL = frozenset(
    {
        "KEY_CONSIDERED",
        "KEYEXPIRED",
        "KEYREVOKED",
        "SIG_ID",
        "TRUST_UNDEFINED",
        "TRUST_MARGINAL",
        "TRUST_FULLY",
        "TRUST_ULTIMATE",
        "VERIFICATION_COMPLIANCE_MODE",
        "NOTATION_NAME",
        "NOTATION_FLAGS",
        "NOTATION_DATA",
        "POLICY_URL",
    }
)
_STATUS_PREFIX = b"[GNUPG:] "
_FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")  # v4 or v5 key
_KEY_ID = re.compile(r"[0-9A-F]{16}|[0-9A-F]{40}|[0-9A-F]{64}")  # long id or fingerprint


@contextlib.contextmanager
def _gpg(home: str) -> Iterator[Any]:
    """python-gnupg on the system's gpg in the private ``home``, with an environment
    built from nothing (DESIGN rule 12).

    python-gnupg >= 0.5 takes that environment as ``env``; 0.4.x (Debian 12's 0.4.9)
    has no such argument and starts gpg with this process's environment, so for the
    block the process's environment is replaced by the same one and then restored.
    """
    import inspect

    import gnupg  # imported lazily: python-gnupg is only needed when gpg runs

    env = sysprog.base_env(home)
    options = {"gpgbinary": sysprog.program("gpg"), "gnupghome": home}
    if "env" in inspect.signature(gnupg.GPG.__init__).parameters:
        yield gnupg.GPG(options=list(_GPG_OPTIONS), env=env, **options)
        return
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield gnupg.GPG(options=list(_GPG_OPTIONS), **options)
    finally:
        os.environ.clear()
        os.environ.update(saved)


class KeyInfo(NamedTuple):
    """One public key as found in a key file."""

    fingerprint: str
    uids: tuple[str, ...]
    expires: int | None
    armored: bytes


def inspect_key_file(data: bytes) -> list[KeyInfo]:
    """List the primary keys an armored or binary key file holds, in a throwaway home."""
    import shutil
    import tempfile

    home = tempfile.mkdtemp(prefix="qgitconf-gpg-")
    try:
        keys: list[KeyInfo] = []
        with _gpg(home) as gpg:
            result = gpg.import_keys(data)
            for key in gpg.list_keys():
                fpr = str(key["fingerprint"])
                armored = gpg.export_keys(fpr, armor=True).encode("ascii")
                expires = int(key["expires"]) if key.get("expires") else None
                uids = tuple(str(u) for u in key.get("uids", []))
                keys.append(KeyInfo(fpr, uids, expires, armored))
        if not keys and result.count == 0:
            return []
        return keys
    finally:
        shutil.rmtree(home, ignore_errors=True)


class HomeCache(NamedTuple):
    """Where verification homes are kept, one per set of pinned keys.

    ``root/<digest>`` is named by the SHA-256 of the pinned fingerprints and key
    bytes (``pin_digest``), so a changed pin or key file never reuses an old home.  A
    home is built in ``tmp`` (same filesystem), filled with the pinned keys only,
    checked to hold exactly the pinned fingerprints, and renamed into place only after
    a verification with it succeeded (a rejected update leaves the state as it was,
    rule 8).  A marker file in it records every file and its SHA-256; a kept home is used
    only if it is a private directory of this user holding exactly those files with
    those hashes (plus gpg's lock files) - an extra key, a ``gpg.conf`` or any other
    change makes it ignored, and replaced after the next successful verification.

    Args:
        root: the directory holding the kept homes (in the agent state).
        tmp: a scratch directory on the same filesystem.
    """

    root: Path
    tmp: Path


_MARKER = "qgitconf-verify-home"
# O_NONBLOCK: a fifo planted in a kept home must not hang the receive.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def pin_digest(pinned: Mapping[str, bytes]) -> str:
    """SHA-256 (hex) of a set of pinned keys: fingerprints and key file bytes."""
    h = hashlib.sha256(b"qgitconf-pins-1\0")
    for fpr in sorted(pinned):
        data = pinned[fpr]
        h.update(fpr.upper().encode("ascii") + b"\0" + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def _is_lock(name: str) -> bool:
    """gpg's dotlock files, present while another gpg uses the home."""
    return name.endswith(".lock") or name.startswith(".#lk")


def _home_files(home: Path) -> dict[str, str] | None:
    """Every regular file of ``home`` (lock files aside) -> its SHA-256; None if the
    home holds anything else (a directory, a symlink, a socket)."""
    files: dict[str, str] = {}
    try:
        fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for name in os.listdir(fd):
            if name == _MARKER or _is_lock(name):
                continue
            try:
                f = os.open(name, _READ_FLAGS, dir_fd=fd)
            except OSError:
                return None
            try:
                if not stat.S_ISREG(os.fstat(f).st_mode):
                    return None
                h = hashlib.sha256()
                while chunk := os.read(f, 1 << 16):
                    h.update(chunk)
            finally:
                os.close(f)
            files[name] = h.hexdigest()
    finally:
        os.close(fd)
    return files


def _marker_text(digest: str, fprs: list[str], files: Mapping[str, str]) -> str:
    lines = [f"pins {digest}", *(f"key {f}" for f in sorted(fprs))]
    lines += [f"file {h} {name}" for name, h in sorted(files.items())]
    return "\n".join(lines) + "\n"


def _kept_home_ok(home: Path, digest: str, fprs: list[str]) -> bool:
    """True if ``home`` is a private directory of this user that holds exactly the
    files its marker lists, unchanged, and the marker names exactly these pins."""
    try:
        st = os.lstat(home)
        if (
            not stat.S_ISDIR(st.st_mode)
            or st.st_uid != os.geteuid()
            or stat.S_IMODE(st.st_mode) & 0o077
        ):
            return False
        fd = os.open(home / _MARKER, _READ_FLAGS)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            marker = os.read(fd, 1 << 16).decode("utf-8")
        finally:
            os.close(fd)
    except (OSError, UnicodeDecodeError):
        return False
    files = _home_files(home)
    return files is not None and marker == _marker_text(digest, fprs, files)


def counted_signer(status: bytes, returncode: int) -> str:
    """Judge what one ``gpg --verify --status-fd`` run reported.

    Pure: it only reads its arguments.

    Args:
        status: everything gpg wrote to its status fd.
        returncode: gpg's exit status.

    Returns:
        The primary-key fingerprint (upper-case hex) of the one good, valid signature.

    Raises:
        ValueError: the signature does not count; the message says why.
    """
    if len(status) > MAX_GPG_STATUS_BYTES:
        raise ValueError("gpg reported too much")
    seen: dict[str, list[list[str]]] = {}
    for line in status.split(b"\n"):
        if not line:
            continue
        if not line.startswith(_STATUS_PREFIX):
            raise ValueError("gpg status output is malformed")
        keyword, *args = line[len(_STATUS_PREFIX) :].decode("utf-8", "replace").split(" ")
        seen.setdefault(keyword, []).append(args)
    signatures = len(seen.get("NEWSIG", ()))
    if signatures != 1:
        raise ValueError(f"{signatures} signatures, exactly one is required")
    others = sorted(k for k in seen if k not in _COUNTED and k not in _INFORMATIONAL)
    if others:
        raise ValueError(f"signature does not count ({', '.join(others)})")
    if returncode != 0:
        raise ValueError(f"signature does not count (gpg exit status {returncode})")
    good, valid = seen.get("GOODSIG", []), seen.get("VALIDSIG", [])
    if len(good) != 1 or len(valid) != 1:
        raise ValueError("signature does not count (not reported good and valid)")
    if len(valid[0]) < 10 or not good[0]:
        raise ValueError("gpg status output is malformed")
    signing_key, primary, key_id = valid[0][0], valid[0][9], good[0][0]
    if not (
        _FINGERPRINT.fullmatch(signing_key)
        and _FINGERPRINT.fullmatch(primary)
        and _KEY_ID.fullmatch(key_id)
        and signing_key.endswith(key_id)
    ):
        raise ValueError("gpg status output is malformed")
    return primary


class Verifier:
    """A private GnuPG home holding exactly the pinned keys; use as a context manager.

    Args:
        pinned: primary-key fingerprint -> the public key file bytes for it.
        cache: where to keep the home between runs (see ``HomeCache``); None: a
            fresh home, removed at the end.
    """

    def __init__(self, pinned: Mapping[str, bytes], cache: HomeCache | None = None) -> None:
        if not pinned:
            raise ConfigError("no pinned key is configured")
        self._pinned = {fpr.upper(): data for fpr, data in pinned.items()}
        self._cache = cache
        self._home: str | None = None
        self._kept = False  # the home is a kept one: never removed here
        self._files: dict[str, str] | None = None  # a fresh home's files, as checked

    def __enter__(self) -> Verifier:
        cache = self._cache
        digest = pin_digest(self._pinned)
        if cache is not None and _kept_home_ok(cache.root / digest, digest, list(self._pinned)):
            self._home = str(cache.root / digest)
            self._kept = True  # the keys are in: verify() needs no python-gnupg
            return self
        self._home = _fresh_home(cache)
        try:
            imported: set[str] = set()
            with _gpg(self._home) as gpg:
                for data in self._pinned.values():
                    result = gpg.import_keys(data)
                    imported.update(str(f).upper() for f in result.fingerprints)
            # A key file that smuggles in extra keys must not widen the trust set (rule 2).
            if imported != set(self._pinned):
                raise ConfigError(
                    "pinned key files do not hold exactly the pinned keys "
                    f"(found {sorted(imported)}, pinned {sorted(self._pinned)})"
                )
            if cache is not None:
                self._files = _home_files(Path(self._home))
        except BaseException:
            self._close(promote=False)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close(promote=exc_type is None)

    def _close(self, *, promote: bool) -> None:
        home, self._home = self._home, None
        if home is None or self._kept:
            return
        if promote and self._cache is not None and self._files is not None:
            with contextlib.suppress(OSError):
                if _keep_home(Path(home), self._cache, self._pinned, self._files):
                    return
        import shutil

        shutil.rmtree(home, ignore_errors=True)

    def verify(
        self,
        payload: bytes,
        signature: bytes,
        error: type[UntrustedInputError] = SignatureError,
    ) -> str:
        """Check that ``signature`` is one valid signature by a pinned key over ``payload``.

        Returns:
            The signer's primary-key fingerprint.

        Raises:
            UntrustedInputError: of class ``error``, for any signature that does not count.
        """
        with self.start(payload, signature, error) as pending:
            return pending.result()

    def start(
        self,
        payload: bytes,
        signature: bytes,
        error: type[UntrustedInputError] = SignatureError,
    ) -> PendingSignature:
        """``verify``, with gpg left running: the caller may go on with other work and
        asks ``result()`` of the returned ``PendingSignature`` (a context manager)."""
        if self._home is None:
            raise RuntimeError("Verifier used outside its context")
        if b"-----BEGIN PGP SIGNATURE-----" not in signature:
            raise error("signature is not an ASCII-armored OpenPGP signature")
        # Not inside a kept home: other receives may use it at the same time.
        spool = self._cache.tmp if self._kept and self._cache is not None else self._home
        files: list[str] = []
        try:
            for data, suffix in ((signature, ".asc"), (payload, ".data")):
                fd, path = _spool_file(spool, suffix)
                files.append(path)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            gpg = sysprog.program("gpg")
            cmd = [gpg, "--batch", "--no-tty", "--homedir", self._home, *_GPG_OPTIONS]
            cmd += ["--status-fd", "1", "--verify", *files]
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    env=sysprog.base_env(self._home),
                )
            except OSError as e:
                raise ConfigError(f"cannot run gpg: {e}") from e
        except BaseException:
            _unlink_all(files)
            raise
        return PendingSignature(proc, files, frozenset(self._pinned), error)


class PendingSignature:
    """One ``gpg --verify`` started by ``Verifier.start``; use as a context manager
    (leaving it stops gpg if it still runs and removes the spooled files)."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        files: list[str],
        pinned: frozenset[str],
        error: type[UntrustedInputError],
    ) -> None:
        self._proc = proc
        self._files = files
        self._pinned = pinned
        self._error = error
        self._signer: str | None = None
        self._refusal: str | None = None

    def result(self) -> str:
        """Wait for gpg and judge what it reported (``counted_signer``).

        Returns:
            The signer's primary-key fingerprint.

        Raises:
            UntrustedInputError: of the class given to ``start``, for any signature
                that does not count.
        """
        if self._signer is None and self._refusal is None:
            status, _ = self._proc.communicate()
            _unlink_all(self._files)
            self._files = []
            try:
                fpr = counted_signer(status, self._proc.returncode)
            except ValueError as e:
                self._refusal = str(e)
            else:
                if fpr in self._pinned:
                    self._signer = fpr
                else:
                    self._refusal = "signature is not by a pinned key"
        if self._refusal is not None:
            raise self._error(self._refusal)
        return str(self._signer)

    def __enter__(self) -> PendingSignature:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()
        _unlink_all(self._files)
        self._files = []


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _spool_file(directory: str | Path, suffix: str) -> tuple[int, str]:
    """A new file of this user only (``O_EXCL``, mode 0600) in ``directory``, as
    ``tempfile.mkstemp`` makes one, named from ``os.urandom``: the Receive service and
    publish do not import ``tempfile`` and ``random`` (the "publish -> staged" row)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
    for _ in range(100):
        path = os.path.join(directory, f"signature-{os.urandom(8).hex()}{suffix}")
        try:
            return os.open(path, flags, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name for a file in {directory}")


def _fresh_home(cache: HomeCache | None) -> str:
    """A new private directory: in ``cache.tmp`` (so it can be kept), else in $TMPDIR."""
    import tempfile

    if cache is not None:
        with contextlib.suppress(OSError):
            return tempfile.mkdtemp(prefix="gnupg-", dir=cache.tmp)
    return tempfile.mkdtemp(prefix="qgitconf-verify-")


def _keep_home(
    home: Path, cache: HomeCache, pinned: Mapping[str, bytes], files: Mapping[str, str]
) -> bool:
    """Rename the checked fresh ``home`` into ``cache``; True if it was kept.

    Only a home whose files are still those checked after the import is kept; homes
    for other pin sets are removed (the pins changed).
    """
    if home.parent != cache.tmp or _home_files(home) != files:
        return False
    digest = pin_digest(pinned)
    (home / _MARKER).write_text(_marker_text(digest, list(pinned), files))
    cache.root.mkdir(mode=0o700, exist_ok=True)
    final = cache.root / digest
    for old in os.listdir(cache.root):
        if old != digest:
            _discard(cache.root / old, cache)
    try:
        os.rename(home, final)
        return True
    except OSError:
        pass
    if _kept_home_ok(final, digest, list(pinned)):
        return False  # another receive kept an equal home first: ours goes
    _discard(final, cache)
    os.rename(home, final)
    return True


def _discard(path: Path, cache: HomeCache) -> None:
    """Remove a kept home: renamed aside first, so no one picks up a half-removed one."""
    import shutil
    import tempfile

    aside = tempfile.mkdtemp(prefix="old-", dir=cache.tmp)
    with contextlib.suppress(OSError):
        os.rename(path, Path(aside) / "home")
    shutil.rmtree(aside, ignore_errors=True)


def sign_detached(gpg_program: str, key: str, payload: bytes, env: Mapping[str, str]) -> bytes:
    """Make an ASCII-armored detached signature through ``gpg_program`` (split-GPG).

    Only ``--detach-sign --armor --local-user`` are passed, which
    ``qubes-gpg-client-wrapper`` allows.

    Raises:
        GitError: the program failed or printed no signature.
    """
    cmd = [gpg_program, "--detach-sign", "--armor", "--local-user", key]
    try:
        proc = subprocess.run(cmd, input=payload, capture_output=True, env=dict(env), check=False)
    except OSError as e:
        raise GitError(f"cannot run {gpg_program}: {e}") from e
    if proc.returncode != 0 or b"-----BEGIN PGP SIGNATURE-----" not in proc.stdout:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise GitError(f"signing with {gpg_program} failed: {tail[0]}")
    return proc.stdout
