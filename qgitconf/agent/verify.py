"""Verify one incoming update: the single function Receive and pull both call.

``verify_update`` enforces DESIGN rules 1-7 in this order, stopping at the first
failure with the error named after the attack:

1. the sender is the configured source qube (rule 3) - before any byte is read;
2. envelope header, statement and signature read under fixed caps (rule 1);
3. the statement's signature verifies against the pinned keys only (rule 2) - before
   the statement is parsed;
4. the statement parses strictly, names this qube, has a fresh sequence and has not
   expired (rule 4);
5. the bundle is read only up to ``bundle-size``, must hash to ``bundle-sha256``, and
   nothing may follow it (rules 1, 5);
6. the bundle header is strict and advertises exactly ``refs/heads/<this qube>`` at the
   statement's commit with the statement's prerequisite (rule 5);
7. the pack is streamed into a quarantine store with caps; every new object is
   ``check()``-ed (rule 5);
8. the tip commit is signed by a pinned key and descends from the last accepted
   commit (rule 6);
9. every path of the tip tree passes the path rules (rule 7) and the tree digest
   matches ``tree-sha256`` (rule 5).

The result, ``VerifiedUpdate``, is only ever built here.  Its quarantine holds the new
objects; the caller promotes them (rule 8) or closes it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from qgitconf.core.envelope import Statement, parse_statement, read_envelope
from qgitconf.core.pathtree import check_tree
from qgitconf.errors import (
    BundleError,
    CommitSignatureError,
    ExpiredError,
    MalformedError,
    ReplayError,
    RollbackError,
    TooLargeError,
    WrongSourceError,
    WrongTargetError,
)
from qgitconf.fsutil import anonymous_file
from qgitconf.gitpack.store import blob_bytes, check_descends, read_commit, tree_sha256, walk_tree
from qgitconf.gpg.homes import HomeCache
from qgitconf.gpg.signing import Verifier
from qgitconf.limits import Limits
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.core.paths import PathRules
    from qgitconf.gitpack.bundle import Quarantine

_CHUNK = 1 << 16


class VerifyContext(NamedTuple):
    """What the agent knows and trusts when an update arrives."""

    own_name: str
    source: str
    pinned: Mapping[str, bytes]
    rules: PathRules
    limits: Limits
    last_sequence: int | None
    last_commit: str | None
    objects: Path
    tmp: Path
    now: datetime
    gnupg_homes: HomeCache | None = None  # where the verification home is kept


class VerifiedUpdate(NamedTuple):
    """An update that passed every rule.  Built only by ``verify_update``."""

    statement: Statement
    signer: str
    up_to_date: bool
    quarantine: Quarantine | None
    paths: list[str]
    # The signed statement as it came (kept at staging for the root step, issue 15).
    raw_statement: bytes = b""
    raw_signature: bytes = b""
    # The tip's tree id, whose every path passed the path rules (rule 7) with ``rules``.
    tree: str = ""

    def close(self) -> None:
        if self.quarantine is not None:
            self.quarantine.close()


def check_statement(st: Statement, ctx: VerifyContext) -> bool:
    """Rule 4.  Returns True when the update is the one already accepted.

    Also the root step's check of the kept statement (``qgitconf.system.step``)."""
    if st.target != ctx.own_name:
        raise WrongTargetError(
            f"update is for {sanitize(st.target)!r}, this qube is {sanitize(ctx.own_name)!r}"
        )
    if ctx.last_sequence is not None:
        if st.sequence < ctx.last_sequence:
            raise RollbackError(
                f"sequence {st.sequence} is lower than the last accepted {ctx.last_sequence}"
            )
        if st.sequence == ctx.last_sequence:
            if st.commit == ctx.last_commit:
                return True
            raise ReplayError(f"sequence {st.sequence} was already used for another commit")
    if st.expires is not None and st.expires <= ctx.now:
        raise ExpiredError(f"update expired at {st.expires.isoformat()}")
    return False


def _spool_bundle(stream: BinaryIO, st: Statement, limits: Limits, spool: BinaryIO) -> None:
    """Copy exactly ``bundle-size`` bytes to ``spool`` while hashing (rules 1, 5)."""
    if st.bundle_size > limits.max_bundle_bytes:
        raise TooLargeError(
            f"bundle-size {st.bundle_size} exceeds the limit {limits.max_bundle_bytes}"
        )
    h = hashlib.sha256()
    left = st.bundle_size
    while left:
        chunk = stream.read(min(_CHUNK, left))
        if not chunk:
            raise BundleError(
                f"bundle is {st.bundle_size - left} bytes, the statement says {st.bundle_size}",
                code="bundle-size-mismatch",
            )
        h.update(chunk)
        spool.write(chunk)
        left -= len(chunk)
    if stream.read(1):
        raise MalformedError("data follows the bundle", code="bundle-size-mismatch")
    if h.hexdigest() != st.bundle_sha256:
        raise BundleError("bundle does not match bundle-sha256", code="bundle-hash-mismatch")
    spool.seek(0)


def _check_header(
    spool: BinaryIO, st: Statement, ctx: VerifyContext, quarantine: Quarantine
) -> None:
    from qgitconf.gitpack.bundle import read_bundle_header

    header = read_bundle_header(spool, ctx.limits)
    (ref, sha) = header.refs[0]
    if ref != f"refs/heads/{st.target}":
        raise BundleError(f"bundle ref {ref!r} is not refs/heads/{st.target}")
    if sha != st.commit:
        raise BundleError(
            "bundle ref does not point at the statement's commit", code="commit-mismatch"
        )
    expected = (st.prerequisite,) if st.prerequisite else ()
    if header.prerequisites != expected:
        raise BundleError("bundle prerequisites differ from the statement's")
    # The store that the thin pack's bases will come from (opened only for a thin pack).
    if st.prerequisite and not quarantine.real_has(st.prerequisite):
        raise BundleError(
            f"prerequisite {st.prerequisite} is not in this qube's repository",
            code="missing-prerequisite",
        )


def verify_update(stream: BinaryIO, sender: str, ctx: VerifyContext) -> VerifiedUpdate:
    """Read and verify one update from ``stream``; see the module docstring for the steps.

    Args:
        stream: the untrusted bytes (qrexec stdin for Receive, Fetch's stdout for pull).
        sender: the qube the bytes came from, as qrexec reports it.
        ctx: what this qube trusts and has accepted before.

    Returns:
        A ``VerifiedUpdate``; the caller must ``close()`` it.

    Raises:
        UntrustedInputError: a subclass named after the rule that failed.
    """
    if sender != ctx.source:  # step 1, rule 3
        raise WrongSourceError(f"updates are accepted from {ctx.source!r} only")
    raw = read_envelope(stream)  # step 2, rule 1
    with Verifier(ctx.pinned, ctx.gnupg_homes) as verifier:
        signer = verifier.verify(raw.statement, raw.signature)  # step 3, rule 2
        st = parse_statement(raw.statement)  # step 4
        if check_statement(st, ctx):
            return VerifiedUpdate(st, signer, True, None, [])
        # Imported only now: an up-to-date update (the common no-op) never needs them.
        from qgitconf.gitpack.bundle import Quarantine
        from qgitconf.gitpack.compat import commit_raw, split_commit_signature

        quarantine = Quarantine(ctx.tmp, ctx.objects)
        try:
            with anonymous_file(quarantine.root) as spool:
                _spool_bundle(stream, st, ctx.limits, spool)  # step 5
                _check_header(spool, st, ctx, quarantine)  # step 6
                quarantine.ingest(spool, st.bundle_size, ctx.limits)  # step 7
            # The quarantine is the store: new objects as already parsed, then the stores.
            commit = read_commit(quarantine, st.commit)  # step 8, rule 6
            # The signed bytes cut from the raw commit as git verify-commit cuts them.
            payload, signature = split_commit_signature(commit_raw(commit))
            if not signature:
                raise CommitSignatureError(f"commit {st.commit} is not signed")
            # gpg checks the commit's signature while the tree is walked (the signed
            # statement already names this commit); a signature that does not count
            # is the error reported, whatever the later steps find.
            with verifier.start(
                bytes(payload), bytes(signature), CommitSignatureError
            ) as commit_signature:
                try:
                    tree = commit.tree.decode("ascii")
                    paths = _check_tip(quarantine, st, ctx, tree)
                except Exception:
                    commit_signature.result()
                    raise
                commit_signature.result()
        except BaseException:
            quarantine.close()
            raise
    return VerifiedUpdate(st, signer, False, quarantine, paths, raw.statement, raw.signature, tree)


def _check_tip(store: Quarantine, st: Statement, ctx: VerifyContext, tree: str) -> list[str]:
    """Steps 8 (descent) and 9 (paths, tree digest) for the tip ``st.commit``, whose
    ``tree`` is read from ``store``.

    Returns:
        The tree's paths, decoded.
    """
    check_descends(store, st.commit, ctx.last_commit, ctx.limits.max_objects)
    entries = walk_tree(store, tree, ctx.limits)  # step 9
    paths = check_tree(
        ((e.path, e.mode, _link_target(store, e.sha) if e.is_link else None) for e in entries),
        ctx.rules,
    )
    if tree_sha256(store, entries, store.blob_digests()) != st.tree_sha256:
        raise BundleError("tree digest does not match tree-sha256", code="tree-digest-mismatch")
    return paths


def _link_target(store: object, sha: str) -> bytes:
    return blob_bytes(store, sha)
