"""What follows a staged update: the opt-in auto-apply, then the notification.

The only module that joins review (the risk assessment) and apply: Receive ends at
"staged" and never imports either; its entry points call :func:`after_staging`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from qgitconf.agent.apply import plan_apply
from qgitconf.agent.commands import apply as do_apply
from qgitconf.agent.config import TargetConfig
from qgitconf.agent.gui import notify
from qgitconf.agent.receive import Outcome
from qgitconf.agent.review import changed_files, record_auto_apply
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.core.risks import assess, summary
from qgitconf.errors import QgitconfError
from qgitconf.sanitize import sanitize

if TYPE_CHECKING:
    from qgitconf.agent.records import AutoApply

__all__ = ["after_staging", "auto_apply"]


def after_staging(home: Path, env: Mapping[str, str], outcome: Outcome) -> None:
    """Receive's hook once an update is staged: auto-apply (opt-in), then notify.

    Never raises: the update is staged whatever happens here, and Receive must still
    answer "staged".  Never blocks on the GUI (see :func:`notify`).  Lives here, not
    in Receive: Receive ends at "staged"; its entry points (``qgitconf-service receive``,
    ``qgitconf pull``) call this once it has.
    """
    if outcome.result != "staged":
        return
    cfg, commit, sequence = outcome.config, outcome.commit, outcome.sequence
    try:
        body = f"update {sequence} ({commit[:12]}) is staged: run `qgitconf review`"
        if cfg.auto_apply:
            rec = auto_apply(home, env, cfg, commit)
            if rec["result"] == "applied":
                body = f"update {sequence} ({commit[:12]}) applied automatically"
            else:
                body = f"update {sequence} ({commit[:12]}) staged, not applied: {rec['reason']}"
        notify(env, "qgitconf: configuration update", body, home)
    except Exception as e:  # a bug here must not turn "staged" into a failure
        print(f"qgitconf: after staging: {sanitize(repr(e))}", file=sys.stderr)


def auto_apply(home: Path, env: Mapping[str, str], cfg: TargetConfig, commit: str) -> AutoApply:
    """Apply ``commit`` only if it has no high-risk finding and nothing is in the way.

    Exactly ``commit``, the one assessed: if another update was staged meanwhile,
    nothing is applied (``staged-changed``).

    Returns the decision record (also saved as ``auto-apply.json``): ``result`` is
    "applied" or "staged", ``reason`` says why.
    """
    state = AgentState(state_dir(home))
    record: AutoApply = {
        "commit": commit,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "result": "staged",
        "reason": "",
        "generation": None,
        "risk_summary": None,
        "high": [],
    }
    try:
        changes = changed_files(state, state.applied_commit, commit, cfg.limits)
        findings = assess(changes.files, changes.links)
        record["risk_summary"] = summary(findings)
        high = [f for f in findings if f.severity == "high"]
        plan, _fs = plan_apply(state, home, cfg.rules, cfg.limits, commit)
        if high:
            record["high"] = [f"{f.rule} {f.path}" for f in high]
            ids = ", ".join(sorted({f.rule for f in high}))
            record["reason"] = f"high-risk findings ({ids}): review and apply by hand"
        elif plan.conflicts or plan.blockers:
            record["reason"] = "files changed locally are in the way: review and apply by hand"
        else:
            rec = do_apply(home, env, overwrite=False, commit=commit)
            record.update({"result": "applied", "reason": "no high-risk finding, no drift"})
            record["generation"] = rec.get("number")
    except QgitconfError as e:
        record["reason"] = f"not applied: [{e.code}] {sanitize(e.detail)}"
    record_auto_apply(state, record)
    return record
