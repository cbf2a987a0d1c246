"""The command tree: the ``qgitconf`` group, its subgroups and where each command sits."""

from __future__ import annotations

import click

from qgitconf import __version__
from qgitconf.cli.apply import apply, restore, revert
from qgitconf.cli.lab import lab_demo, lab_down, lab_run, lab_shell, lab_up
from qgitconf.cli.mgmt import (
    add,
    commit,
    edit,
    import_,
    init,
    layer_add,
    layer_list,
    publish,
    squash,
    target_add,
    target_list,
)
from qgitconf.cli.ops import (
    doctor,
    persist,
    policy_check,
    system_apply,
    system_restore,
    system_revert,
)
from qgitconf.cli.target import (
    diff,
    git,
    log,
    pull,
    review,
    status,
    target_init,
    target_remove,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qgitconf")
@click.option("--debug", is_flag=True, help="Show tracebacks for internal errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Signed, Git-backed dotfiles for Qubes OS qubes.

    In the config-mgmt qube: init, target add, layer add, edit/add/commit, publish,
    status, revert TARGET, squash TARGET, import.  In a target qube: target init, pull, review,
    apply, revert, status, log, git; as root, system apply/revert/restore (files in /etc
    and /usr/local, where dom0 allows them).  Anywhere: lab (Qubes' own qrexec and
    split-GPG on this machine, for trying it out).
    """
    ctx.obj = {"debug": debug}


@cli.group()
def target() -> None:
    """Manage target qubes (add in config-mgmt, init in the target)."""


@cli.group()
def layer() -> None:
    """Manage layers: shared branches merged into the targets that name them."""


@cli.group()
def system() -> None:
    """The root step: system files (/etc, /usr/local) of the staged update.

    Off unless dom0 allows prefixes (qvm-features QUBE
    vm-config.qgitconf-system-paths '/etc/gitconfig /etc/vim/') and pins the key
    (vm-config.qgitconf-key).  Run as root: `sudo qgitconf system apply`, or from dom0
    `qvm-run -u root QUBE 'qgitconf system apply --yes'` (docs/setup.md).
    """


@cli.group()
def policy() -> None:
    """The dom0 qrexec policy (policy/90-qgitconf.policy)."""


@cli.group()
def lab() -> None:
    """A Qubes system on this machine: the real qrexec and split-GPG (root; docs/lab.md)."""


# config-mgmt (cli/mgmt.py)
for command in (init, edit, add, commit, publish, squash, import_):
    cli.add_command(command)
for command in (target_add, target_list):
    target.add_command(command)
for command in (layer_add, layer_list):
    layer.add_command(command)
# a target (cli/target.py, cli/apply.py); status and revert also in config-mgmt
for command in (status, review, diff, log, pull, git, apply, revert, restore):
    cli.add_command(command)
for command in (target_init, target_remove):
    target.add_command(command)
# set-up and diagnostics (cli/ops.py)
for command in (persist, doctor):
    cli.add_command(command)
for command in (system_apply, system_revert, system_restore):
    system.add_command(command)
policy.add_command(policy_check)
# the lab (cli/lab.py)
for command in (lab_up, lab_down, lab_run, lab_shell, lab_demo):
    lab.add_command(command)
