"""Build, sign and send updates; remember what each target reported.

An update is the signed statement plus an incremental bundle whose one prerequisite
is the last commit the target reported as accepted (when that commit is an ancestor
of the tip).  The sequence is recorded, and the update kept for pull, *before* it is
sent, so sequence numbers only grow even if publish dies half-way.

The record also lists the published commits the target has not answered for yet
(``unconfirmed``: qrexec refused the call - denied, or the target not running -
or the call failed), because the
target may have pulled any of them; ``qgitconf squash`` never drops one of those.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from qgitconf.core.envelope import Statement, format_envelope_header, format_statement
from qgitconf.core.reply import Reply, parse_reply
from qgitconf.errors import (
    BadReplyError,
    GitError,
    PolicyDeniedError,
    QgitconfError,
    TransportError,
)
from qgitconf.fsutil import atomic_write, read_json, write_json
from qgitconf.gitpack.store import TreeEntry, tree_sha256
from qgitconf.gpg.signing import sign_detached
from qgitconf.limits import MAX_REPLY_BYTES, Limits
from qgitconf.mgmt.repo import MgmtRepo
from qgitconf.mgmt.sizes import MAX_FILE_BYTES, SizedFile, human, largest_in_range
from qgitconf.qubes.qrexec import QREXEC_REFUSED, Transport

RECEIVE = "qgitconf.Receive"
_AUTHOR_LIMITS = Limits(max_tree_entries=10_000_000, max_objects=10_000_000)
_PROGRESS_FILES = 2000
"""From this many files in the tip's tree on, publish says what it is doing (stderr)."""
_PROGRESS_BYTES = 8 * 1024 * 1024
"""From this many bytes of update on, publish says when it signs and sends."""

Note = Callable[[str], None]
"""Where publish reports the steps of long work (the CLI: one line on stderr each)."""


class PublishResult(NamedTuple):
    """What publish did for one target."""

    target: str
    status: str  # staged | up-to-date | rejected | denied | failed
    sequence: int
    commit: str
    size: int
    reply: Reply | None
    message: str
    largest: tuple[SizedFile, ...] = ()
    """After a ``too-large`` rejection: the largest files the update carried."""


def _record_path(repo: MgmtRepo, target: str) -> Any:
    return repo.meta / "targets" / f"{target}.json"


def update_path(repo: MgmtRepo, target: str) -> Any:
    return repo.meta / "updates" / f"{target}.update"


def load_record(repo: MgmtRepo, target: str) -> dict[str, Any]:
    data = read_json(_record_path(repo, target), {})
    return data if isinstance(data, dict) else {}


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
    from qgitconf.mgmt.catfile import iter_blobs

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
    if note is not None and len(bundle) >= _PROGRESS_BYTES:
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


REFUSED = "refused: denied or not running"
"""How a qrexec refusal (exit 126) reads: the policy denied the call, or the target is
halted and the policy does not start it; real qrexec-client-vm does not say which."""


def send(transport: Transport, target: str, update: bytes) -> Reply:
    """Send an update to ``target``'s Receive service and parse its reply.

    Raises:
        PolicyDeniedError: dom0 refused the call.
        TransportError: qrexec failed or the reply is unreadable.
    """
    result = transport.call(target, RECEIVE, update, MAX_REPLY_BYTES)
    if result.status == QREXEC_REFUSED and not result.stdout:
        # Real qrexec-client-vm prints only "Request refused" and exits 126 both when
        # dom0's policy denies the call and when the target is halted and the policy
        # does not start it (autostart=no): config-mgmt cannot tell them apart.
        raise PolicyDeniedError(
            f"{REFUSED}: qrexec refused {RECEIVE} to {target}; " + denied_hint(target)
        )
    try:
        return parse_reply(result.stdout)
    except BadReplyError as e:
        raise TransportError(f"{target} answered something unreadable: {e}") from e


def denied_hint(target: str) -> str:
    """The likely causes of a refused Receive call, and what to do about each."""
    return (
        f"likely cause: {target} does not carry the tag the policy allows "
        f"(in dom0: qvm-tags {target} add qgitconf-target), or it is halted and the policy "
        f"does not start it (autostart=no; it gets the kept update by `qgitconf pull` when "
        "it starts)"
    )


def _prerequisite(repo: MgmtRepo, record: dict[str, Any], tip: str) -> str | None:
    """The last commit the target reported as accepted, if the tip descends from it."""
    accepted = record.get("accepted")
    if isinstance(accepted, str) and accepted != tip and repo.is_ancestor(accepted, tip):
        return accepted
    return None


def _new_update(
    repo: MgmtRepo,
    target: str,
    tip: str,
    record: dict[str, Any],
    prereq: str | None,
    now: datetime,
    note: Note | None = None,
) -> tuple[bytes, int]:
    """Build the next update; record its sequence and keep it *before* it is sent.

    Order matters for a crash at any point: the sequence is reserved in the record
    (with ``published`` cleared) before the kept update is replaced, and ``published``
    is set only after.  A crash in between leaves ``published`` unset, so the next
    publish builds a fresh update with a higher sequence instead of resending a stale
    one, and no sequence number is ever used for two different updates.
    """
    sequence = int(record.get("sequence", 0)) + 1
    update = build_update(repo, target, tip, sequence, prereq, now, note=note)
    unconfirmed = [c for c in record.get("unconfirmed", []) if isinstance(c, str)]
    record.update(
        sequence=sequence,
        published=None,
        prerequisite=prereq,
        unconfirmed=list(dict.fromkeys([*unconfirmed, tip])),  # before it can be pulled
    )
    write_json(_record_path(repo, target), record)
    atomic_write(update_path(repo, target), update, 0o600)
    record.update(published=tip, published_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"))
    write_json(_record_path(repo, target), record)
    return update, sequence


def _deliver(
    repo: MgmtRepo,
    target: str,
    transport: Transport,
    record: dict[str, Any],
    update: bytes,
    sequence: int,
    tip: str,
    note: Note | None = None,
) -> PublishResult:
    if note is not None and len(update) >= _PROGRESS_BYTES:
        note(f"{target}: sending {human(len(update))}")
    try:
        reply = send(transport, target, update)
    except PolicyDeniedError as e:
        _note(repo, target, record, None, e, tip)
        return PublishResult(target, "denied", sequence, tip, len(update), None, str(e))
    except QgitconfError as e:
        _note(repo, target, record, None, e, tip)
        return PublishResult(target, "failed", sequence, tip, len(update), None, str(e))
    largest: list[SizedFile] = []
    hint = None
    if reply.reason == "too-large":
        prereq = record.get("prerequisite")
        largest = largest_in_range(
            repo.path, repo.env, tip, prereq if isinstance(prereq, str) else None
        )
        hint = too_large_hint(target, largest)
    _note(repo, target, record, reply, None, tip, hint)
    if reply.accepted:
        return PublishResult(target, str(reply.result), sequence, tip, len(update), reply, "")
    message = f"{reply.reason}: {reply.detail}" + (f"; {hint}" if hint else "")
    return PublishResult(
        target, "rejected", sequence, tip, len(update), reply, message, tuple(largest)
    )


def too_large_hint(target: str, largest: Sequence[SizedFile]) -> str:
    """Name the largest files of a refused update and the way out (``squash``)."""
    files = ", ".join(
        f"{f.path} ({human(f.size)}"
        + (
            f", over the {human(MAX_FILE_BYTES)} per-file limit)"
            if f.size > MAX_FILE_BYTES
            else ")"
        )
        for f in largest
    )
    return (
        f"largest files in this update: {files or 'none'}; remove the file "
        f"(git rm in `qgitconf edit {target}`, then `qgitconf commit`), then "
        f"`qgitconf squash {target}` to take it out of the history {target} has not "
        "accepted yet, and publish again"
    )


def publish(
    repo: MgmtRepo,
    target: str,
    transport: Transport,
    now: datetime | None = None,
    tip: str | None = None,
    note: Note | None = None,
) -> PublishResult:
    """Publish the branch of ``target``: resend the kept update if nothing changed.

    When the target answers ``missing-prerequisite`` (its state was reset, or the
    reported commit was wrong), publish once more with a full bundle.  ``tip`` is
    the branch's commit when the caller just read it under the repo lock; ``note``
    hears about the steps of long work.
    """
    repo.require().target(target)
    now = now or datetime.now(UTC)
    tip = tip or repo.tip(target)
    if tip is None:
        raise GitError(f"branch {target} has no commits")
    record = load_record(repo, target)
    kept = update_path(repo, target)
    if record.get("published") == tip and kept.exists():
        update, sequence = kept.read_bytes(), int(record["sequence"])
    else:
        update, sequence = _new_update(
            repo, target, tip, record, _prerequisite(repo, record, tip), now, note
        )
    result = _deliver(repo, target, transport, record, update, sequence, tip, note)
    if (
        result.reply is not None
        and result.reply.reason == "missing-prerequisite"
        and record.get("prerequisite")
    ):
        record.pop("accepted", None)
        update, sequence = _new_update(repo, target, tip, record, None, now, note)
        result = _deliver(repo, target, transport, record, update, sequence, tip, note)
    return result


def _note(
    repo: MgmtRepo,
    target: str,
    record: dict[str, Any],
    reply: Reply | None,
    error: QgitconfError | None,
    sent: str | None = None,
    hint: str | None = None,
) -> None:
    """Record the outcome of sending the update of ``sent``: the target's reply (with
    when it came, since config-mgmt hears nothing more until the next publish), or the
    error; and which published commits the target may still hold unannounced."""
    unconfirmed = [c for c in record.get("unconfirmed", []) if isinstance(c, str)]
    if reply is not None:
        record["reply"] = {
            "result": reply.result,
            "commit": reply.commit,
            "sequence": reply.sequence,
            "applied": reply.applied,
            "reason": reply.reason,
            "detail": reply.detail,
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if reply.accepted and reply.commit:
            record["accepted"] = reply.commit
            held = reply.commit
            # the commit just sent is the one held, mostly: no git process for it
            unconfirmed = [c for c in unconfirmed if c != held and not repo.is_ancestor(c, held)]
        else:  # the target refused these very bytes: a pull of them fails the same way
            unconfirmed = [c for c in unconfirmed if c != sent]
        record.pop("error", None)
    else:
        detail = str(error)
        record["error"] = {"code": error.code if error else "unknown", "detail": detail}
    record["unconfirmed"] = unconfirmed
    if hint is None:
        record.pop("hint", None)
    else:
        record["hint"] = hint
    write_json(_record_path(repo, target), record)


OK_STATUSES = ("staged", "up-to-date")
Progress = Callable[[int, int, PublishResult], None]


def publish_targets(
    repo: MgmtRepo,
    targets: Sequence[str],
    transport: Transport,
    *,
    jobs: int = 4,
    progress: Progress | None = None,
    now: datetime | None = None,
    note: Note | None = None,
) -> list[PublishResult]:
    """Merge layers, then publish to ``targets`` in parallel (at most ``jobs`` at once).

    Layer merges for every target are done first, under the repo lock; a conflict
    stops the whole run before anything is sent.  A target that fails does not stop
    the others: each gets its own :class:`PublishResult`, in the order given.

    Raises:
        MergeConflictError: a layer does not merge cleanly; nothing was published.
        UsageError: an unknown target.
    """
    from qgitconf.mgmt.layers import merge_layers

    repo.require()
    for name in targets:
        repo.target(name)
    names = list(dict.fromkeys(targets))
    with repo.lock():
        tips = {plan.target: plan.new for plan in merge_layers(repo, names)}
        results: dict[str, PublishResult] = {}

        def one(name: str) -> PublishResult:
            try:
                return publish(repo, name, transport, now, tips.get(name), note)
            except QgitconfError as e:  # building or signing failed for this target
                return PublishResult(name, "failed", 0, "", 0, None, f"{e.code}: {e.detail}")

        def done(result: PublishResult) -> None:
            results[result.target] = result
            if progress is not None:
                progress(len(results), len(names), result)

        if jobs == 1 or len(names) == 1:
            for name in names:
                done(one(name))
        else:
            from concurrent.futures import ThreadPoolExecutor, as_completed

            with ThreadPoolExecutor(max_workers=min(jobs, len(names))) as pool:
                for fut in as_completed([pool.submit(one, n) for n in names]):
                    done(fut.result())
    return [results[n] for n in names]


class PublishPlan(NamedTuple):
    """What ``publish`` would send to one target (``publish --dry-run``)."""

    target: str
    action: str  # "new" (a new update) | "resend" (the kept update, unchanged)
    sequence: int
    commit: str | None  # None: a layer merge commit, made and signed at publish
    base: str  # the branch tip before any layer merge
    prerequisite: str | None
    bundle_bytes: int
    merges: tuple[str, ...]
    too_large: tuple[SizedFile, ...]
    """Files of the update larger than a target accepts by default."""


def plan_publish(repo: MgmtRepo, targets: Sequence[str]) -> list[PublishPlan]:
    """What :func:`publish_targets` would send, without signing, sending or recording.

    Layer merges are computed as unsigned commit objects that no ref points to (they
    only measure the bundle); nothing under ``qgitconf/`` changes.

    Raises:
        MergeConflictError: a layer does not merge cleanly (publish would stop too).
        UsageError: an unknown target.
    """
    from qgitconf.core.envelope import parse_statement, read_envelope
    from qgitconf.mgmt.layers import plan_merges

    repo.require()
    for name in targets:
        repo.target(name)
    names = list(dict.fromkeys(targets))
    with repo.lock():
        merges = plan_merges(repo, names, sign=False)
    plans: list[PublishPlan] = []
    for merge in merges:
        name, tip = merge.target, merge.new
        record = load_record(repo, name)
        kept = update_path(repo, name)
        if not merge.merged and record.get("published") == tip and kept.exists():
            with kept.open("rb") as f:
                st = parse_statement(read_envelope(f).statement)
            action, sequence, prereq, size = "resend", st.sequence, st.prerequisite, st.bundle_size
        else:
            prereq = _prerequisite(repo, record, tip)
            action, sequence = "new", int(record.get("sequence", 0)) + 1
            size = len(git_bundle(repo, name, tip, prereq))
        big = [
            f for f in largest_in_range(repo.path, repo.env, tip, prereq) if f.size > MAX_FILE_BYTES
        ]
        plans.append(
            PublishPlan(
                name,
                action,
                sequence,
                None if merge.merged else tip,
                merge.old,
                prereq,
                size,
                merge.merged,
                tuple(big),
            )
        )
    return plans
