"""Reading a public key file through python-gnupg in a throw-away home: its primary
fingerprints, user ids, expiry and revocation."""

from __future__ import annotations

import shutil
import tempfile
from typing import NamedTuple

from qgitconf.gpg.homes import python_gnupg


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
        keys: list[KeyInfo] = []
        with python_gnupg(home) as gpg:
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
