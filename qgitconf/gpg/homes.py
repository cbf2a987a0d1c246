"""The verifier's GnuPG homes: a fresh private home per verification, or one kept
between verifications when its marker, its files and the pinned keys' digest all
match (never a home anything else could have written into); python-gnupg run in such a
home (the verifier's key imports, key files read)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from qgitconf import sysprog
from qgitconf.fsutil import private_dir, remove_tree

GPG_OPTIONS = [
    "--no-options",
    "--no-auto-key-retrieve",
    "--no-autostart",
    "--no-greeting",
    "--no-random-seed-file",
]
"""The options of every gpg run in a verification or key-reading home: no config
file, no network, no agent started, nothing written beside the home."""


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


def home_files(home: Path) -> dict[str, str] | None:
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


def kept_home_ok(home: Path, digest: str, fprs: list[str]) -> bool:
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
    files = home_files(home)
    return files is not None and marker == _marker_text(digest, fprs, files)


def fresh_home(cache: HomeCache | None) -> str:
    """A new private directory: in ``cache.tmp`` (so it can be kept), else in $TMPDIR."""
    # fsutil's, not tempfile's: the no-op receive and publish rows of ``make bench``
    # load neither tempfile nor shutil (together about 6 ms)
    if cache is not None:
        with contextlib.suppress(OSError):
            return str(private_dir(cache.tmp, "gnupg-"))
    # where tempfile.mkdtemp would make it: $TMPDIR, else /tmp (a new 0700 directory
    # with a random name, made by mkdir: never one that exists)
    tmp = Path(os.environ.get("TMPDIR") or "/tmp")  # noqa: S108
    return str(private_dir(tmp, "qgitconf-verify-"))


def keep_home(
    home: Path, cache: HomeCache, pinned: Mapping[str, bytes], files: Mapping[str, str]
) -> bool:
    """Rename the checked fresh ``home`` into ``cache``; True if it was kept.

    Only a home whose files are still those checked after the import is kept; homes
    for other pin sets are removed (the pins changed).
    """
    if home.parent != cache.tmp or home_files(home) != files:
        return False
    digest = pin_digest(pinned)
    (home / _MARKER).write_text(_marker_text(digest, list(pinned), files))
    cache.root.mkdir(mode=0o700, exist_ok=True)
    final = cache.root / digest
    for old in os.listdir(cache.root):
        if old != digest:
            discard_home(cache.root / old, cache)
    try:
        os.rename(home, final)
        return True
    except OSError:
        pass
    if kept_home_ok(final, digest, list(pinned)):
        return False  # another receive kept an equal home first: ours goes
    discard_home(final, cache)
    os.rename(home, final)
    return True


def discard_home(path: Path, cache: HomeCache) -> None:
    """Remove a kept home: renamed aside first, so no one picks up a half-removed one."""
    aside = private_dir(cache.tmp, "old-")
    with contextlib.suppress(OSError):
        os.rename(path, aside / "home")
    remove_tree(aside, ignore_errors=True)


@contextlib.contextmanager
def python_gnupg(home: str) -> Iterator[Any]:
    """python-gnupg on the system's gpg in the private ``home``, with an environment
    built from nothing (DESIGN rule 12).

    python-gnupg >= 0.5 takes that environment as ``env``; 0.4.x (Debian 12's 0.4.9)
    has no such argument and starts gpg with this process's environment, so for the
    block the process's environment is replaced by the same one and then restored.
    """
    # Lazy: python-gnupg (about 15 ms) and inspect only when gpg runs; the no-op receive
    # row of ``make bench`` imports this module (through the verifier) and runs none.
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
