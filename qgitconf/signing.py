"""OpenPGP signing and verification (DESIGN rule 2 and rule 6).

Verification happens in a freshly made, private GnuPG home that holds only the
pinned public keys, so nothing in the user's keyring and nothing an update carries
can make a signature count.  A signature counts only when python-gnupg reports it
valid, gpg exits 0, no problem is reported, there is exactly one signature, and the
``VALIDSIG`` primary-key fingerprint is one of the pins.  User-id text and short key
ids are never looked at.

Signing goes through the configured ``gpg.program`` (``qubes-gpg-client-wrapper`` in
Qubes, which forwards to the vault) with only the options split-GPG allows.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from qgitconf.errors import ConfigError, GitError, SignatureError, UntrustedInputError

_GPG_OPTIONS = ["--no-auto-key-retrieve", "--no-autostart", "--no-greeting"]


def _gpg(home: str):  # type: ignore[no-untyped-def]
    import gnupg  # imported lazily: python-gnupg is only needed when gpg runs

    return gnupg.GPG(gnupghome=home, options=list(_GPG_OPTIONS))


@dataclass(frozen=True)
class KeyInfo:
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


class Verifier:
    """A private GnuPG home holding exactly the pinned keys; use as a context manager.

    Args:
        pinned: primary-key fingerprint -> the public key file bytes for it.
    """

    def __init__(self, pinned: Mapping[str, bytes]) -> None:
        if not pinned:
            raise ConfigError("no pinned key is configured")
        self._pinned = {fpr.upper(): data for fpr, data in pinned.items()}
        self._home: str | None = None
        self._gpg: Any = None

    def __enter__(self) -> Verifier:
        self._home = tempfile.mkdtemp(prefix="qgitconf-verify-")
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
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

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
        sig_path = Path(self._home) / "signature.asc"
        sig_path.write_bytes(signature)
        try:
            v = self._gpg.verify_data(str(sig_path), payload)
        finally:
            sig_path.unlink(missing_ok=True)
        fpr = str(v.pubkey_fingerprint or "").upper()
        if v.returncode != 0 or not v.valid or v.problems or len(v.sig_info) != 1:
            raise error(_describe_failure(v))
        if v.status != "signature valid":
            raise error(f"signature not valid ({v.status})")
        if fpr not in self._pinned:
            raise error("signature is not by a pinned key")
        return fpr


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
