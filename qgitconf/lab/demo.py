"""``qgitconf lab demo``: the whole story on the real Qubes qrexec and split-GPG.

The lab is :class:`qgitconf.lab.real.RealLab`: Qubes' own qrexec (agent, daemon,
policy daemon, client-vm) and split-GPG, built from the pinned upstream sources and
booted in namespaces.  Every step runs a real command "inside" a qube (``qrexec-client
-d QUBE user:CMD`` from dom0, as ``qvm-run`` does), and every call between qubes goes
through ``qrexec-client-vm`` and dom0's policy.  The demo checks what happened after
each step and exits 0 only if every step behaved as expected.  Where the real lab
cannot run (not root, no sources), it says why and how to get it, and exits non-zero:
there is no simulated fallback.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from qgitconf.errors import QgitconfError
from qgitconf.lab.attacks import resign
from qgitconf.lab.build import available
from qgitconf.lab.real import RealLab
from qgitconf.lab.real_qubes import INCOMING
from qgitconf.lab.real_session import backend_text, unavailable_text

Echo = Callable[[str], None]
ROGUE_HOME = ".rogue-gnupg"  # in config-mgmt: the attacker's own key, no vault


class StepFailed(Exception):
    pass


class Story:
    def __init__(self, lab: RealLab, echo: Echo) -> None:
        self.lab = lab
        self.echo = echo
        self.step_no = 0

    def step(self, title: str) -> None:
        self.step_no += 1
        self.echo(f"\n== {self.step_no}. {title}")

    def run(
        self,
        qube: str,
        cmd: Sequence[str],
        *,
        expect: int = 0,
        show: bool = True,
        input: bytes | None = None,
        user: str = "user",
    ) -> str:
        shown = shlex.join(cmd) + (" < update" if input is not None else "")
        self.echo(f"[{qube}]{'#' if user == 'root' else '$'} {shown}")
        proc = self.lab.run(qube, cmd, input=input, user=user)
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        if show or proc.returncode != expect:
            for line in (out + err).rstrip().splitlines():
                self.echo(f"    {line}")
        if proc.returncode != expect:
            raise StepFailed(f"`{shown}` in {qube} exited {proc.returncode}, expected {expect}")
        return out

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            raise StepFailed(what)
        self.echo(f"    ok: {what}")

    def write(self, qube: str, rel: str, text: str) -> None:
        """What the user types into a file in ``qube`` (owned by the qube's user)."""
        self.lab.write(qube, rel, text.encode())

    def read(self, qube: str, rel: str) -> bytes:
        """A file in ``qube``'s home, read through qrexec (``cat`` as the qube's user)."""
        proc = self.lab.run(qube, ["cat", "--", rel])
        if proc.returncode != 0:
            raise StepFailed(f"cannot read {rel} in {qube}: {proc.stderr.decode(errors='replace')}")
        return proc.stdout


def _reply(out: str) -> dict[str, object]:
    return dict(json.loads(out.strip().splitlines()[-1]))


UPDATES = "qgitconf.git/qgitconf/updates"


def story(s: Story) -> None:
    fpr = s.lab.fingerprint
    s.step("config-mgmt: a bare repo whose commits are signed through split-GPG")
    s.run("config-mgmt", ["cat", "/rw/config/gpg-split-domain"])
    s.run("config-mgmt", ["qgitconf", "init", "--signing-key", fpr])
    s.run("config-mgmt", ["git", "--git-dir=qgitconf.git", "config", "gpg.program"])
    s.run("config-mgmt", ["qgitconf", "target", "add", "personal"])
    s.run("config-mgmt", ["qgitconf", "target", "add", "work"])

    s.step("personal and work: pin the vault's key and the source qube")
    for q in ("personal", "work"):
        s.run(
            q,
            ["qgitconf", "target", "init", "--source", "config-mgmt", "--key-file", INCOMING,
             "--fingerprint", fpr],
        )  # fmt: skip

    s.step("config-mgmt: commit a .gitconfig and a .bashrc for personal (signed in the vault)")
    s.write("config-mgmt", "dotfiles/.gitconfig", "[alias]\n\tst = status\n\tco = checkout\n")
    s.write("config-mgmt", "dotfiles/.bashrc", "PS1='\\u@personal \\w\\$ '\n")
    s.run(
        "config-mgmt", ["qgitconf", "add", "personal", "dotfiles/.gitconfig", "--as", ".gitconfig"]
    )
    s.run("config-mgmt", ["qgitconf", "add", "personal", "dotfiles/.bashrc", "--as", ".bashrc"])
    s.run("config-mgmt", ["qgitconf", "commit", "personal", "-m", "git aliases and a prompt"])
    out = s.run(
        "config-mgmt",
        ["git", "--git-dir=qgitconf.git", "log", "--show-signature", "-1", "--format=%h %s",
         "personal"],
    )  # fmt: skip
    s.check(
        "Good signature" in out and fpr in out,
        "signed in the vault over qubes.Gpg, and verified there (qubes-gpg-client-wrapper)",
    )

    s.step("publish to personal over qrexec (qgitconf.Receive)")
    s.run("config-mgmt", ["qgitconf", "publish", "personal"])
    first_update = s.read("config-mgmt", f"{UPDATES}/personal.update")

    s.step("personal: review what arrived (signer, changes, diff)")
    s.run("personal", ["qgitconf", "review"])

    s.step("personal: apply (a .gitconfig qgitconf never wrote is in the way)")
    original = s.read("personal", ".gitconfig")
    s.run("personal", ["qgitconf", "apply", "--yes"], expect=1)
    s.check(
        s.read("personal", ".gitconfig") == original,
        "nothing was written; the existing .gitconfig is untouched",
    )
    s.run("personal", ["qgitconf", "apply", "--yes", "--overwrite"])
    s.check(
        s.read("personal", ".gitconfig").startswith(b"[alias]"), ".gitconfig is in personal's home"
    )

    s.step("change the prompt, publish again (incremental update)")
    s.write(
        "config-mgmt", "dotfiles/.bashrc", "PS1='\\[\\e[32m\\]\\u@personal\\[\\e[0m\\] \\w\\$ '\n"
    )
    s.run("config-mgmt", ["qgitconf", "add", "personal", "dotfiles/.bashrc", "--as", ".bashrc"])
    s.run("config-mgmt", ["qgitconf", "commit", "personal", "-m", "green prompt"])
    out = s.run("config-mgmt", ["qgitconf", "publish", "personal", "--json"])
    size = json.loads(out)[0]["bytes"]
    s.check(size < 4096, f"the update for a one-line change is {size} bytes")
    s.run("personal", ["qgitconf", "review"])
    s.run("personal", ["qgitconf", "apply", "--yes"])
    s.check(b"32m" in s.read("personal", ".bashrc"), "the new prompt is applied")

    s.step("personal: revert to the previous generation")
    s.run("personal", ["qgitconf", "revert"])
    s.check(b"32m" not in s.read("personal", ".bashrc"), "the old prompt is back")
    s.run("personal", ["qgitconf", "log"])
    s.run("personal", ["qgitconf", "revert", "--to", "0"])
    s.check(
        s.read("personal", ".gitconfig") == original,
        "generation 0: the original .gitconfig is back byte for byte",
    )
    s.run("personal", ["qgitconf", "revert"])
    s.check(
        b"32m" not in s.read("personal", ".bashrc"),
        "a revert is itself reverted: the managed files are back",
    )

    s.step("personal: the agent repository's history, signed by the vault's key")
    out = s.run("personal", ["qgitconf", "git", "log", "--show-signature", "--format=%h %s"])
    s.check(
        out.count("Good signature") >= 2 and out.count(f"key {fpr}") == out.count("Signature made"),
        f"git: every commit is signed by the vault's key {fpr} (checked against the pin)",
    )
    s.check(
        not (s.lab.home("personal") / ".gnupg").exists(),
        "no ~/.gnupg was made for it: qgitconf git verifies with the pinned key only",
    )

    s.step("attack: the untrusted qube calls qgitconf.Receive in personal")
    before = s.read("personal", ".gitconfig")
    s.run(
        "untrusted",
        ["qrexec-client-vm", "personal", "qgitconf.Receive"],
        input=first_update,
        expect=126,
    )
    s.check(
        s.read("personal", ".gitconfig") == before,
        "denied by the dom0 policy (exit 126); personal unchanged",
    )

    s.step("attack: config-mgmt (compromised, no vault) signs an update with its own key")
    s.run("config-mgmt", ["mkdir", "-m", "700", ROGUE_HOME])
    s.run(
        "config-mgmt",
        ["gpg", "--homedir", ROGUE_HOME, "--batch", "--no-tty", "--passphrase", "",
         "--quick-gen-key", "Rogue <rogue@lab.invalid>", "ed25519", "sign", "never"],
        show=False,
    )  # fmt: skip

    def rogue_sign(data: bytes) -> bytes:
        proc = s.lab.run(
            "config-mgmt",
            ["gpg", "--homedir", ROGUE_HOME, "--batch", "--armor", "--detach-sign",
             "--local-user", "rogue@lab.invalid"],
            input=data,
        )  # fmt: skip
        if proc.returncode != 0:
            raise StepFailed(f"the rogue signature failed: {proc.stderr.decode(errors='replace')}")
        return proc.stdout

    forged = resign(first_update, rogue_sign)
    out = s.run(
        "config-mgmt", ["qrexec-client-vm", "personal", "qgitconf.Receive"], input=forged, expect=3
    )
    s.check(_reply(out).get("reason") == "signature-untrusted", "rejected: signature-untrusted")

    s.step("attack: config-mgmt replays the first (genuinely signed) update")
    out = s.run(
        "config-mgmt",
        ["qrexec-client-vm", "personal", "qgitconf.Receive"],
        input=first_update,
        expect=3,
    )
    s.check(_reply(out).get("reason") == "rollback", "rejected: rollback")

    s.step("attack: an update signed for work is sent to personal")
    s.write("config-mgmt", "dotfiles/work.gitconfig", "[user]\n\temail = me@work.example\n")
    s.run(
        "config-mgmt", ["qgitconf", "add", "work", "dotfiles/work.gitconfig", "--as", ".gitconfig"]
    )
    s.run("config-mgmt", ["qgitconf", "commit", "work", "-m", "work identity"])
    s.run("config-mgmt", ["qgitconf", "publish", "work"])
    work_update = s.read("config-mgmt", f"{UPDATES}/work.update")
    before_files = {rel: s.read("personal", rel) for rel in (".gitconfig", ".bashrc")}
    out = s.run(
        "config-mgmt",
        ["qrexec-client-vm", "personal", "qgitconf.Receive"],
        input=work_update,
        expect=3,
    )
    s.check(_reply(out).get("reason") == "wrong-target", "rejected: wrong-target")
    after_files = {rel: s.read("personal", rel) for rel in before_files}
    s.check(
        after_files == before_files and b"work.example" not in after_files[".gitconfig"],
        "personal's home is unchanged",
    )

    s.step("a file outside /home: dom0 allows /etc/vim/ in personal; root applies it")
    for key, value in (("qgitconf-system-paths", "/etc/vim/"), ("qgitconf-key", fpr)):
        s.echo(f"[dom0]$ qvm-features personal vm-config.{key} {value}")
        s.lab.set_qubesdb("personal", f"/vm-config/{key}", value)
    s.write("config-mgmt", "dotfiles/vimrc.local", "set nocompatible\nsyntax on\n")
    s.run(
        "config-mgmt",
        [
            "qgitconf",
            "add",
            "personal",
            "dotfiles/vimrc.local",
            "--as",
            "system/etc/vim/vimrc.local",
        ],
    )
    s.run("config-mgmt", ["qgitconf", "commit", "personal", "-m", "system-wide vim settings"])
    s.run("config-mgmt", ["qgitconf", "publish", "personal"])
    s.run("personal", ["qgitconf", "apply", "--yes"])
    s.check(not (s.lab.home("personal") / "system").exists(), "the home apply leaves system/ alone")
    s.run("personal", ["qgitconf", "system", "apply", "--yes"], user="root")
    s.echo("[dom0]$ qvm-shutdown --wait personal && qvm-start personal")
    s.lab.reboot("personal")
    s.check(
        s.run("personal", ["cat", "/etc/vim/vimrc.local"], show=False).startswith("set nocompat"),
        "after a reboot /etc/vim/vimrc.local is still there (bind-dirs from /rw)",
    )

    s.step("config-mgmt: status as the targets reported it")
    s.run("config-mgmt", ["qgitconf", "status"])


def run_demo(directory: Path | None, echo: Echo, echo_err: Echo | None = None) -> int:
    """Run the story on a freshly booted real lab; return the exit status.

    ``directory``: where the lab's run tree goes (kept afterwards, for a look at the
    qubes' homes); by default a temporary one that is removed.
    """
    ok, why = available()
    if not ok:
        (echo_err or echo)(unavailable_text(why))
        return 1
    t0 = time.monotonic()
    echo("booting the lab: dom0, vault, config-mgmt, personal, work, untrusted ...")
    try:
        lab = RealLab.boot(directory)
    except QgitconfError as e:
        (echo_err or echo)(f"the real lab did not boot: {e.detail}")
        return 1
    echo(f"backend: {backend_text(lab)}")
    echo(f"booted in {lab.boot_seconds:.1f} s in {lab.root}; vault key {lab.fingerprint}")
    s = Story(lab, echo)
    try:
        story(s)
    except (StepFailed, QgitconfError) as e:
        echo(f"\nDEMO FAILED at step {s.step_no}: {e}")
        echo(f"(backend: {backend_text(lab)})")
        return 1
    finally:
        lab.close(keep=directory is not None)
    echo(
        f"\nDemo complete: all {s.step_no} steps behaved as expected, in"
        f" {time.monotonic() - t0:.0f} s, on the {backend_text(lab)}."
    )
    return 0
