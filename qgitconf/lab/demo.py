"""``qgitconf lab demo``: the whole story in a fresh lab, then the attacks.

Every step runs real commands "inside" the simulated qubes (``Lab.run``) and checks
what happened; the demo exits 0 only if every step behaved as expected.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from qgitconf.lab.attacks import resign
from qgitconf.lab.lab import KEY_FILE, Lab, init_lab, make_key

Echo = Callable[[str], None]
INCOMING = f"QubesIncoming/vault/{KEY_FILE}"


class StepFailed(Exception):
    pass


class Story:
    def __init__(self, lab: Lab, echo: Echo) -> None:
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
    ) -> str:
        shown = " ".join(cmd) + (" < update" if input is not None else "")
        self.echo(f"[{qube}]$ {shown}")
        proc = self.lab.run(qube, cmd, input=input)
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        if show:
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
        path = self.lab.home(qube) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _reply(out: str) -> dict[str, object]:
    return dict(json.loads(out.strip().splitlines()[-1]))


def story(s: Story) -> None:
    lab, fpr = s.lab, s.lab.fingerprint
    s.step("config-mgmt: a bare repo whose commits are signed through split-GPG")
    s.run("config-mgmt", ["qgitconf", "init", "--signing-key", fpr])
    s.run("config-mgmt", ["qgitconf", "target", "add", "personal"])
    s.run("config-mgmt", ["qgitconf", "target", "add", "work"])

    s.step("personal and work: pin the vault's key and the source qube")
    for q in ("personal", "work"):
        s.run(
            q,
            [
                "qgitconf",
                "target",
                "init",
                "--source",
                "config-mgmt",
                "--key-file",
                INCOMING,
                "--fingerprint",
                fpr,
            ],
        )

    s.step("config-mgmt: commit a .gitconfig and a .bashrc for personal")
    s.write("config-mgmt", "dotfiles/.gitconfig", "[alias]\n\tst = status\n\tco = checkout\n")
    s.write("config-mgmt", "dotfiles/.bashrc", "PS1='\\u@personal \\w\\$ '\n")
    s.run(
        "config-mgmt", ["qgitconf", "add", "personal", "dotfiles/.gitconfig", "--as", ".gitconfig"]
    )
    s.run("config-mgmt", ["qgitconf", "add", "personal", "dotfiles/.bashrc", "--as", ".bashrc"])
    s.run("config-mgmt", ["qgitconf", "commit", "personal", "-m", "git aliases and a prompt"])
    s.run(
        "config-mgmt",
        [
            "git",
            "--git-dir=qgitconf.git",
            "log",
            "--show-signature",
            "-1",
            "--format=%h %s",
            "personal",
        ],
    )

    s.step("publish to personal over qrexec")
    s.run("config-mgmt", ["qgitconf", "publish", "personal"])
    first_update = (
        lab.home("config-mgmt") / "qgitconf.git/qgitconf/updates/personal.update"
    ).read_bytes()

    s.step("personal: review what arrived (signer, changes, diff)")
    s.run("personal", ["qgitconf", "review"])

    s.step("personal: apply (a .gitconfig qgitconf never wrote is in the way)")
    original = (lab.home("personal") / ".gitconfig").read_bytes()
    s.run("personal", ["qgitconf", "apply", "--yes"], expect=1)
    s.check(
        (lab.home("personal") / ".gitconfig").read_bytes() == original,
        "nothing was written; the existing .gitconfig is untouched",
    )
    s.run("personal", ["qgitconf", "apply", "--yes", "--overwrite"])
    s.check(
        (lab.home("personal") / ".gitconfig").read_text().startswith("[alias]"),
        ".gitconfig is in personal's home",
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
    s.check("32m" in (lab.home("personal") / ".bashrc").read_text(), "the new prompt is applied")

    s.step("personal: revert to the previous generation")
    s.run("personal", ["qgitconf", "revert"])
    s.check("32m" not in (lab.home("personal") / ".bashrc").read_text(), "the old prompt is back")
    s.run("personal", ["qgitconf", "log"])
    s.run("personal", ["qgitconf", "revert", "--to", "0"])
    s.check(
        (lab.home("personal") / ".gitconfig").read_bytes() == original,
        "generation 0: the original .gitconfig is back byte for byte",
    )
    s.run("personal", ["qgitconf", "revert"])
    s.check(
        "32m" not in (lab.home("personal") / ".bashrc").read_text(),
        "a revert is itself reverted: the managed files are back",
    )

    s.step("attack: the untrusted qube calls qgitconf.Receive in personal")
    s.run(
        "untrusted",
        ["qrexec-client-vm", "personal", "qgitconf.Receive"],
        input=first_update,
        expect=126,
    )
    s.check(True, "denied by the dom0 policy (exit 126)")

    s.step("attack: config-mgmt (compromised, no vault) signs an update with its own key")
    rogue_home = lab.home("config-mgmt") / ".rogue-gnupg"
    rogue = make_key(rogue_home, "Rogue <rogue@lab.invalid>")

    def rogue_sign(data: bytes) -> bytes:
        return subprocess.run(
            [
                "gpg",
                "--homedir",
                str(rogue_home),
                "--batch",
                "--armor",
                "--detach-sign",
                "--local-user",
                rogue,
            ],
            input=data,
            capture_output=True,
            check=True,
        ).stdout

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
    work_update = (
        lab.home("config-mgmt") / "qgitconf.git/qgitconf/updates/work.update"
    ).read_bytes()
    out = s.run(
        "config-mgmt",
        ["qrexec-client-vm", "personal", "qgitconf.Receive"],
        input=work_update,
        expect=3,
    )
    s.check(_reply(out).get("reason") == "wrong-target", "rejected: wrong-target")
    s.check(
        "work.example" not in (lab.home("personal") / ".gitconfig").read_text(),
        "personal's home is unchanged",
    )

    s.step("config-mgmt: status as the targets reported it")
    s.run("config-mgmt", ["qgitconf", "status"])


def run_demo(directory: Path | None, echo: Echo) -> int:
    """Run the story in ``directory`` (a fresh temporary one by default); return the exit code."""
    tmp = None
    if directory is None:
        tmp = Path(tempfile.mkdtemp(prefix="qgitconf-lab-"))
        directory = tmp / "lab"
    echo(f"building a simulated Qubes in {directory} ...")
    lab = init_lab(directory)
    s = Story(lab, echo)
    try:
        story(s)
    except StepFailed as e:
        echo(f"\nDEMO FAILED at step {s.step_no}: {e}")
        return 1
    finally:
        lab.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    echo(f"\nDemo complete: all {s.step_no} steps behaved as expected.")
    return 0
