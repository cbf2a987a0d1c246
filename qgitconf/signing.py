"""OpenPGP signing and verification (DESIGN rule 2 and rule 6).

Verification happens in a private GnuPG home that holds only the pinned public keys,
so nothing in the user's keyring and nothing an update carries can make a signature
count.  The home is made afresh for each ``Verifier``, or - when the caller names a
``HomeCache`` (the agent state, which no update may write, rule 7) - kept
there per set of pinned keys, so that a receive does not import the keys again; a
kept home is used only while it still holds exactly what was checked when it was
built (see ``HomeCache``).  A signature counts only when python-gnupg reports it
valid, gpg exits 0, no problem is reported, there is exactly one signature, and the
``VALIDSIG`` primary-key fingerprint is one of the pins.  User-id text and short key
ids are never looked at.

Signing goes through the configured ``gpg.program`` (``qubes-gpg-client-wrapper`` in
Qubes, which forwards to the vault) with only the options split-GPG allows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from qgitconf.errors import ConfigError, GitError, SignatureError, UntrustedInputError

_GPG_OPTIONS = ["--no-auto-key-retrieve", "--no-autostart", "--no-greeting"]


def _gpg(home: str):  # type: ignore[no-untyped-def]
    import gnupg  # imported lazily: python-gnupg is only needed when gpg runs

    return gnupg.GPG(gnupghome=home, options=list(_GPG_OPTIONS))


class KeyInfo(NamedTuple):
    """One public key as found in a key file."""

    fingerprint: str
    uids: tuple[str, ...]
    expires: int | None
    armored: bytes


def inspect_key_file(data: bytes) -> list[KeyInfo]:
    """List the primary keys an armored or binary key file holds, in a throwaway home."""
    home = tempfile.mkdtemp(prefix="qgitconf-gpg-")
    try:
        gpg = _gpg(home)
        result = gpg.import_keys(data)
        keys: list[KeyInfo] = []
        for key in gpg.list_keys():
            fpr = str(key["fingerprint"])
            armored = gpg.export_keys(fpr, armor=True).encode("ascii")
            expires = int(key["expires"]) if key.get("expires") else None
            keys.append(KeyInfo(fpr, tuple(str(u) for u in key.get("uids", [])), expires, armored))
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
        self._gpg: Any = None

    def __enter__(self) -> Verifier:
        cache = self._cache
        digest = pin_digest(self._pinned)
        if cache is not None and _kept_home_ok(cache.root / digest, digest, list(self._pinned)):
            self._home = str(cache.root / digest)
            self._kept = True
            self._gpg = _gpg(self._home)
            return self
        self._home = _fresh_home(cache)
        try:
            self._gpg = _gpg(self._home)
            imported: set[str] = set()
            for data in self._pinned.values():
                result = self._gpg.import_keys(data)
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
        self._gpg = None
        if home is None or self._kept:
            return
        if promote and self._cache is not None and self._files is not None:
            with contextlib.suppress(OSError):
                if _keep_home(Path(home), self._cache, self._pinned, self._files):
                    return
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
        if self._gpg is None or self._home is None:
            raise RuntimeError("Verifier used outside its context")
        if b"-----BEGIN PGP SIGNATURE-----" not in signature:
            raise error("signature is not an ASCII-armored OpenPGP signature")
        # Not inside a kept home: other receives may use it at the same time.
        spool = self._cache.tmp if self._kept and self._cache is not None else self._home
        fd, sig_path = tempfile.mkstemp(prefix="signature-", suffix=".asc", dir=spool)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(signature)
            v = self._gpg.verify_data(sig_path, payload)
        finally:
            Path(sig_path).unlink(missing_ok=True)
        fpr = str(v.pubkey_fingerprint or "").upper()
        if v.returncode != 0 or not v.valid or v.problems or len(v.sig_info) != 1:
            raise error(_describe_failure(v))
        if v.status != "signature valid":
            raise error(f"signature not valid ({v.status})")
        if fpr not in self._pinned:
            raise error("signature is not by a pinned key")
        return fpr


def _fresh_home(cache: HomeCache | None) -> str:
    """A new private directory: in ``cache.tmp`` (so it can be kept), else in $TMPDIR."""
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
    aside = tempfile.mkdtemp(prefix="old-", dir=cache.tmp)
    with contextlib.suppress(OSError):
        os.rename(path, Path(aside) / "home")
    shutil.rmtree(aside, ignore_errors=True)


def _describe_failure(v: object) -> str:
    problems = getattr(v, "problems", []) or []
    sig_info = getattr(v, "sig_info", {}) or {}
    if len(sig_info) > 1:
        return f"{len(sig_info)} signatures, exactly one is required"
    if problems:
        status = problems[-1].get("status", "problem")
        return f"signature does not count ({status})"
    status = getattr(v, "status", None) or "no valid signature"
    return f"signature does not count ({status})"


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
