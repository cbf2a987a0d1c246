"""An update's bytes, built in config-mgmt: the bundle (``git pack-objects``, thin against
what the target accepted, behind qgitconf's own bundle header), the tree digest, and
the signed statement in its envelope."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from qgitconf.core.envelope import Statement, format_envelope_header, format_statement
from qgitconf.errors import (
    GitError,
)
from qgitconf.gitpack.store import TreeEntry, tree_sha256
from qgitconf.gpg.signing import sign_detached
from qgitconf.limits import Limits
from qgitconf.mgmt.catfile import iter_blobs
from qgitconf.mgmt.repo import MgmtRepo
from qgitconf.mgmt.sizes import human

Note = Callable[[str], None]
"""Where publish reports the steps of long work (the CLI: one line on stderr each)."""


_AUTHOR_LIMITS = Limits(max_tree_entries=10_000_000, max_objects=10_000_000)


_PROGRESS_FILES = 2000
"""From this many files in the tip's tree on, publish says what it is doing (stderr)."""


PROGRESS_BYTES = 8 * 1024 * 1024
"""From this many bytes of update on, publish says when it signs and sends."""


def git_bundle(repo: MgmtRepo, target: str, tip: str, prerequisite: str | None) -> bytes:
    """A v2 bundle of ``refs/heads/<target>`` at ``tip`` with one prerequisite at most.

    The pack comes from the user's git (``pack-objects --thin``, deltified against the
    prerequisite), so a one-line change costs a few hundred bytes on the wire.  The
    header is written here: ``git bundle create`` would list every boundary commit
    (several after a layer merge), while DESIGN allows exactly the last accepted
    commit, whose ancestors the target holds anyway.
    """
    return _read_bundle(_start_pack(repo, tip, prerequisite), target, tip, prerequisite)


def _start_pack(repo: MgmtRepo, tip: str, prerequisite: str | None) -> subprocess.Popen[bytes]:
    revs = f"{tip}\n" + (f"^{prerequisite}\n" if prerequisite else "")
    cmd = [
        "git",
        f"--git-dir={repo.path}",
        "pack-objects",
        "--revs",
        "--stdout",
        "-q",
        "--delta-base-offset",
        *(["--thin"] if prerequisite else []),
    ]
    # The revisions (two lines) fit a pipe's buffer: write them all before git starts,
    # so nothing here waits on git while it packs.
    rfd, wfd = os.pipe()
    try:
        try:
            os.write(wfd, revs.encode("ascii"))
        finally:
            os.close(wfd)
        return subprocess.Popen(
            cmd, stdin=rfd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(repo.env)
        )
    finally:
        os.close(rfd)


def _read_bundle(
    proc: subprocess.Popen[bytes], target: str, tip: str, prerequisite: str | None
) -> bytes:
    pack, err = proc.communicate()
    if proc.returncode != 0:
        raise GitError(f"git pack-objects failed: {err.decode(errors='replace')[-200:]}")
    head = "# v2 git bundle\n"
    if prerequisite:
        head += f"-{prerequisite}\n"
    head += f"{tip} refs/heads/{target}\n\n"
    return head.encode("ascii") + pack


def _tree_entries(repo: MgmtRepo, tip: str) -> list[TreeEntry]:
    """The non-tree entries of ``tip``'s tree, as ``gitstore.walk_tree`` lists them.

    One ``git ls-tree -r`` instead of a dulwich walk: the author's own repo is trusted,
    and dulwich costs more to import than the walk takes.  The caps are walk_tree's.
    """
    proc = subprocess.run(
        ["git", f"--git-dir={repo.path}", "ls-tree", "-r", "-z", "--full-tree", tip],
        capture_output=True,
        env=dict(repo.env),
        check=False,
    )
    if proc.returncode != 0:
        raise GitError(f"git ls-tree failed: {proc.stderr.decode(errors='replace')[-200:]}")
    entries: list[TreeEntry] = []
    for record in proc.stdout.split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, kind, sha = meta.split(b" ")
        if kind != b"blob":  # a gitlink: there is no content to digest
            raise GitError(f"{path.decode(errors='replace')} is a {kind.decode()}, not a file")
        if path.count(b"/") > _AUTHOR_LIMITS.max_tree_depth:  # its tree's depth
            raise GitError(f"tree deeper than {_AUTHOR_LIMITS.max_tree_depth} levels")
        entries.append(TreeEntry(path, int(mode, 8), sha.decode("ascii")))
        if len(entries) > _AUTHOR_LIMITS.max_tree_entries:
            raise GitError(f"tree has more than {_AUTHOR_LIMITS.max_tree_entries} entries")
    return entries


def _blob_digests(repo: MgmtRepo, shas: Sequence[str]) -> dict[str, bytes]:
    """SHA-256 of the content of each blob in ``shas`` (one ``git cat-file --batch``),
    hashed as it comes: nothing holds more than a chunk of a blob in memory."""
    out: dict[str, bytes] = {}
    for sha, _size, chunks in iter_blobs(["git", f"--git-dir={repo.path}"], repo.env, shas):
        digest = hashlib.sha256()
        for chunk in chunks:
            digest.update(chunk)
        out[sha] = digest.digest()
    return out


def tree_digest(repo: MgmtRepo, tip: str, note: Note | None = None, what: str = "") -> str:
    """The ``tree-sha256`` of ``tip`` (computed by ``gitstore.tree_sha256``, as the agent does).

    ``note`` hears about a tree of many files before it is hashed (``what`` names it).
    """
    entries = _tree_entries(repo, tip)
    if note is not None and len(entries) >= _PROGRESS_FILES:
        note(f"{what}hashing {len(entries)} files")
    known = _blob_digests(repo, list(dict.fromkeys(e.sha for e in entries)))
    return tree_sha256(None, entries, known)


def build_update(
    repo: MgmtRepo,
    target: str,
    tip: str,
    sequence: int,
    prerequisite: str | None,
    now: datetime,
    expires: timedelta | None = None,
    note: Note | None = None,
) -> bytes:
    """Return the envelope bytes of a new update (signed through ``gpg.program``).

    ``note`` hears about the steps of long work (many files, a big bundle).
    """
    packing = _start_pack(repo, tip, prerequisite)
    config = repo.start_signing_config()  # beside pack-objects: read before signing
    try:
        # while git packs: the two run on two cores
        digest = tree_digest(repo, tip, note, f"{target}: ")
        bundle = _read_bundle(packing, target, tip, prerequisite)
        program, key = repo.finish_signing_config(config)
    except BaseException:
        for proc in (packing, config):
            with contextlib.suppress(OSError, ValueError):  # one may be read already
                if proc.poll() is None:
                    proc.kill()
                proc.communicate()
        raise
    if note is not None and len(bundle) >= PROGRESS_BYTES:
        note(f"{target}: bundle of {human(len(bundle))} packed; signing")
    st = Statement(
        target=target,
        sequence=sequence,
        commit=tip,
        prerequisite=prerequisite,
        bundle_size=len(bundle),
        bundle_sha256=hashlib.sha256(bundle).hexdigest(),
        tree_sha256=digest,
        created=now.replace(microsecond=0),
        expires=(now + expires).replace(microsecond=0) if expires else None,
    )
    statement = format_statement(st)
    signature = sign_detached(program, key, statement, repo.env)
    return format_envelope_header(statement, signature) + bundle
