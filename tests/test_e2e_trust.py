"""DESIGN rule 12 on the real qrexec: what sits in $HOME cannot change verification.

Real qrexec starts ``qgitconf.Receive`` through ``sh -lc`` as the qube's user, so the
user's ``~/.profile`` runs first.  Here personal's home holds everything an earlier
update (or anything else running as the user) could have left to take the agent
over: a ``~/.profile`` that puts ``~/bin`` first on PATH and exports variables that
steer Python, git, gpg and the agent; a ``~/bin/gpg`` that says every signature is
good; a user site-packages ``.pth`` file and a ``sitecustomize`` on the exported
PYTHONPATH.  Each of them would leave a marker file if it ever ran.  Then a forged
update (signed by a key config-mgmt made itself) must still be refused with
``signature-untrusted``, a genuine one still staged, and no marker written.

The same files as an update are refused by the path rules (rule 7): see the last test.
"""

from __future__ import annotations

import pytest

from qgitconf.lab.attacks import restate
from tests.labkit import (
    Lab,
    commit_files,
    kept_update,
    publish,
    qg,
    rejected_log,
    rogue_signer,
    run,
    send,
)
from tests.labkit import target_snapshot as snapshot

MARK = "/home/user/PWNED"

PROFILE = f"""# left by an earlier update
export PATH="$HOME/bin:$HOME/.local/bin:$PATH"
export PYTHONPATH="$HOME/.pyevil"
export PYTHONSTARTUP="$HOME/.pyevil/start.py"
export GNUPGHOME="$HOME/.fake-gnupg"
export GIT_CONFIG_GLOBAL="$HOME/.fake-gitconfig"
export QGITCONF_QUBE_NAME=work
export QGITCONF_SYSCONFDIR="$HOME/.fake-etc"
echo profile >> {MARK}-profile-ran
"""

# A gpg that claims every signature is good, by the pinned key, and exits 0.
FAKE_GPG = f"""#!/bin/sh
echo gpg "$@" >> {MARK}-gpg
echo "[GNUPG:] NEWSIG"
echo "[GNUPG:] GOODSIG 0000000000000000 pinned"
echo "[GNUPG:] VALIDSIG {{fpr}} 2026-01-01 0 4 0 22 10 00 {{fpr}}"
exit 0
"""

PY_MARK = f"import os; open('{MARK}-python', 'a').write('x')\n"

PLANTED = {
    ".profile": PROFILE,
    "bin/gpg": FAKE_GPG,
    "bin/git": f'#!/bin/sh\necho git >> {MARK}-git\nexec /usr/bin/git "$@"\n',
    "bin/qgitconf-service": f"#!/bin/sh\necho svc >> {MARK}-service\n",
    ".local/bin/gpg": FAKE_GPG,
    ".local/lib/python3.11/site-packages/evil.pth": PY_MARK,
    ".local/lib/python3.11/site-packages/usercustomize.py": PY_MARK,
    ".pyevil/sitecustomize.py": PY_MARK,
    ".pyevil/start.py": PY_MARK,
}


def plant(lab: Lab) -> None:
    for rel, text in PLANTED.items():
        text = text.replace("{fpr}", lab.fingerprint)
        mode = 0o755 if rel.startswith(("bin/", ".local/bin/")) else 0o644
        lab.write("personal", rel, text.encode(), mode)


def markers(lab: Lab) -> list[str]:
    home = lab.home("personal")
    return sorted(p.name for p in home.glob("PWNED-*") if p.name != "PWNED-profile-ran")


def test_planted_files_cannot_take_over_verification(lab: Lab) -> None:
    commit_files(lab, "personal", {".gitconfig": "[alias]\n\tst = status\n"}, "first")
    assert publish(lab, "personal")["status"] == "staged"
    plant(lab)
    # The login shell of a qrexec service really reads ~/.profile here.
    run(lab, "personal", "true")
    assert (lab.home("personal") / "PWNED-profile-ran").exists()

    forged = restate(kept_update(lab, "personal"), rogue_signer(lab), sequence=2)
    before = snapshot(lab, "personal")
    status, reply = send(lab, "config-mgmt", "personal", forged)
    assert status == 3 and reply is not None, (status, reply)
    assert reply["reason"] == "signature-untrusted", reply
    after = snapshot(lab, "personal")
    after.pop("PWNED-profile-ran", None)
    before.pop("PWNED-profile-ran", None)
    assert after == before
    assert rejected_log(lab, "personal")[-1]["reason"] == "signature-untrusted"

    # A genuine update is still verified by the real gpg and staged for *personal*.
    commit_files(lab, "personal", {".bashrc": "PS1='$ '\n"}, "second")
    assert publish(lab, "personal")["status"] == "staged"
    qg(lab, "personal", "review")
    qg(lab, "personal", "apply", "--yes", "--overwrite")
    assert markers(lab) == []


@pytest.mark.parametrize(
    "rel",
    [
        "bin/gpg",
        ".local/bin/git",
        "bin/qgitconf-service",
        ".local/lib/python3.11/site-packages/evil.pth",
        ".local/lib/python3.11/site-packages/usercustomize.py",
        ".pam_environment",
    ],
)
def test_update_writing_a_code_loading_path_is_refused(lab: Lab, rel: str) -> None:
    commit_files(lab, "personal", {".gitconfig": "[alias]\n\tst = status\n"}, "first")
    assert publish(lab, "personal")["status"] == "staged"
    before = snapshot(lab, "personal")
    commit_files(lab, "personal", {rel: PY_MARK}, "harmless-looking")
    out = publish(lab, "personal", expect=1)
    assert out["status"] == "rejected" and "unsafe-path" in out["message"], out
    assert snapshot(lab, "personal") == before
