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
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from qgitconf import sysprog
from qgitconf.errors import ConfigError, GitError, SignatureError, UntrustedInputError
from qgitconf.fsutil import remove_tree
from qgitconf.gpg.homes import (
    GPG_OPTIONS,
    HomeCache,
    fresh_home,
    home_files,
    keep_home,
    kept_home_ok,
    pin_digest,
    python_gnupg,
)
from qgitconf.gpg.judge import counted_signer

# What ``gpg --verify --status-fd`` may report for a signature that counts (GnuPG's
# doc/DETAILS): exactly one each of these ...
# ... and any number of these, which only inform.  Any other keyword (BADSIG, ERRSIG,
# EXPSIG, EXPKEYSIG, REVKEYSIG, NO_PUBKEY, TRUST_NEVER, FAILURE, ERROR, PLAINTEXT, one
# gpg adds in a later version, ...) means it does not.  KEYEXPIRED and KEYREVOKED only
# inform: gpg prints them for any expired or revoked subkey of the key, used or not
# (DETAILS: "not very useful"); an expired or revoked key that made the signature
# turns GOODSIG into EXPKEYSIG or REVKEYSIG.


# O_NONBLOCK: a fifo planted in a kept home must not hang the receive.


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
        if cache is not None and kept_home_ok(cache.root / digest, digest, list(self._pinned)):
            self._home = str(cache.root / digest)
            self._kept = True  # the keys are in: verify() needs no python-gnupg
            return self
        self._home = fresh_home(cache)
        try:
            imported: set[str] = set()
            with python_gnupg(self._home) as gpg:
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
                self._files = home_files(Path(self._home))
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
                if keep_home(Path(home), self._cache, self._pinned, self._files):
                    return
        remove_tree(Path(home), ignore_errors=True)

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
            cmd = [gpg, "--batch", "--no-tty", "--homedir", self._home, *GPG_OPTIONS]
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
