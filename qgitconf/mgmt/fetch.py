"""The ``qgitconf.Fetch`` service in config-mgmt: a target pulls its kept update.

The caller is named by dom0 in ``QREXEC_REMOTE_DOMAIN``; nothing the caller sends is
read (not stdin, not the service argument), so a qube can only ever get the update
published *for itself*.  The update is the exact bytes publish kept, so the target
verifies it like a pushed one (it is signed for that target and sequence; the Fetch
service adds no trust).
"""

from __future__ import annotations

from qgitconf.core.envelope import QUBE_NAME
from qgitconf.errors import ConfigError, NothingToFetchError
from qgitconf.mgmt.publish import update_path
from qgitconf.mgmt.repo import MgmtRepo


def kept_update_for(repo: MgmtRepo, caller: str) -> bytes:
    """Return the update kept for ``caller``.

    Raises:
        NothingToFetchError: ``caller`` is not a target, or nothing is kept for it.
        ConfigError: there is no repository.
    """
    if not QUBE_NAME.fullmatch(caller):
        raise NothingToFetchError("the caller's name is not a qube name")
    repo.require()
    if caller not in repo.targets():
        raise NothingToFetchError(f"nothing published for {caller}")
    try:
        data: bytes = update_path(repo, caller).read_bytes()
        return data
    except FileNotFoundError as e:
        raise NothingToFetchError(f"nothing published for {caller} yet") from e
    except OSError as e:
        raise ConfigError(f"cannot read the kept update for {caller}: {e}") from e
