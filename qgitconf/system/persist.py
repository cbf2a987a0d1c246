"""Keep applied system files across an AppVM's reboots with Qubes' bind-dirs (issue 15).

In an AppVM the root filesystem, ``/etc`` included, comes from the template at every
boot; ``/rw`` (the private volume) and ``/usr/local`` (``/rw/usrlocal``) persist.
Qubes' ``bind-dirs.sh`` runs early at boot and, for every path listed in
``/rw/config/qubes-bind-dirs.d/*.conf`` (``binds+=( '/etc/gitconfig' )``), bind-mounts
``/rw/bind-dirs/<path>`` over ``<path>``.  So after each system apply, revert or restore
the root step rewrites :data:`CONF_NAME` to list the managed files under ``/etc`` and
keeps a copy of each as ``/rw/bind-dirs/<path>``; a file no longer managed leaves the
list and its copy is removed.  While any system file is managed, :data:`RC_NAME` runs
``qgitconf system restore`` at each boot (Qubes runs ``/rw/config/rc.local.d/*.rc`` as
root).  ``/usr/local`` needs nothing.  A TemplateVM keeps its
root filesystem: nothing to do there either.

:func:`conf_text` is pure; :func:`sync_bind_dirs` does the I/O under ``rw``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path

from qgitconf.fsutil import atomic_write
from qgitconf.ops.persist import _feature_names

__all__ = [
    "CONF_NAME",
    "RC_NAME",
    "RC_TEXT",
    "conf_text",
    "custom_persist_commands",
    "persisted",
    "sync_bind_dirs",
]

RC_NAME = "config/rc.local.d/50_qgitconf.rc"
"""The boot script qgitconf owns, relative to ``/rw``: Qubes' ``misc-post.sh`` runs every
executable ``/rw/config/rc.local.d/*.rc`` as root at each AppVM boot."""
RC_TEXT = (
    "#!/bin/sh\n"
    "# Written by qgitconf (the system step): at each boot, as root, re-create the applied\n"
    "# system files a reboot dropped; never over a local change.\n"
    "exec /usr/bin/qgitconf system restore\n"
).encode("ascii")
CONF_NAME = "config/qubes-bind-dirs.d/50_qgitconf.conf"
"""The bind-dirs configuration qgitconf owns, relative to ``/rw``."""
BIND_DIRS = "bind-dirs"
"""Where bind-dirs keeps the persistent copies, relative to ``/rw``."""


def persisted(rels: Iterable[str]) -> list[str]:
    """The managed system paths (relative to ``/``) bind-dirs must keep: those in /etc."""
    return sorted(r for r in rels if r.startswith("etc/"))


def _quote(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"


def conf_text(rels: Iterable[str]) -> bytes:
    """The bind-dirs configuration for ``rels`` (bash, read by ``bind-dirs.sh``)."""
    lines = [
        "# Written by qgitconf (the system step): the system files it manages in this",
        "# AppVM.  Rewritten at every `qgitconf system apply`, revert and restore.",
    ]
    lines += [f"binds+=( {_quote('/' + r)} )" for r in persisted(rels)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def sync_bind_dirs(rw: Path, sysroot: Path, manifest: Mapping[str, object]) -> list[str]:
    """Make bind-dirs keep exactly the managed files under /etc, as they are now.

    Each managed ``/etc`` file is copied from the live system into
    ``rw/bind-dirs/<path>`` (a bind-mounted one is that copy already: it is copied
    onto itself harmlessly); a copy that is no longer managed is removed.  Returns the
    persisted paths.
    """
    keep = persisted(manifest)
    base = rw / BIND_DIRS
    for rel in keep:
        try:
            data = _read_nofollow(sysroot / rel)
        except OSError:
            continue  # not on disk (left by --keep): nothing to keep
        mode = 0o755 if os.stat(sysroot / rel, follow_symlinks=False).st_mode & 0o100 else 0o644
        atomic_write(base / rel, data, mode)
    listed = set(keep)
    conf = rw / CONF_NAME
    old = _listed(conf)
    for rel in old - listed:
        with contextlib.suppress(OSError):
            (base / rel).unlink()
    atomic_write(conf, conf_text(keep), 0o644)
    rc = rw / RC_NAME
    if manifest:
        atomic_write(rc, RC_TEXT, 0o755)
    else:
        with contextlib.suppress(OSError):
            rc.unlink()
    return keep


def custom_persist_commands(qube: str, rels: Iterable[str]) -> list[str]:
    """The dom0 commands that keep the managed ``/etc`` files of a qube where R4.3's
    custom-persist is on: then ``bind-dirs.sh`` reads only QubesDB ``/persist/*``, never
    ``/rw/config/qubes-bind-dirs.d``, and ``rc.local.d`` is not run.  Each file is
    declared as itself (a parent such as ``/etc`` must never be); the key is
    ``qgitconf-s-<slug>``, at most ``FEATURE_KEY_MAX`` characters."""
    paths = persisted(rels)
    names = _feature_names("qgitconf-s", paths)
    return [
        f"qvm-features {shlex.quote(qube)} custom-persist.{name} {shlex.quote('/' + rel)}"
        for name, rel in zip(names, paths, strict=True)
    ]


def _read_nofollow(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def _listed(conf: Path) -> set[str]:
    """The paths an earlier :func:`conf_text` listed (only our own lines are read)."""
    try:
        text = conf.read_text(encoding="utf-8")
    except OSError:
        return set()
    out: set[str] = set()
    for line in text.splitlines():
        if line.startswith("binds+=( '/") and line.endswith("' )") and "'\\''" not in line:
            rel = line[len("binds+=( '/") : -len("' )")]
            if rel.startswith("etc/") and ".." not in rel.split("/"):
                out.add(rel)
    return out
