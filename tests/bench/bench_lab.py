"""One-line change, publish -> staged end to end in the lab, against the same flow
done with git and gpg command-line tools (bundle, split-GPG signature, transfer over
qrexec, verify, fetch, verify-commit).  Medians of 5, the two flows run alternately so
a change in the machine's load hits both alike.

The lab is the real one (:class:`qgitconf.lab.real.RealLab`: Qubes' own qrexec,
policy daemon and split-GPG), and both flows are whole processes as a user runs them,
each started by one ``qrexec-client -d config-mgmt`` from dom0 (as ``qvm-run`` does):

- qgitconf: ``qgitconf publish personal`` in config-mgmt; it signs through split-GPG
  and calls ``qgitconf.Receive`` in personal, where the installed ``qgitconf-service``
  verifies and stages the update before publish returns;
- reference: a shell script in config-mgmt that runs ``git bundle create``, signs the
  bundle through ``qubes-gpg-client-wrapper`` and pipes signature and bundle through
  ``qrexec-client-vm personal bench.Transfer``; that service (a shell script in
  personal, allowed config-mgmt -> personal by its own policy rule) stores what it is
  sent and runs ``gpg --verify``, ``git bundle verify``, ``git fetch`` and
  ``git verify-commit`` there.

So both pay the same qrexec calls (dom0 -> config-mgmt, config-mgmt -> vault for the
signature, config-mgmt -> personal), and the harness checks afterwards, untimed, that
personal holds the new commit.  Each run starts after a ``sync`` (``common.interleaved``).

Needs root and the Qubes sources (docs/lab.md); exits 0 with a note where the lab
cannot run.  Run: ``.venv/bin/python -m tests.bench.bench_lab``.
"""

from __future__ import annotations

import shlex
import statistics
import sys

from qgitconf.lab.build import available
from qgitconf.lab.real import RealLab
from tests.bench.common import interleaved, print_rows, row, spread
from tests.labkit import commit_files, publish, run, setup_lab, tip

RUNS = 5
TRANSFER_POLICY = "bench.Transfer  *  config-mgmt  personal  allow\n"
# personal's side of the reference: store, split at the armored signature's end,
# verify the signature, the bundle, fetch it, verify the fetched commit's signature
TRANSFER_SERVICE = """#!/bin/sh
set -e
cd
cat > u.transfer
n=$(sed '/^-----END PGP SIGNATURE-----$/q' u.transfer | tee u.sig | wc -c)
tail -c +$((n + 1)) u.transfer > u.bundle
gpg --homedir verify-gnupg --batch --quiet --verify u.sig u.bundle 2>/dev/null
git --git-dir plain.git bundle verify -q u.bundle 2>/dev/null
git --git-dir plain.git fetch -q u.bundle refs/heads/personal:refs/heads/personal
GNUPGHOME=$HOME/verify-gnupg git --git-dir plain.git verify-commit refs/heads/personal 2>/dev/null
"""


def reference_script(fingerprint: str, prev: str) -> str:
    """config-mgmt's side of the reference: bundle, split-GPG signature, transfer."""
    fpr, rng = shlex.quote(fingerprint), shlex.quote(f"{prev}..personal")
    return (
        "set -e\n"
        f"git --git-dir=qgitconf.git bundle create -q u.bundle {rng}\n"
        f"qubes-gpg-client-wrapper --detach-sign --armor --local-user {fpr} < u.bundle > u.sig\n"
        "cat u.sig u.bundle | qrexec-client-vm personal bench.Transfer\n"
    )


def install_transfer_service(lab: RealLab) -> None:
    """``bench.Transfer`` in personal and its policy rule in dom0.

    The service goes to personal's ``/run/qubes-rpc`` (first on qrexec-agent's
    service path; a tmpfs in the qube, written as its root), the rule next to the
    project's in dom0's ``/etc/qubes/policy.d``.
    """
    (lab.policy_dir / "20-bench.policy").write_text(TRANSFER_POLICY)
    service = lab.in_root("personal") / "run/qubes-rpc/bench.Transfer"
    service.write_text(TRANSFER_SERVICE)
    service.chmod(0o755)


def main() -> int:
    ok, why = available()
    if not ok:
        print(f"bench_lab: skipped, the lab cannot run here: {why}")
        return 0
    lab = RealLab.boot()
    try:
        setup_lab(lab)
        install_transfer_service(lab)
        files: dict[str, str | bytes] = {
            f".config/app/file{i:03d}.conf": f"setting{i} = {i}\n" * 20 for i in range(100)
        }
        commit_files(lab, "personal", files, "first")
        publish(lab, "personal")
        # the reference's target: a bare repository and a keyring with the vault's key
        run(lab, "personal", "git", "init", "-q", "--bare", "plain.git")
        run(lab, "personal", "sh", "-c", "mkdir -m 700 verify-gnupg")
        for k in sorted((lab.home("personal") / ".config/qgitconf/keys").iterdir()):
            key = f".config/qgitconf/keys/{k.name}"
            run(lab, "personal", "gpg", "--homedir", "verify-gnupg", "--batch", "--import", key)
        first = tip(lab, "personal")
        run(lab, "config-mgmt", "git", "--git-dir=qgitconf.git", "bundle", "create", "-q",
            "full.bundle", "personal")  # fmt: skip
        full = (lab.home("config-mgmt") / "full.bundle").read_bytes()
        run(lab, "personal", "sh", "-c", "cat > full.bundle", input=full)
        run(lab, "personal", "git", "--git-dir", "plain.git", "fetch", "-q", "full.bundle",
            "refs/heads/personal:refs/heads/personal")  # fmt: skip
        counter = [0]
        prev = [first]  # the commit personal's plain.git has
        new = [""]  # the commit the reference's current run sends

        def change() -> None:
            counter[0] += 1
            commit_files(
                lab,
                "personal",
                {".config/app/file001.conf": f"x = {counter[0]}\n"},
                f"change {counter[0]}",
            )

        def ours() -> None:
            status = publish(lab, "personal")["status"]
            if status != "staged":
                raise AssertionError(f"publish: personal answered {status}")

        def check_reference() -> None:
            got = run(lab, "personal", "git", "--git-dir", "plain.git", "rev-parse",
                      "refs/heads/personal").stdout.decode().strip()  # fmt: skip
            if got != new[0]:
                raise AssertionError(f"reference: personal has {got}, not {new[0]}")
            prev[0] = new[0]

        def reference_setup() -> None:
            if new[0]:
                check_reference()  # the previous run's, untimed
            change()
            new[0] = tip(lab, "personal")

        def reference() -> None:
            run(lab, "config-mgmt", "sh", "-c", reference_script(lab.fingerprint, prev[0]))

        # Alternated, each after its own one-line change (and a sync: both flows write).
        t_ours, t_ref = interleaved(RUNS, [(change, ours), (reference_setup, reference)])
        ours_t, ref_t = statistics.median(t_ours), statistics.median(t_ref)
        check_reference()
        r = row(
            "one-line change, publish->staged end to end in the lab",
            ours_t,
            ref_t,
            "s",
            "<= 2.0",
            ours_t / ref_t <= 2.0,
            "real qrexec; reference: git bundle + split-GPG sign + qrexec transfer + gpg "
            "verify + bundle verify + fetch + verify-commit",
            spreads=f"{spread(t_ours)} / {spread(t_ref)}",
        )
        print_rows([r])
    finally:
        lab.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
