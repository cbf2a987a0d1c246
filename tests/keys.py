"""OpenPGP keys for unit tests, made by the host's gpg in temporary GnuPG homes.

The lab's own keys are made inside its qubes (tests/labkit.py: ``make_key_in``); these
serve tests that need a key file or a signature without any qube.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def gpg_in(home: Path, *args: str, input: bytes | None = None) -> bytes:
    """Run gpg in the GnuPG home ``home`` (batch, no tty); stdout, or raise on failure."""
    proc = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--no-tty", *args],
        input=input,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"gpg {args[0]} failed: {proc.stderr.decode(errors='replace')[-300:]}")
    return proc.stdout


def make_key(home: Path, uid: str, *extra: str) -> str:
    """Generate an ed25519 signing key without passphrase in ``home``; its fingerprint."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(home, 0o700)
    gpg_in(
        home, "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", *(extra or ("never",))
    )
    out = gpg_in(home, "--with-colons", "--list-secret-keys", uid).decode()
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
