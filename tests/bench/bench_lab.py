"""One-line change, publish -> staged end to end in the lab, against the same flow
done with git and gpg command-line tools (bundle, split-GPG signature, transfer over
the lab's qrexec, verify, fetch, verify-commit).  Medians of 5, the two flows run
alternately so a change in the machine's load hits both alike.

Both transfers go through the lab's ``qrexec-client-vm`` (dom0 policy evaluated from
the policy files), because moving data between qubes costs a qrexec call either way;
the reference's service only stores what it is sent.  Each run starts after a ``sync``
(``paired_medians``), so neither flow pays for the other's writeback.  qgitconf is
byte-compiled first, as an installed package is (the lab runs Python with
``PYTHONDONTWRITEBYTECODE``, so a checkout whose ``.pyc`` files are missing or stale
would be compiled in every process).

Run: ``.venv/bin/python -m tests.bench.bench_lab``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from qgitconf.lab.lab import Lab, init_lab
from tests.bench.common import compile_package, paired_medians, print_rows, row
from tests.labkit import commit_files, publish, qg, run, setup_lab, tip

RUNS = 5
SIG_END = b"-----END PGP SIGNATURE-----\n"
TRANSFER_POLICY = "bench.Transfer  *  config-mgmt  personal  allow\n"
TRANSFER_SERVICE = '#!/bin/sh\nexec cat > "$HOME/u.transfer"\n'


def main() -> int:
    compile_package()
    base = Path(tempfile.mkdtemp(prefix="qgbl-"))
    lab: Lab = init_lab(base / "lab")
    try:
        setup_lab(lab)
        (lab.policy_dir / "20-bench.policy").write_text(TRANSFER_POLICY)
        service = lab.rpc_dir("personal") / "bench.Transfer"
        service.write_text(TRANSFER_SERVICE)
        service.chmod(0o755)
        files: dict[str, str | bytes] = {
            f".config/app/file{i:03d}.conf": f"setting{i} = {i}\n" * 20 for i in range(100)
        }
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

        def bundle(path: Path, revs: str) -> None:
            git_mgmt = ["git", "--git-dir=qgitconf.git"]
            run(lab, "config-mgmt", *git_mgmt, "bundle", "create", "-q", str(path), revs)

        def target_git_cmd(*args: str) -> None:
            run(lab, "personal", "git", "--git-dir", str(target_git), *args)

        def fetch(path: Path) -> None:
            target_git_cmd("fetch", "-q", str(path), "refs/heads/personal:refs/heads/personal")

        bundle0 = lab.home("config-mgmt") / "full.bundle"
        bundle(bundle0, "personal")
        fetch(bundle0)
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
            bundle(b, f"{prev[0]}..personal")
            data = b.read_bytes()
            sig = run(
                lab,
                "config-mgmt",
                "qubes-gpg-client-wrapper",
                "--detach-sign",
                "--armor",
                "--local-user",
                lab.fingerprint,
                input=data,
            ).stdout
            run(
                lab,
                "config-mgmt",
                "qrexec-client-vm",
                "personal",
                "bench.Transfer",
                input=sig + data,
            )
            sent = (lab.home("personal") / "u.transfer").read_bytes()
            cut = sent.index(SIG_END) + len(SIG_END)  # the target splits what it got
            (lab.home("personal") / "u.sig").write_bytes(sent[:cut])
            dst = lab.home("personal") / "u.bundle"
            dst.write_bytes(sent[cut:])
            env_g = ["--homedir", str(gnupg), "--batch"]
            run(lab, "personal", "gpg", *env_g, "--verify", "u.sig", "u.bundle")
            target_git_cmd("bundle", "verify", "-q", str(dst))
            fetch(dst)
            verify = ["git", "--git-dir", str(target_git), "verify-commit", new]
            proc = lab.run("personal", verify, extra_env={"GNUPGHOME": str(gnupg)})
            if proc.returncode != 0:
                raise AssertionError(f"verify-commit failed: {proc.stderr.decode()[-300:]}")
            prev[0] = new

        prev = [first]
        # Alternated, each after its own one-line change (and a sync: both flows write).
        ours_t, ref_t = paired_medians(RUNS, (change, ours), (change, reference))
        r = row(
            "one-line change, publish->staged end to end in the lab",
            ours_t,
            ref_t,
            "s",
            "<= 2.0",
            ours_t / ref_t <= 2.0,
            "reference: git bundle + split-GPG sign + qrexec transfer + gpg verify + bundle "
            "verify + fetch + verify-commit",
        )
        print_rows([r])
    finally:
        lab.close()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
