"""One-line change, publish -> staged end to end in the lab, against the same flow
done with git and gpg command-line tools (bundle, split-GPG signature, verify, fetch,
verify-commit).  Medians of 5, measured side by side in the same run.

Run: ``.venv/bin/python -m tests.bench.bench_lab``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from qgitconf.lab.lab import Lab, init_lab
from tests.bench.common import median_time, print_rows, row
from tests.labkit import commit_files, publish, qg, run, setup_lab, tip

RUNS = 5


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="qgbl-"))
    lab: Lab = init_lab(base / "lab")
    try:
        setup_lab(lab)
        files = {f".config/app/file{i:03d}.conf": f"setting{i} = {i}\n" * 20 for i in range(100)}
        commit_files(lab, "personal", files, "first")
        publish(lab, "personal")
        target_git = lab.home("personal") / "plain.git"
        run(lab, "personal", "git", "init", "-q", "--bare", str(target_git))
        key = lab.home("personal") / ".config/qgitconf/keys"
        gnupg = lab.home("personal") / "verify-gnupg"
        gnupg.mkdir(mode=0o700)
        for k in key.iterdir():
            run(lab, "personal", "gpg", "--homedir", str(gnupg), "--batch", "--import", str(k))
        first = tip(lab, "personal")
        bundle0 = lab.home("config-mgmt") / "full.bundle"
        run(
            lab,
            "config-mgmt",
            "git",
            "--git-dir=qgitconf.git",
            "bundle",
            "create",
            "-q",
            str(bundle0),
            "personal",
        )
        run(
            lab,
            "personal",
            "git",
            "--git-dir",
            str(target_git),
            "fetch",
            "-q",
            str(bundle0),
            "refs/heads/personal:refs/heads/personal",
        )
        counter = [0]

        def change() -> None:
            counter[0] += 1
            commit_files(
                lab,
                "personal",
                {".config/app/file001.conf": f"x = {counter[0]}\n"},
                f"change {counter[0]}",
            )

        def ours() -> None:
            qg(lab, "config-mgmt", "publish", "personal")

        def reference() -> None:
            new = tip(lab, "personal")
            b = lab.home("config-mgmt") / "u.bundle"
            run(
                lab,
                "config-mgmt",
                "git",
                "--git-dir=qgitconf.git",
                "bundle",
                "create",
                "-q",
                str(b),
                f"{prev[0]}..personal",
            )
            sig = run(
                lab,
                "config-mgmt",
                "qubes-gpg-client-wrapper",
                "--detach-sign",
                "--armor",
                "--local-user",
                lab.fingerprint,
                input=b.read_bytes(),
            ).stdout
            dst = lab.home("personal") / "u.bundle"
            shutil.copyfile(b, dst)  # stands in for the qrexec transfer
            (lab.home("personal") / "u.sig").write_bytes(sig)
            env_g = ["--homedir", str(gnupg), "--batch"]
            run(lab, "personal", "gpg", *env_g, "--verify", "u.sig", "u.bundle")
            run(
                lab,
                "personal",
                "git",
                "--git-dir",
                str(target_git),
                "bundle",
                "verify",
                "-q",
                str(dst),
            )
            run(
                lab,
                "personal",
                "git",
                "--git-dir",
                str(target_git),
                "fetch",
                "-q",
                str(dst),
                "refs/heads/personal:refs/heads/personal",
            )
            run(
                lab,
                "personal",
                "sh",
                "-c",
                f"GNUPGHOME={gnupg} git --git-dir={target_git} verify-commit {new}",
            )
            prev[0] = new

        prev = [first]
        ref_t = median_time(reference, RUNS, setup=change)
        ours()  # catch the agent up on the reference runs' commits (untimed)
        ours_t = median_time(ours, RUNS, setup=change)
        r = row(
            "one-line change, publish->staged end to end in the lab",
            ours_t,
            ref_t,
            "s",
            "<= 2.0",
            ours_t / ref_t <= 2.0,
            "reference: git bundle + split-GPG sign + gpg verify + bundle verify + fetch "
            "+ verify-commit (no qrexec hop)",
        )
        print_rows([r])
    finally:
        lab.close()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
