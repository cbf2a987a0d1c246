"""Apply trusts Receive's path-rule check only for the very tree, rules and code (issue 21).

Receive records in the staged state the tree id whose every path passed the path rules
(rule 7) and the digest of those rules; apply checks a tree again unless it is that
tree under the same digest.  These tests count the checks apply makes and show that
anything else - other settings, another tree, a revert, a forged or damaged record,
the root step - is checked again, with the same verdict as before.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from qgitconf.agent import wanted as wanted_module
from qgitconf.agent.state import AgentState, state_dir
from qgitconf.core.paths import PathRules
from qgitconf.core.pathtree import rules_digest
from qgitconf.core.systemrules import SystemRules
from qgitconf.errors import UnsafePathError
from qgitconf.limits import Limits
from tests.hostile.corpus import MODE_FILE, World, build_world
from tests.test_apply import Target

FILES = {".config/app/a.conf": (MODE_FILE, b"a = 1\n"), ".bashrc": (MODE_FILE, b"# rc\n")}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("checked-world"))


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times apply ran the path rules over a tree."""
    calls: list[int] = []
    real = wanted_module.check_tree

    def counting(entries: Any, rules: PathRules) -> list[str]:
        calls.append(1)
        return real(entries, rules)

    monkeypatch.setattr(wanted_module, "check_tree", counting)
    return calls


def _state(t: Target) -> AgentState:
    return AgentState(state_dir(t.home))


def _edit_staged(t: Target, **checked: Any) -> None:
    state = _state(t)
    data = state.load()
    data["staged"]["checked"] = checked
    state.save(data)


def test_receive_records_the_tree_and_the_rules_it_checked(world: World, tmp_path: Path) -> None:
    t = Target(world, tmp_path / "t")
    t.stage(FILES)
    checked = _state(t).load()["staged"]["checked"]
    assert re.fullmatch(r"[0-9a-f]{40}", checked["tree"])
    assert re.fullmatch(r"[0-9a-f]{64}", checked["rules"])


def test_apply_of_the_staged_tree_does_not_check_it_again(
    world: World, tmp_path: Path, checks: list[int]
) -> None:
    t = Target(world, tmp_path / "t")
    t.stage(FILES)
    rec = t.apply()
    assert checks == []
    assert sorted(rec["written"]) == sorted(FILES)


def test_narrower_allowlist_after_receive_is_checked_and_refused(
    world: World, tmp_path: Path, checks: list[int]
) -> None:
    """The user narrows ``allow`` after the update was staged: apply checks the tree
    again with the new rules and refuses it, writing nothing."""
    t = Target(world, tmp_path / "t")
    t.stage(FILES)
    toml = t.home / ".config/qgitconf/target.toml"
    text = toml.read_text()
    toml.write_text(re.sub(r"(?m)^allow = .*$", 'allow = [".bashrc"]', text))
    before = (t.home / ".bashrc").read_bytes() if (t.home / ".bashrc").exists() else None
    with pytest.raises(UnsafePathError):
        t.apply()
    assert checks == [1]
    after = (t.home / ".bashrc").read_bytes() if (t.home / ".bashrc").exists() else None
    assert after == before
    assert not (t.home / ".config/app").exists()


@pytest.mark.parametrize(
    "checked",
    [
        {"tree": "0" * 40},  # another tree
        {"tree": None},
        {},
        "not a mapping",
    ],
)
def test_a_record_for_another_tree_or_a_damaged_one_means_a_check(
    world: World, tmp_path: Path, checks: list[int], checked: Any
) -> None:
    t = Target(world, tmp_path / "t")
    t.stage(FILES)
    state = _state(t)
    data = state.load()
    if isinstance(checked, dict) and checked:
        checked = {**data["staged"]["checked"], **checked}
    data["staged"]["checked"] = checked
    state.save(data)
    t.apply()
    assert checks == [1]


def test_a_record_with_other_rules_means_a_check(
    world: World, tmp_path: Path, checks: list[int]
) -> None:
    t = Target(world, tmp_path / "t")
    t.stage(FILES)
    tree = _state(t).load()["staged"]["checked"]["tree"]
    _edit_staged(t, tree=tree, rules=rules_digest(PathRules(allow=("**",))))
    t.apply()
    assert checks == [1]


def test_revert_to_an_older_generation_checks_its_tree(
    world: World, tmp_path: Path, checks: list[int]
) -> None:
    t = Target(world, tmp_path / "t")
    t.stage(FILES)
    t.apply()
    t.stage({".bashrc": (MODE_FILE, b"# rc 2\n")})
    t.apply()
    assert checks == []
    t.revert(to=1)
    assert checks == [1]


def test_the_root_step_always_checks(world: World, tmp_path: Path, checks: list[int]) -> None:
    """``wanted_tree(system=True)`` (the root step) never takes the user's record."""
    t = Target(world, tmp_path / "t")
    commit = t.stage(FILES)
    state = _state(t)
    wanted_module.wanted_tree(state, commit, PathRules(), Limits(), system=True)
    assert checks == [1]


def test_rules_digest_follows_every_setting() -> None:
    base = rules_digest(PathRules())
    assert base is not None
    others = [
        PathRules(allow=(".bashrc",)),
        PathRules(max_path_bytes=100),
        PathRules(max_depth=3),
        PathRules(system=SystemRules(("etc/gitconfig",))),
    ]
    digests = {rules_digest(r) for r in others}
    assert base not in digests and len(digests) == len(others)
    assert rules_digest(PathRules()) == base


def test_state_json_record_is_plain_json(world: World, tmp_path: Path) -> None:
    t = Target(world, tmp_path / "t")
    t.stage(FILES)
    raw = json.loads((state_dir(t.home) / "state.json").read_text())
    assert set(raw["staged"]["checked"]) == {"tree", "rules"}


def test_the_digest_covers_every_rule_module() -> None:
    """Every module of the package that the tree check imports, directly or not, is hashed
    into the digest, but the error hierarchy and the sanitiser, which shape messages,
    not verdicts."""
    import grimp

    from qgitconf.core import pathtree

    graph = grimp.build_graph("qgitconf")
    used = graph.find_upstream_modules("qgitconf.core.pathtree") | {"qgitconf.core.pathtree"}
    hashed = {m.__name__ for m in pathtree.RULE_MODULES}
    assert used - {"qgitconf.errors", "qgitconf.sanitize", "qgitconf.core"} == hashed
