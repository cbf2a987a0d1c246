"""``qgitconf pull``: fetch the update kept for this qube from its source and stage it.

For qubes that were not running when config-mgmt published.  The call goes through
the one transport seam to ``qgitconf.Fetch`` in the configured source qube (dom0
policy decides; the source answers for the calling qube only).  What comes back is
read up to the bundle cap plus the fixed envelope caps and handed to
``accept_update`` with the configured source as sender: exactly the code path of
``qgitconf.Receive``.

The shipped policy allows Fetch with ``autostart=no`` (``policy/90-qgitconf.policy``):
a pull timer never boots the management qube.  Real ``qrexec-client-vm`` answers a
call to a halted qube the policy does not start exactly as a denied call (exit 126,
``Request refused``; qubes-core-qrexec ``qrexec/policy/parser.py``, ``autostart``),
so a refusal is reported as "the source is off" (:class:`SourceOffError`, code
``source-off``), naming the policy as the other possible cause.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

from qgitconf.agent.autoapply import after_staging
from qgitconf.agent.config import load_target_config
from qgitconf.agent.receive import Outcome, accept_update
from qgitconf.errors import EXIT_FAILURE, SourceOffError, TransportError
from qgitconf.limits import MAX_HEADER_LINE, MAX_SIGNATURE_BYTES, MAX_STATEMENT_BYTES
from qgitconf.qubes.qrexec import QREXEC_REFUSED, Transport
from qgitconf.sanitize import sanitize

FETCH = "qgitconf.Fetch"
NOTHING_KEPT = EXIT_FAILURE  # the Fetch service's exit status for "nothing published"


def pull(home: Path, env: Mapping[str, str], transport: Transport) -> Outcome | None:
    """Fetch this qube's kept update from its source qube, verify and stage it.

    Returns:
        What ``accept_update`` did, or None when the source has nothing for this qube.

    Raises:
        SourceOffError: qrexec refused the call: the source qube is not running (the
            policy does not start it), or the policy denies this qube.
        TransportError: the source has nothing for this qube or the call failed.
        TooLargeError: the answer is larger than the limits allow.
        QgitconfError: whatever ``accept_update`` raises for a rejected update.
    """
    cfg = load_target_config(home, env)
    cap = cfg.limits.max_bundle_bytes + MAX_STATEMENT_BYTES + MAX_SIGNATURE_BYTES
    cap += 4 * MAX_HEADER_LINE
    result = transport.call(cfg.source, FETCH, b"", cap)
    if result.status == QREXEC_REFUSED and not result.stdout:
        raise SourceOffError(
            f"{cfg.source} is off: qrexec refused {FETCH} (the policy does not start "
            f"{cfg.source}), or the policy denies this qube (is it tagged "
            f"qgitconf-target?); start {cfg.source} and run `qgitconf pull` again"
        )
    if result.status == NOTHING_KEPT and not result.stdout:
        return None  # the source has nothing for this qube (yet): not an error
    if result.status != 0 or not result.stdout:
        said = sanitize(result.stderr[-300:].strip() or b"no answer")
        raise TransportError(
            f"{cfg.source} sent no update (exit {result.status}): {said}", code="nothing-fetched"
        )
    outcome = accept_update(io.BytesIO(result.stdout), cfg.source, home, env)
    after_staging(home, env, outcome)  # as the Receive service: auto-apply, notify
    return outcome
