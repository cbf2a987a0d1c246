"""Tests for qgitconf.core.policy and the shipped dom0 policy file."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qgitconf.core.policy import (
    Decision,
    PolicyRule,
    QubeInfo,
    check_policy_file,
    check_policy_filename,
    evaluate,
    load_policy_dir,
    parse_policy_text,
)
from qgitconf.errors import ConfigError, PolicySyntaxError

SHIPPED = Path(__file__).resolve().parent.parent / "policy" / "90-qgitconf.policy"

TAG = "qgitconf-target"
MGMT_TAG = "qgitconf-mgmt"

QUBES: Mapping[str, QubeInfo] = {
    "config-mgmt": QubeInfo("config-mgmt", frozenset({MGMT_TAG})),
    "personal": QubeInfo("personal", frozenset({TAG})),
    "work": QubeInfo("work", frozenset({TAG, "other"})),
    "untrusted": QubeInfo("untrusted"),
    "vault": QubeInfo("vault"),
    "fedora-40": QubeInfo("fedora-40", klass="TemplateVM"),
    "dom0": QubeInfo("dom0", klass="AdminVM"),
}


def _decide(
    rules: list[PolicyRule],
    service: str,
    source: str,
    target: str,
    argument: str = "",
    qubes: Mapping[str, QubeInfo] = QUBES,
) -> Decision:
    return evaluate(
        rules, service=service, argument=argument, source=source, target=target, qubes=qubes
    )


@pytest.fixture(scope="module")
def shipped() -> list[PolicyRule]:
    return parse_policy_text(SHIPPED.read_text(encoding="utf-8"), SHIPPED.name)


def _line_of(service: str) -> int:
    """The line of the shipped file's rule for ``service``."""
    lines = SHIPPED.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith(service + " "))


# --- the shipped policy ----------------------------------------------------------------
# Issue 19.8: the packaged file sits in the 90 tier (packaged defaults), names no qube
# (the management qube carries the qgitconf-mgmt tag), has no catch-all deny lines
# (no match is already a deny; catch-alls shadowed 30-user.policy and Global Config's
# 50-config-* files) and takes `+` (no argument).  Issue 19.9 and 19.10: Fetch and
# Export carry autostart=no.  The rows that were "deny by a catch-all rule" are now
# "deny because nothing matches" (rule None).


def test_shipped_file_checks_clean() -> None:
    assert check_policy_file(SHIPPED) == []


def test_shipped_name_is_the_package_tier() -> None:
    # after 30-user.policy and every 50-config-*.policy, next to 90-default.policy
    names = ["30-user.policy", "50-config-filecopy.policy", "90-default.policy", SHIPPED.name]
    assert sorted(names, key=lambda n: n.encode()) == names
    assert SHIPPED.name == "90-qgitconf.policy"
    assert [p.name for p in SHIPPED.parent.glob("*.policy")] == [SHIPPED.name]


def test_shipped_rules_as_written(shipped: list[PolicyRule]) -> None:
    summary = [
        (r.service, r.argument, r.source, r.target, r.action, dict(r.params)) for r in shipped
    ]
    no_start = {"autostart": "no"}
    assert summary == [
        ("qgitconf.Receive", "+", f"@tag:{MGMT_TAG}", f"@tag:{TAG}", "allow", no_start),
        ("qgitconf.Fetch", "+", f"@tag:{TAG}", f"@tag:{MGMT_TAG}", "allow", no_start),
        ("qgitconf.Export", "+", f"@tag:{MGMT_TAG}", f"@tag:{TAG}", "ask", no_start),
    ]
    assert all(r.filename == SHIPPED.name for r in shipped)


def test_shipped_names_no_qube_and_denies_nothing(shipped: list[PolicyRule]) -> None:
    for r in shipped:
        assert r.action != "deny", r
        assert r.source.startswith("@tag:") and r.target.startswith("@tag:"), r
    assert "config-mgmt" not in "".join(
        line for line in SHIPPED.read_text(encoding="utf-8").splitlines() if line[:1] != "#"
    )


def test_shipped_comments_only_at_line_start() -> None:
    for line in SHIPPED.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            assert "#" not in stripped, line


@pytest.mark.parametrize(
    ("service", "source", "target", "action"),
    [
        ("qgitconf.Receive", "config-mgmt", "personal", "allow"),
        ("qgitconf.Receive", "config-mgmt", "work", "allow"),
        ("qgitconf.Fetch", "personal", "config-mgmt", "allow"),
        ("qgitconf.Fetch", "work", "config-mgmt", "allow"),
        ("qgitconf.Export", "config-mgmt", "personal", "ask"),
    ],
)
def test_shipped_decisions(
    shipped: list[PolicyRule], service: str, source: str, target: str, action: str
) -> None:
    decision = _decide(shipped, service, source, target)
    assert decision.action == action
    assert decision.target == target
    assert decision.rule is not None
    assert decision.rule.lineno == _line_of(service)
    assert decision.params == {"autostart": "no"}


@pytest.mark.parametrize(
    ("service", "source", "target", "argument"),
    [
        ("qgitconf.Receive", "config-mgmt", "personal", "anything"),
        ("qgitconf.Receive", "untrusted", "personal", ""),
        ("qgitconf.Receive", "work", "personal", ""),
        ("qgitconf.Receive", "config-mgmt", "untrusted", ""),
        ("qgitconf.Receive", "config-mgmt", "vault", ""),
        ("qgitconf.Receive", "config-mgmt", "fedora-40", ""),
        ("qgitconf.Fetch", "untrusted", "config-mgmt", ""),
        ("qgitconf.Fetch", "personal", "config-mgmt", "work"),
        ("qgitconf.Fetch", "personal", "work", ""),
        ("qgitconf.Fetch", "personal", "vault", ""),
        ("qgitconf.Export", "config-mgmt", "personal", "x"),
        ("qgitconf.Export", "config-mgmt", "untrusted", ""),
        ("qgitconf.Export", "untrusted", "personal", ""),
        ("qgitconf.Export", "personal", "work", ""),
    ],
)
def test_shipped_denials_are_no_match(
    shipped: list[PolicyRule], service: str, source: str, target: str, argument: str
) -> None:
    assert _decide(shipped, service, source, target, argument) == Decision("deny", target, None, {})


def test_shipped_receive_does_not_autostart(shipped: list[PolicyRule]) -> None:
    decision = _decide(shipped, "qgitconf.Receive", "config-mgmt", "personal")
    assert decision.params == {"autostart": "no"}


def test_shipped_fetch_and_export_do_not_autostart(shipped: list[PolicyRule]) -> None:
    for service, source, target in (
        ("qgitconf.Fetch", "personal", "config-mgmt"),
        ("qgitconf.Export", "config-mgmt", "personal"),
    ):
        assert _decide(shipped, service, source, target).params == {"autostart": "no"}


def test_shipped_management_qube_is_the_tag(shipped: list[PolicyRule]) -> None:
    # Another name, the tag: allowed.  config-mgmt without the tag: denied.
    qubes = dict(QUBES, dotfiles=QubeInfo("dotfiles", frozenset({MGMT_TAG})))
    qubes["config-mgmt"] = QubeInfo("config-mgmt")
    assert _decide(shipped, "qgitconf.Receive", "dotfiles", "personal", qubes=qubes).action == (
        "allow"
    )
    assert _decide(shipped, "qgitconf.Fetch", "personal", "dotfiles", qubes=qubes).action == (
        "allow"
    )
    for service, source, target in (
        ("qgitconf.Receive", "config-mgmt", "personal"),
        ("qgitconf.Fetch", "personal", "config-mgmt"),
        ("qgitconf.Export", "config-mgmt", "personal"),
    ):
        assert _decide(shipped, service, source, target, qubes=qubes).action == "deny"


def test_shipped_leaves_user_rules_in_force(tmp_path: Path) -> None:
    """A rule in 30-user.policy or a 50-config-* file is not shadowed by the package."""
    (tmp_path / SHIPPED.name).write_bytes(SHIPPED.read_bytes())
    (tmp_path / "50-config-qgitconf.policy").write_text(
        "qgitconf.Fetch + @tag:qgitconf-target backup allow\n"
    )
    (tmp_path / "30-user.policy").write_text("qgitconf.Receive + config-mgmt personal deny\n")
    rules = load_policy_dir(tmp_path)
    qubes = dict(QUBES, backup=QubeInfo("backup"))
    assert _decide(rules, "qgitconf.Fetch", "personal", "backup", qubes=qubes).action == "allow"
    assert _decide(rules, "qgitconf.Receive", "config-mgmt", "personal").action == "deny"
    assert _decide(rules, "qgitconf.Receive", "config-mgmt", "work").action == "allow"


@pytest.mark.parametrize(
    ("service", "source", "target"),
    [
        ("qgitconf.Receive", "config-mgmt", "dom0"),
        ("qgitconf.Receive", "config-mgmt", "@adminvm"),
        ("qgitconf.Fetch", "personal", "dom0"),
        ("qgitconf.Receive", "dom0", "personal"),
        ("qubes.Filecopy", "config-mgmt", "personal"),
    ],
)
def test_shipped_no_match_is_deny(
    shipped: list[PolicyRule], service: str, source: str, target: str
) -> None:
    assert _decide(shipped, service, source, target) == Decision("deny", target, None, {})


def test_shipped_untagged_target_is_denied(shipped: list[PolicyRule]) -> None:
    qubes = dict(QUBES, personal=QubeInfo("personal"))
    decision = _decide(shipped, "qgitconf.Receive", "config-mgmt", "personal", qubes=qubes)
    assert decision.action == "deny"
    decision = _decide(shipped, "qgitconf.Fetch", "personal", "config-mgmt", qubes=qubes)
    assert decision.action == "deny"


def test_shipped_unknown_qubes(shipped: list[PolicyRule]) -> None:
    # A target that does not exist: deny without a rule.
    decision = _decide(shipped, "qgitconf.Receive", "config-mgmt", "ghost")
    assert decision == Decision("deny", "ghost", None, {})
    # A source that does not exist matches no @tag rule.
    decision = _decide(shipped, "qgitconf.Fetch", "ghost", "config-mgmt")
    assert decision.action == "deny"


def test_shipped_default_target_is_denied(shipped: list[PolicyRule]) -> None:
    decision = _decide(shipped, "qgitconf.Receive", "config-mgmt", "@default")
    assert decision.action == "deny"


# --- broken lines ----------------------------------------------------------------------

GOOD = "qgitconf.Receive * config-mgmt @tag:qgitconf-target allow"


@pytest.mark.parametrize(
    "line",
    [
        "svc * a b permit",  # unknown action
        "svc * a b Allow",  # actions are case-sensitive
        "svc * a b",  # too few columns
        "svc *",  # too few columns
        "svc",  # too few columns
        "sv/c * a b allow",  # bad service token
        "svc$ * a b allow",  # bad service token
        "svc arg a b allow",  # argument without +
        "svc +a/b a b allow",  # bad argument character
        "* +arg a b allow",  # +arg with service *
        "* + a b allow",  # even the empty argument
        "svc * a! b allow",  # bad source token
        "svc * $anyvm b allow",  # R4.0 syntax
        "svc * @anyvm 1abc allow",  # name must start with a letter
        "svc * @anyvm abcdefghijabcdefghijabcdefghijab allow",  # 32 characters
        "svc * @default b allow",  # @default in source column
        "svc * @dispvm b allow",  # @dispvm in source column
        "svc * @dispvm:x b allow",  # @dispvm:NAME in source column
        "svc * @tag: b allow",  # empty tag
        "svc * @tag:a/b b allow",  # bad tag
        "svc * @type:Appvm b allow",  # unknown type
        "svc * @nothing b allow",  # unknown keyword
        "svc * a @dispvm:1x allow",  # bad disposable template name
        "svc * a b allow foo=bar",  # unknown param
        "svc * a b allow default_target=c",  # ask-only param with allow
        "svc * a b deny target=c",  # deny with target=
        "svc * a b deny user=root",  # deny with user=
        "svc * a b allow notify=true",  # bad boolean
        "svc * a b allow autostart=Yes",  # bad boolean
        "svc * a b allow autostart=",  # bad boolean
        "svc * a b allow target=c target=d",  # duplicate param
        "svc * a b allow target",  # param without =
        "svc * a b allow =c",  # param without key
        "svc * a b allow target=@anyvm",  # target= must be one qube
        "svc * a b allow target=@tag:x",  # target= must be one qube
        "svc * a b allow target=@default",  # target= must be one qube
        "svc * a b ask default_target=@type:AppVM",  # must be one qube
        "svc * a b allow user=",  # empty user
        "svc * a b allow user=a/b",  # bad user
        f"{GOOD} # x",  # inline comment
        f"{GOOD} #x",  # inline comment
        f"{GOOD}\r",  # carriage return
        "svc\u00a0* a b allow",  # non-ASCII whitespace
        "svc * a b allow\x0b",  # vertical tab
        "svc * persönlich b allow",  # non-ASCII name
        "!include /etc/qubes/policy.d/include/x",  # unsupported directive
        "!include-dir /etc/qubes/policy.d/include",  # unsupported directive
        "!compat-4.0",  # unsupported directive
    ],
)
def test_broken_line_rejected(line: str) -> None:
    text = f"# header\n{GOOD}\n{line}\n"
    with pytest.raises(PolicySyntaxError) as info:
        parse_policy_text(text, "50-test.policy")
    err = info.value
    assert err.code == "policy-syntax"
    assert isinstance(err, ConfigError)
    assert err.lineno == 3
    assert err.filename == "50-test.policy"
    assert str(err).startswith("50-test.policy:3: ")


def test_inline_comment_message() -> None:
    with pytest.raises(PolicySyntaxError, match="inline comments"):
        parse_policy_text(f"{GOOD} # why\n", "x.policy")


def test_error_message_escapes_control_characters() -> None:
    with pytest.raises(PolicySyntaxError) as info:
        parse_policy_text("svc * a b \x1b[31mallow\u202e\n", "x.policy")
    assert "\x1b" not in str(info.value)
    assert "\u202e" not in str(info.value)


@pytest.mark.parametrize(
    "line",
    [
        "svc * a b allow",
        "  svc\t*\ta   b  allow  ",
        "* * @anyvm @anyvm deny",
        "svc + a b allow",
        "svc +a.b+c-d_e a b allow",
        "svc * @adminvm dom0 allow",
        "svc * dom0 @adminvm deny notify=yes",
        "svc * @tag:x-y_z @type:TemplateVM allow",
        "svc * @anyvm @default ask default_target=work target=work user=root notify=no",
        "svc * @anyvm @dispvm allow target=@dispvm:fedora-dvm autostart=yes",
        "svc * @anyvm @dispvm:fedora-dvm allow",
        "svc * a b allow target=dom0",
        "svc * a b allow target=@adminvm",
        "# comment",
        "   # indented comment with # inside",
        "",
        " \t ",
    ],
)
def test_good_lines_accepted(line: str) -> None:
    parse_policy_text(f"{line}\n", "ok.policy")


def test_rule_fields_and_params_read_only() -> None:
    [rule] = parse_policy_text("\n\nsvc +x a b ask target=c user=u\n", "f.policy")
    assert rule == PolicyRule(
        "svc", "+x", "a", "b", "ask", {"target": "c", "user": "u"}, "f.policy", 3
    )
    with pytest.raises(TypeError):
        rule.params["target"] = "evil"  # type: ignore[index]
    assert hash(rule) == hash(rule)


def test_parse_reports_first_error() -> None:
    with pytest.raises(PolicySyntaxError) as info:
        parse_policy_text("svc * a b nope\nsvc * a b nope2\n", "f.policy")
    assert info.value.lineno == 1


@given(st.text())
def test_parse_never_raises_anything_else(text: str) -> None:
    try:
        rules = parse_policy_text(text, "fuzz.policy")
    except PolicySyntaxError:
        return
    for rule in rules:
        assert rule.action in {"allow", "deny", "ask"}


_TOKENS = st.sampled_from(
    [
        "*",
        "+",
        "+a",
        "svc",
        "@anyvm",
        "@adminvm",
        "dom0",
        "@default",
        "@dispvm",
        "@tag:t",
        "@type:AppVM",
        "allow",
        "deny",
        "ask",
        "target=a",
        "notify=yes",
        "#",
        "!include",
        "a",
        "=",
        "\t",
        " ",
        "\n",
    ]
)


@given(st.lists(_TOKENS, max_size=20).map(" ".join))
def test_parse_token_soup(text: str) -> None:
    with contextlib.suppress(PolicySyntaxError):
        parse_policy_text(text, "fuzz.policy")


# --- file names and directories --------------------------------------------------------


@pytest.mark.parametrize("name", ["30-qgitconf.policy", "a.policy", "0_x.y-z.policy", "..policy"])
def test_good_filenames(name: str) -> None:
    check_policy_filename(name)


@pytest.mark.parametrize(
    "name",
    [
        "30-QGitConf.policy",
        "30 qgitconf.policy",
        "30-qgitconf.policy~",
        "30-qgitconf.Policy",
        "30-qgitconf",
        ".policy",
        "qgitconf.policy.bak",
        "dir/30-qgitconf.policy",
        "30-qgitconf\u00e9.policy",
        "",
    ],
)
def test_bad_filenames(name: str) -> None:
    with pytest.raises(PolicySyntaxError) as info:
        check_policy_filename(name)
    assert info.value.lineno is None


def test_load_policy_dir_byte_order(tmp_path: Path) -> None:
    (tmp_path / "50-b.policy").write_text("svc * @anyvm @anyvm deny\n")
    (tmp_path / "30-a.policy").write_text("svc * a b allow\n")
    (tmp_path / "30-_.policy").write_text("# only a comment\n")
    (tmp_path / "README").write_text("not a policy file: ignored\n")
    (tmp_path / "30-a.policy.rpmsave").write_text("garbage\n")
    rules = load_policy_dir(tmp_path)
    assert [(r.filename, r.action) for r in rules] == [
        ("30-a.policy", "allow"),
        ("50-b.policy", "deny"),
    ]
    # C-locale: uppercase sorts before lowercase, but such names are rejected.
    (tmp_path / "40-B.policy").write_text("svc * a b allow\n")
    with pytest.raises(PolicySyntaxError):
        load_policy_dir(tmp_path)


def test_load_policy_dir_sorts_bytes_not_locale(tmp_path: Path) -> None:
    (tmp_path / "a-b.policy").write_text("s * x y deny\n")
    (tmp_path / "a.b.policy").write_text("s * x y allow\n")
    (tmp_path / "a_b.policy").write_text("s * x y ask\n")
    names = [r.filename for r in load_policy_dir(tmp_path)]
    assert names == sorted(names, key=lambda n: n.encode())
    assert names == ["a-b.policy", "a.b.policy", "a_b.policy"]


def test_load_policy_dir_with_shipped(tmp_path: Path) -> None:
    (tmp_path / SHIPPED.name).write_bytes(SHIPPED.read_bytes())
    assert len(load_policy_dir(tmp_path)) == 3


def test_load_policy_dir_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "30-x.policy").write_text("ok * a b allow\nbroken\n")
    with pytest.raises(PolicySyntaxError, match=r"30-x\.policy:2: "):
        load_policy_dir(tmp_path)


def test_load_policy_dir_bad_utf8(tmp_path: Path) -> None:
    (tmp_path / "30-x.policy").write_bytes(b"svc * a b allow\n\xff\n")
    with pytest.raises(PolicySyntaxError):
        load_policy_dir(tmp_path)


def test_load_policy_dir_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_policy_dir(tmp_path / "nope")


def test_check_policy_file_collects_problems(tmp_path: Path) -> None:
    path = tmp_path / "30-Bad.policy"
    path.write_text("svc * a b allow\nsvc * a b nope\nsvc * a b allow # c\n")
    problems = check_policy_file(path)
    assert len(problems) == 3
    assert problems[0].startswith("30-Bad.policy: ")
    assert problems[1].startswith("30-Bad.policy:2: ")
    assert problems[2].startswith("30-Bad.policy:3: ")


def test_check_policy_file_unreadable(tmp_path: Path) -> None:
    problems = check_policy_file(tmp_path / "missing.policy")
    assert len(problems) == 1


# --- evaluation ------------------------------------------------------------------------


def _rules(text: str) -> list[PolicyRule]:
    return parse_policy_text(text, "t.policy")


def test_first_match_wins() -> None:
    rules = _rules(
        "svc * personal work deny\nsvc * @anyvm @anyvm allow\nsvc * personal work allow\n"
    )
    decision = _decide(rules, "svc", "personal", "work")
    assert decision.action == "deny"
    assert decision.rule is rules[0]
    decision = _decide(rules, "svc", "untrusted", "work")
    assert decision.action == "allow"
    assert decision.rule is rules[1]


def test_no_match_is_deny() -> None:
    rules = _rules("svc * personal work allow\n")
    assert _decide(rules, "svc", "work", "personal") == Decision("deny", "personal", None, {})
    assert _decide(rules, "other", "personal", "work") == Decision("deny", "work", None, {})
    assert _decide([], "svc", "personal", "work") == Decision("deny", "work", None, {})


def test_argument_matching() -> None:
    rules = _rules(
        "svc +a personal work allow\nsvc + personal work ask\nsvc * personal work deny\n"
    )
    assert _decide(rules, "svc", "personal", "work", "a").action == "allow"
    assert _decide(rules, "svc", "personal", "work", "").action == "ask"
    assert _decide(rules, "svc", "personal", "work", "ab").action == "deny"
    assert _decide(rules, "svc", "personal", "work", "A").action == "deny"


def test_wildcard_service() -> None:
    rules = _rules("* * personal work allow\n")
    assert _decide(rules, "anything", "personal", "work", "x").action == "allow"


def test_anyvm_excludes_dom0() -> None:
    rules = _rules("svc * @anyvm @anyvm allow\nsvc * @anyvm @adminvm ask\nsvc * dom0 @anyvm ask\n")
    assert _decide(rules, "svc", "personal", "work").action == "allow"
    assert _decide(rules, "svc", "personal", "dom0").action == "ask"
    assert _decide(rules, "svc", "personal", "@adminvm").action == "ask"
    assert _decide(rules, "svc", "dom0", "work").rule is rules[2]


def test_dom0_known_without_qubes_entry() -> None:
    rules = _rules("svc * @anyvm dom0 allow\n")
    qubes = {"personal": QubeInfo("personal")}
    assert _decide(rules, "svc", "personal", "@adminvm", qubes=qubes).action == "allow"


def test_tag_and_type_matching() -> None:
    rules = _rules(
        "svc * @tag:other @type:TemplateVM allow\n"
        "svc * @type:AppVM @tag:qgitconf-target ask\n"
        "svc * @type:AdminVM @anyvm allow target=vault\n"
    )
    assert _decide(rules, "svc", "work", "fedora-40").action == "allow"
    assert _decide(rules, "svc", "personal", "fedora-40").action == "deny"
    assert _decide(rules, "svc", "untrusted", "personal").action == "ask"
    assert _decide(rules, "svc", "fedora-40", "personal").action == "deny"
    decision = _decide(rules, "svc", "dom0", "personal")
    assert (decision.action, decision.target) == ("allow", "vault")


def test_target_redirection() -> None:
    rules = _rules(
        "svc * personal @default allow target=work\n"
        "svc * untrusted @default ask default_target=work\n"
        "svc * vault @default allow\n"
        "svc * personal @anyvm ask target=ghost\n"
    )
    decision = _decide(rules, "svc", "personal", "@default")
    assert (decision.action, decision.target) == ("allow", "work")
    assert decision.params == {"target": "work"}
    decision = _decide(rules, "svc", "untrusted", "@default")
    assert (decision.action, decision.target) == ("ask", "@default")
    assert decision.params == {"default_target": "work"}
    # allow without a target for @default cannot be carried out.
    decision = _decide(rules, "svc", "vault", "@default")
    assert decision.action == "deny"
    assert decision.rule is rules[2]
    # redirect to a qube that does not exist.
    decision = _decide(rules, "svc", "personal", "work")
    assert decision.action == "deny"
    assert decision.rule is rules[3]


def test_default_rule_matches_only_default_request() -> None:
    rules = _rules("svc * personal @default allow target=work\n")
    assert _decide(rules, "svc", "personal", "work") == Decision("deny", "work", None, {})


def test_dispvm_targets() -> None:
    rules = _rules("svc * personal @dispvm:fedora-40 allow\nsvc * personal @dispvm allow\n")
    assert _decide(rules, "svc", "personal", "@dispvm:fedora-40").rule is rules[0]
    assert _decide(rules, "svc", "personal", "@dispvm").rule is rules[1]
    assert _decide(rules, "svc", "personal", "@dispvm:ghost") == Decision(
        "deny", "@dispvm:ghost", None, {}
    )


def test_unknown_qubes_match_only_exact_names() -> None:
    rules = _rules("svc * @anyvm @anyvm allow\nsvc * ghost @anyvm ask\n")
    assert _decide(rules, "svc", "ghost", "work").action == "ask"
    assert _decide(rules, "svc", "personal", "ghost") == Decision("deny", "ghost", None, {})
    rules = _rules("svc * personal ghost allow\n")
    assert _decide(rules, "svc", "personal", "ghost").rule is None


def test_deny_keeps_notify_param() -> None:
    rules = _rules("svc * @anyvm @anyvm deny notify=no\n")
    decision = _decide(rules, "svc", "personal", "work")
    assert decision.action == "deny"
    assert decision.params == {"notify": "no"}
