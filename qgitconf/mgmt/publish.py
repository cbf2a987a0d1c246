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

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from qgitconf.core.envelope import parse_statement, read_envelope
from qgitconf.core.reply import Reply, parse_reply
from qgitconf.errors import (
    BadReplyError,
    GitError,
    PolicyDeniedError,
    QgitconfError,
    TransportError,
)
from qgitconf.fsutil import atomic_write, read_json, write_json
from qgitconf.limits import MAX_REPLY_BYTES
from qgitconf.mgmt.layers import merge_layers, plan_merges
from qgitconf.mgmt.repo import MgmtRepo
from qgitconf.mgmt.sizes import MAX_FILE_BYTES, SizedFile, human, largest_in_range
from qgitconf.mgmt.update import PROGRESS_BYTES, Note, build_update, git_bundle
from qgitconf.qubes.qrexec import QREXEC_REFUSED, Transport

if TYPE_CHECKING:
    from qgitconf.mgmt.records import PublishRecord

RECEIVE = "qgitconf.Receive"


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


def load_record(repo: MgmtRepo, target: str) -> PublishRecord:
    data: PublishRecord = read_json(_record_path(repo, target), {})
    return data if isinstance(data, dict) else {}


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


def _prerequisite(repo: MgmtRepo, record: PublishRecord, tip: str) -> str | None:
    """The last commit the target reported as accepted, if the tip descends from it."""
    accepted = record.get("accepted")
    if isinstance(accepted, str) and accepted != tip and repo.is_ancestor(accepted, tip):
        return accepted
    return None


def _new_update(
    repo: MgmtRepo,
    target: str,
    tip: str,
    record: PublishRecord,
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
        {
            "sequence": sequence,
            "published": None,
            "prerequisite": prereq,
            "unconfirmed": list(dict.fromkeys([*unconfirmed, tip])),  # before it can be pulled
        }
    )
    write_json(_record_path(repo, target), record)
    atomic_write(update_path(repo, target), update, 0o600)
    record.update({"published": tip, "published_at": now.strftime("%Y-%m-%dT%H:%M:%SZ")})
    write_json(_record_path(repo, target), record)
    return update, sequence


def _deliver(
    repo: MgmtRepo,
    target: str,
    transport: Transport,
    record: PublishRecord,
    update: bytes,
    sequence: int,
    tip: str,
    note: Note | None = None,
) -> PublishResult:
    if note is not None and len(update) >= PROGRESS_BYTES:
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
    record: PublishRecord,
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


Runner = Callable[
    [Callable[[str], PublishResult], list[str], Callable[[PublishResult], None]], None
]
"""How :func:`publish_each` runs its targets: ``run(one, names, done)`` calls ``done`` with
``one(name)`` of every name (:func:`in_turn`, or several at once:
:mod:`qgitconf.mgmt.publishjobs`)."""


def in_turn(
    one: Callable[[str], PublishResult], names: list[str], done: Callable[[PublishResult], None]
) -> None:
    """Publish to ``names`` one after another (a :data:`Runner`)."""
    for name in names:
        done(one(name))


def publish_each(
    repo: MgmtRepo,
    targets: Sequence[str],
    transport: Transport,
    *,
    run: Runner = in_turn,
    progress: Progress | None = None,
    now: datetime | None = None,
    note: Note | None = None,
) -> list[PublishResult]:
    """Merge layers, then publish to ``targets`` as ``run`` runs them (one after another
    by default; :func:`qgitconf.mgmt.publishjobs.publish_targets`: several at once).

    Layer merges for every target are done first, under the repo lock; a conflict
    stops the whole run before anything is sent.  A target that fails does not stop
    the others: each gets its own :class:`PublishResult`, in the order given.

    Raises:
        MergeConflictError: a layer does not merge cleanly; nothing was published.
        UsageError: an unknown target.
    """
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

        run(one, names, done)
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
    """What :func:`qgitconf.mgmt.publishjobs.publish_targets` would send, without signing,
    sending or recording.

    Layer merges are computed as unsigned commit objects that no ref points to (they
    only measure the bundle); nothing under ``qgitconf/`` changes.

    Raises:
        MergeConflictError: a layer does not merge cleanly (publish would stop too).
        UsageError: an unknown target.
    """
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
