"""Receive and pull orchestration: verify, then persist only what was accepted.

Both ``qgitconf.Receive`` (push) and ``qgitconf pull`` hand their untrusted stream to
``accept_update``, which calls the one verifier (``verify_update``) and stages the
result.  A rejection writes nothing but one line of ``rejected.log`` (rule 8).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from qgitconf.agent.config import TargetConfig, load_target_config
from qgitconf.agent.state import (
    STAGED_REF,
    STAGED_SIGNATURE,
    STAGED_STATEMENT,
    AgentState,
    state_dir,
)
from qgitconf.agent.verify import VerifiedUpdate, VerifyContext, verify_update
from qgitconf.core.envelope import format_time
from qgitconf.core.paths import PathRules
from qgitconf.core.pathtree import rules_digest
from qgitconf.errors import QgitconfError, UntrustedInputError
from qgitconf.fsutil import atomic_write
from qgitconf.gpg.homes import HomeCache
from qgitconf.qubes import qubesdb
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import Reply


class Outcome(NamedTuple):
    """What happened to one update; ``reply()`` is the JSON line sent back."""

    result: str  # "staged" | "up-to-date"
    commit: str
    sequence: int
    applied: str | None
    config: TargetConfig  # what the update was verified and staged with

    def reply(self) -> Reply:
        return {
            "result": self.result,
            "commit": self.commit,
            "sequence": self.sequence,
            "applied": self.applied,
        }


def make_context(cfg: TargetConfig, state: AgentState, name: str) -> VerifyContext:
    data = state.load()
    return VerifyContext(
        own_name=name,
        source=cfg.source,
        pinned=cfg.pinned,
        rules=cfg.rules,
        limits=cfg.limits,
        last_sequence=data.get("sequence"),
        last_commit=data.get("commit"),
        objects=state.objects,
        tmp=state.tmp,
        now=datetime.now(UTC),
        # The pinned keys' GnuPG home is kept in the state (which no update can write,
        # rule 7) once a verification with it succeeded: no key import per receive.
        gnupg_homes=HomeCache(state.verify_homes, state.tmp),
    )


def _stage(update: VerifiedUpdate, state: AgentState, rules: PathRules) -> None:
    """Persist an accepted update: objects first, then state, then the ref.

    The staged record names the tree whose paths passed the path rules and the digest
    of those rules (``checked``): apply checks that tree again only if either differs
    (issue 21).  It lives in the agent state, which no update can write (rule 7).
    """
    st = update.statement
    if update.quarantine is not None:
        update.quarantine.promote()
    # The signed statement, for the root step to verify again (issue 15): kept before
    # the state names the commit, so a staged commit always has its statement.
    atomic_write(state.root / STAGED_STATEMENT, update.raw_statement, 0o600)
    atomic_write(state.root / STAGED_SIGNATURE, update.raw_signature, 0o600)
    data = state.load()
    data.update(
        {
            "sequence": st.sequence,
            "commit": st.commit,
            "staged": {
                "commit": st.commit,
                "sequence": st.sequence,
                "signer": update.signer,
                "created": format_time(st.created),
                "received": format_time(datetime.now(UTC)),
                "checked": {"tree": update.tree, "rules": rules_digest(rules)},
            },
        }
    )
    state.save(data)
    state.refs()[STAGED_REF] = st.commit.encode("ascii")


def accept_update(
    stream: BinaryIO,
    sender: str,
    home: Path,
    env: Mapping[str, str],
    *,
    name: str | None = None,
    qubesdb_values: Callable[[], Mapping[str, str | None]] | None = None,
) -> Outcome:
    """Verify an update from ``sender`` and stage it.

    Args:
        stream: the untrusted update (read with caps by the verifier).
        sender: the calling qube, as qrexec named it (``QREXEC_REMOTE_DOMAIN``).
        home: $HOME.
        env: the display/session variables for the notification (nothing else is read).
        name: this qube's name; None asks QubesDB, the only source the agent trusts
            for it (never the environment; tests pass it).
        qubesdb_values: QubesDB's answer to :data:`qgitconf.qubes.qubesdb.RECEIVE_KEYS`
            when the caller started the read (``qubesdb.start_many``); None reads here.

    Raises:
        QgitconfError: ``UntrustedInputError`` subclasses for rejected updates (already
            logged to ``rejected.log``), ``ConfigError`` when this qube is not set up.
    """
    # QubesDB's three answers from one qubesdb-read process (one per key before)
    values = (qubesdb_values or (lambda: qubesdb.read_many(qubesdb.RECEIVE_KEYS)))()
    cfg = load_target_config(home, env, read_qubesdb=values.get)
    state = AgentState(state_dir(home))
    state.ensure()
    if name is None:
        name = qubesdb.checked_name(values.get(qubesdb.NAME_KEY))
    ctx = make_context(cfg, state, name)
    try:
        update = verify_update(stream, sender, ctx)
    except UntrustedInputError as e:
        state.log_rejection(e.code, e.detail, sender)
        raise
    try:
        st = update.statement
        if not update.up_to_date:
            _stage(update, state, cfg.rules)
        result = "up-to-date" if update.up_to_date else "staged"
        return Outcome(result, st.commit, st.sequence, state.applied_commit, cfg)
    finally:
        update.close()


def rejection_reply(error: QgitconfError) -> Reply:
    return {"result": "rejected", "reason": error.code, "detail": sanitize(error.detail)}
