"""Reading a public key file through python-gnupg in a throw-away home: its primary
fingerprints, user ids, expiry and revocation."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

from qgitconf import sysprog
from qgitconf.gpg.homes import GPG_OPTIONS


@contextlib.contextmanager
def python_gnupg(home: str) -> Iterator[Any]:
    """python-gnupg on the system's gpg in the private ``home``, with an environment
    built from nothing (DESIGN rule 12).

    python-gnupg >= 0.5 takes that environment as ``env``; 0.4.x (Debian 12's 0.4.9)
    has no such argument and starts gpg with this process's environment, so for the
    block the process's environment is replaced by the same one and then restored.
    """
    # Lazy: python-gnupg (about 15 ms) and inspect only when gpg runs; the no-op receive
    # and publish rows of ``make bench`` import this module and run none.
    import inspect

    import gnupg

    env = sysprog.base_env(home)
    options = {"gpgbinary": sysprog.program("gpg"), "gnupghome": home}
    if "env" in inspect.signature(gnupg.GPG.__init__).parameters:
        yield gnupg.GPG(options=list(GPG_OPTIONS), env=env, **options)
        return
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield gnupg.GPG(options=list(GPG_OPTIONS), **options)
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
    # Lazy: the no-op receive and publish rows of ``make bench`` import this module and
    # load neither tempfile nor shutil (together about 6 ms).
    import shutil
    import tempfile

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
