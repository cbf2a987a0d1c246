"""The risk report: changes that can run code or redirect trust (DESIGN "Review and risks").

Pure: it takes the changed files of an update (path, old and new git mode, old and new
content or symlink target) and, optionally, the rest of the new tree (:class:`Tree`:
every path's mode, the symlinks, and the text of the git and ssh config files), and
returns findings.  It does no I/O, reads no clock and no environment, so it can be
tested with a table and called from Receive (auto-apply), ``review``, the GUI,
``apply --interactive`` and ``import --review`` alike.

How a path is judged (``docs/risks.md`` documents each rule):

1. Every name the file has in the new tree counts: its own path and every path that
   reaches it through symlinks (``bin/git -> ../tools/g`` makes ``tools/g`` a file on
   ``$PATH``), and every file a git ``include.path``/``includeIf`` or an ssh ``Include``
   points to is git or ssh config.
2. Each name is looked up in :data:`FILE_CLASSES` (program -> file patterns -> what in
   the file runs code).  A file that is code (shell startup, vimrc, units...) gets one
   finding for the file; a file with a format we parse gets a finding per added key or
   line that runs code (git config, ssh config, npmrc, cargo...).
3. A file in a place programs load configuration from (a top-level dotfile or dot
   directory, ``.config/**``, ``.local/share/**``, ``.ssh/**``) that no class claims is
   ``unclassified-config`` (high): we cannot tell that it does not run code, so
   auto-apply refuses it.  Plain data elsewhere (``notes/todo.txt``) is not flagged.
4. Content rules run on any bytes: content is decoded leniently (invalid UTF-8 bytes
   become lone surrogates), because git, ssh and vim read such files fine.  A NUL or
   invalid byte adds ``binary-file``; it never hides a line from the rules.

Rules look only at *added or changed* lines (a line diff of old against new; for git
config, the entries of the new file that the old file did not have).  Deleting lines
never produces a finding.  A file that becomes reachable under a new name in this update
(a new symlink, a new include) is judged as a whole.

Severities: ``high`` - runs code or redirects trust without the user doing anything
unusual, or cannot be classified (auto-apply never applies these); ``medium`` - runs code
when the user invokes something, or weakens a safeguard; ``low`` - worth a look.

Everything a finding carries for display (path, excerpt) is passed through
:func:`~qgitconf.sanitize.sanitize` (rule 11).
"""

from __future__ import annotations

import bisect
import difflib
import functools
import posixpath
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qgitconf.limits import MAX_RISK_CONFIG_BYTES, MAX_RISK_CONFIG_TEXTS, MAX_RISK_DIFF_LINES
from qgitconf.sanitize import sanitize

__all__ = [
    "FILE_CLASSES",
    "RULES",
    "SEVERITIES",
    "FileChange",
    "Finding",
    "Rule",
    "Tree",
    "assess",
    "classify",
    "findings_for",
    "has_high",
    "parse_gitconfig",
    "summary",
    "symlink_aliases",
    "tree_of",
]

MODE_FILE = 0o100644
MODE_EXECUTABLE = 0o100755
MODE_SYMLINK = 0o120000

SEVERITIES = ("high", "medium", "low")

_EXCERPT = 120
"""Longest excerpt of a matched line shown, in characters."""


@dataclass(frozen=True)
class Rule:
    """One entry of the rule table."""

    id: str
    severity: str
    explanation: str


def _rules(*items: tuple[str, str, str]) -> dict[str, Rule]:
    return {i: Rule(i, s, e) for i, s, e in items}


RULES: dict[str, Rule] = _rules(
    # -- system files (issue 15: under system/, applied by the root step) ---------------
    (
        "system-runs-as-root",
        "high",
        "a system file that root runs or obeys (services, timers, cron, udev, modules,"
        " package hooks, boot scripts): runs as root",
    ),
    (
        "system-user-code",
        "high",
        "a system-wide shell or session startup file: runs as code in every user's login",
    ),
    (
        "system-path-program",
        "high",
        "a program in /usr/local/bin or /usr/local/sbin: first on every PATH, root's included",
    ),
    ("system-file", "medium", "a system file outside $HOME, written by the root step"),
    # -- files that run, or are run by something that starts on its own -----------------
    ("executable-file", "medium", "a file is added or made executable"),
    (
        "executable-in-path",
        "high",
        "a file in a directory on $PATH (or reached from one by a symlink) can shadow a"
        " command you type",
    ),
    ("shell-startup", "high", "shell startup files run as code in every new shell"),
    (
        "x-session",
        "high",
        "X session and window manager files run programs when the session starts",
    ),
    ("autostart-entry", "high", "autostart entries run a program at every login"),
    (
        "systemd-user-unit",
        "high",
        "systemd user units and user.conf run programs as you and set their environment",
    ),
    (
        "dbus-service",
        "high",
        "a D-Bus session service file runs its Exec= when any program calls that bus name",
    ),
    (
        "environment-d",
        "high",
        "environment.d, ~/.pam_environment and ~/.ssh/environment set variables for every"
        " program of the session",
    ),
    ("ssh-rc", "high", "sshd runs ~/.ssh/rc on every login"),
    (
        "python-startup",
        "high",
        "user site-packages (.pth, usercustomize.py, modules) run in every Python program",
    ),
    (
        "editor-config-code",
        "high",
        "an editor's configuration is a program (vimscript, lua, elisp) that runs when it starts",
    ),
    (
        "multiplexer-config",
        "high",
        "tmux and screen read their config as commands, which can start shell commands",
    ),
    (
        "mailcap-command",
        "high",
        "mailcap entries are shell commands mail clients and browsers run to show a file",
    ),
    ("build-tool-code", "high", "gradle init scripts run in every build"),
    (
        "readline-macro",
        "high",
        "an inputrc macro types text (a whole command line) when a key is pressed",
    ),
    (
        "desktop-entry",
        "medium",
        "a .desktop entry's Exec= line decides what runs when you open an application",
    ),
    ("mime-handler", "medium", "mimeapps.list decides which program opens a file type or link"),
    # -- shell lines ---------------------------------------------------------------------
    ("shell-path-override", "high", "PATH is changed: commands you type may run other programs"),
    ("shell-preload", "high", "LD_PRELOAD/LD_LIBRARY_PATH/LD_AUDIT load code into every program"),
    (
        "shell-code-env",
        "medium",
        "a variable that makes another program run code (BASH_ENV, PYTHONSTARTUP, GIT_SSH...)",
    ),
    (
        "shell-alias-override",
        "high",
        "an alias or function replaces a common command (sudo, git, ssh, ls...)",
    ),
    # -- git config ----------------------------------------------------------------------
    ("git-alias-shell", "high", "a git alias starting with '!' (or passing -c) runs a command"),
    ("git-command", "high", "a git config key that makes git run a program"),
    ("git-include", "high", "include.path/includeIf pull in configuration from another file"),
    ("git-url-rewrite", "high", "url.*.insteadOf silently sends git to another server"),
    ("git-trust", "high", "a git key that decides which signatures git accepts"),
    ("git-proxy", "medium", "a proxy sees (and may alter) git's network traffic"),
    ("git-tls", "medium", "TLS verification is turned off or another CA is trusted"),
    (
        "git-attributes",
        "medium",
        "git attributes select filter, diff or merge drivers (which run programs)",
    ),
    # -- ssh -------------------------------------------------------------------------------
    ("ssh-proxy-command", "high", "ssh ProxyCommand runs a program for every connection"),
    ("ssh-local-command", "high", "ssh LocalCommand/PermitLocalCommand run a program locally"),
    ("ssh-known-hosts-command", "high", "ssh KnownHostsCommand runs a program to list host keys"),
    ("ssh-match-exec", "high", "ssh 'Match exec' runs a program while reading the config"),
    ("ssh-provider", "high", "PKCS11Provider/SecurityKeyProvider load a library into ssh"),
    ("ssh-include", "medium", "ssh Include reads more configuration from another file"),
    (
        "ssh-weakened",
        "medium",
        "host key checking, known_hosts, agent or X11 forwarding, or a jump host changed",
    ),
    ("ssh-authorized-keys", "high", "authorized_keys decides who may log in to this qube"),
    ("ssh-known-hosts", "high", "known_hosts decides which server keys ssh trusts"),
    # -- editors ---------------------------------------------------------------------------
    ("vim-shell-command", "high", "a vim/neovim line that runs a shell command"),
    (
        "vim-loads-code",
        "high",
        "a vim/neovim line that runs code from another file or from a string",
    ),
    (
        "vim-option",
        "medium",
        "a vim option that runs programs or reads code from files (shell, exrc, modeline)",
    ),
    # -- other programs' settings ------------------------------------------------------------
    (
        "tool-runs-code",
        "high",
        "a setting that makes a program run a command or load code"
        " (npm script-shell, cargo rustc-wrapper, LESSOPEN, starship custom commands...)",
    ),
    (
        "package-source",
        "high",
        "packages are installed from another index or registry, and installing runs their code",
    ),
    (
        "tool-network",
        "medium",
        "a proxy or TLS setting of a download tool: it sees and may alter what you download",
    ),
    ("config-include", "medium", "settings are read from another file"),
    # -- what the report cannot judge ---------------------------------------------------------
    (
        "unclassified-config",
        "high",
        "a file where programs read configuration, in a format this report does not check:"
        " it may run code",
    ),
    (
        "symlink-config",
        "high",
        "a symlink makes a file be read as a program's configuration; what it points to was"
        " not checked as such",
    ),
    # -- what the diff cannot show --------------------------------------------------------
    ("symlink", "low", "a symlink is added or retargeted: the config is read from elsewhere"),
    ("binary-file", "medium", "binary content cannot be reviewed in a text diff"),
    (
        "hidden-characters",
        "high",
        "control, bidirectional or invisible characters can hide what a line really does",
    ),
)


@dataclass(frozen=True)
class FileChange:
    """One changed path of an update.

    Attributes:
        path: ``$HOME``-relative path (as in the tree).
        old_mode: git mode before (``None``: the path is new).
        new_mode: git mode after (``None``: the path is removed).
        old: content before, or the symlink target.
        new: content after, or the symlink target.
    """

    path: str
    old_mode: int | None
    new_mode: int | None
    old: bytes = b""
    new: bytes = b""


@dataclass(frozen=True)
class Finding:
    """A rule that matched: where, and the sanitised excerpt that matched."""

    rule: str
    severity: str
    path: str  # sanitised
    line: int | None  # 1-based line of the new content, None for the file as a whole
    text: str  # sanitised excerpt, or a short description
    explanation: str

    def as_dict(self) -> dict[str, Any]:
        """The finding as plain JSON-ready data."""
        return {
            "rule": self.rule,
            "severity": self.severity,
            "path": self.path,
            "line": self.line,
            "text": self.text,
            "explanation": self.explanation,
        }

    def render(self) -> str:
        """One line for a terminal, e.g. ``HIGH   git-command  .gitconfig:3  core.pager=...``."""
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        text = f"  {self.text}" if self.text else ""
        return f"{self.severity.upper():<6} {self.rule}  {where}{text}  -- {self.explanation}"


class Tree(Mapping[str, str]):
    """The new tree of an update, for rules that look beyond the changed files.

    As a mapping it is the tree's symlinks (path -> target), so it can be passed where
    :func:`assess` takes ``links``.  Build it with :func:`tree_of`.

    Attributes:
        links: every symlink of the new tree (path -> target).
        modes: every file and symlink of the new tree (path -> git mode).
        texts: content of the tree's git and ssh config files (by name or included).
    """

    def __init__(
        self,
        links: Mapping[str, str],
        modes: Mapping[str, int] | None = None,
        texts: Mapping[str, bytes] | None = None,
    ) -> None:
        self.links: Mapping[str, str] = dict(links)
        self.modes: Mapping[str, int] = dict(modes or {})
        self.texts: Mapping[str, bytes] = dict(texts or {})

    def __getitem__(self, key: str) -> str:
        return self.links[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.links)

    def __len__(self) -> int:
        return len(self.links)


# -- helpers ----------------------------------------------------------------------------


def _excerpt(text: str) -> str:
    shown = sanitize(text.strip())
    return shown if len(shown) <= _EXCERPT else shown[: _EXCERPT - 3] + "..."


def _is_binary(data: bytes) -> bool:
    if b"\x00" in data:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _text(data: bytes) -> str:
    """Lenient decoding for rule matching: an invalid byte becomes a lone surrogate and
    never stops a rule from seeing the ASCII keywords around it."""
    return data.decode("utf-8", errors="surrogateescape")


def _lines(data: bytes) -> list[str]:
    # Not splitlines(): it also splits at \r, \x1c..\x1e, \x85 and U+2028, which are
    # exactly the characters the hidden-characters rule must see inside a line.
    lines = _text(data).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _added(old: Sequence[str], new: Sequence[str]) -> list[int]:
    """0-based indexes of the lines of ``new`` that are added or changed."""
    if not old:
        return list(range(len(new)))
    if len(old) > MAX_RISK_DIFF_LINES or len(new) > MAX_RISK_DIFF_LINES:
        return list(range(len(new)))
    out: list[int] = []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, _i1, _i2, j1, j2 in matcher.get_opcodes():
        if tag in ("insert", "replace"):
            out.extend(range(j1, j2))
    return out


def _hidden(ch: str) -> bool:
    if ch in "\t\n" or "\udc80" <= ch <= "\udcff":  # an invalid byte: binary-file says so
        return False
    return sanitize(ch) != ch or unicodedata.category(ch) in ("Cf", "Cc", "Zl", "Zp")


@functools.cache
def _glob(pattern: str) -> re.Pattern[str]:
    """``**`` crosses ``/``; ``*`` and ``?`` do not; ``[...]`` as in fnmatch."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


@functools.cache
def _globs(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{_glob(p).pattern})" for p in patterns) or "(?!)", re.DOTALL)


def _match(path: str, patterns: Iterable[str]) -> bool:
    return _globs(tuple(patterns)).fullmatch(path) is not None


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _norm_key(key: str) -> str:
    """Key names compared the way the most lenient program does (wget ignores - and _)."""
    return key.lower().replace("-", "").replace("_", "")


# -- path classes: which program reads which file ---------------------------------------

SHELL_STARTUP = (
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".bash_aliases",
    ".bash_completion",
    ".bash_completion.d/**",
    ".bashrc.d/**",
    ".local/share/bash-completion/**",
    ".profile",
    ".profile.d/**",
    ".zshenv",
    ".zprofile",
    ".zshrc",
    ".zlogin",
    ".zlogout",
    ".zshrc.d/**",
    ".zcompdump*",
    ".zsh/**",
    ".oh-my-zsh/**",
    ".kshrc",
    ".mkshrc",
    ".cshrc",
    ".tcshrc",
    ".login",
    ".logout",
    ".config/fish/**",
    ".config/zsh/**",
    ".config/bash/**",
    ".aliases",
    ".shell_aliases",
    ".functions",
    ".exports",
)
X_SESSION = (
    ".xinitrc",
    ".xsession",
    ".xsessionrc",
    ".xprofile",
    ".xserverrc",
    ".Xsession",
    ".i3/**",
    ".xmonad/**",
    ".config/openbox/**",
    ".config/i3/**",
    ".config/sway/**",
    ".config/hypr/**",
    ".config/awesome/**",
    ".config/bspwm/**",
    ".config/sxhkd/**",
    ".config/herbstluftwm/**",
    ".config/qtile/**",
    ".config/xmonad/**",
    ".config/labwc/**",
    ".config/river/**",
)
AUTOSTART = (
    ".config/autostart/**",
    ".config/autostart-scripts/**",
    ".config/plasma-workspace/env/**",
    ".config/plasma-workspace/shutdown/**",
    ".kde/Autostart/**",
    ".kde4/Autostart/**",
    ".config/lxsession/*/autostart",
)
SYSTEMD_USER = (".config/systemd/**", ".local/share/systemd/user/**")
DBUS_SERVICES = (".local/share/dbus-1/**",)
ENVIRONMENT = (".config/environment.d/**", ".pam_environment", ".ssh/environment")
PYTHON_SITE = (".local/lib/python*/**",)
DESKTOP_ENTRY = (".local/share/applications/**",)
PATH_DIRS = (
    "bin/**",
    ".bin/**",
    ".local/bin/**",
    "go/bin/**",
    ".cargo/bin/**",
    ".npm-global/bin/**",
    ".local/share/flatpak/exports/bin/**",
)
GITCONFIG = (
    ".gitconfig",
    ".gitconfig?*",  # .gitconfig-work, .gitconfig.local, .gitconfig_work
    "*.gitconfig",
    ".config/git/*",  # but not ignore/attributes, see _NOT_GITCONFIG
)
_NOT_GITCONFIG = (".config/git/ignore", ".config/git/attributes")
GITATTRIBUTES = (".gitattributes", ".config/git/attributes", "**/.gitattributes")
SSH_CONFIG = (".ssh/config", ".ssh/config.d/**", ".ssh/*.conf", ".ssh/conf.d/**")
VIM = (
    ".vimrc",
    ".gvimrc",
    ".exrc",
    ".nvimrc",
    "_vimrc",
    ".ideavimrc",
    ".vim/**",
    ".config/nvim/**",
    ".config/vim/**",
    ".local/share/nvim/**",
    ".local/share/vim/**",
)
EMACS = (".emacs", ".emacs.el", ".emacs.d/**", ".config/emacs/**", ".doom.d/**", ".spacemacs")
MULTIPLEXER = (".tmux.conf", ".tmux/**", ".config/tmux/**", ".screenrc", ".config/screen/**")
HARMLESS = (
    ".editorconfig",
    "**/.editorconfig",
    ".hushlogin",
    ".config/git/ignore",
    ".gitignore",
    ".gitignore_global",
    ".local/share/fonts/**",
    ".local/share/icons/**",
    ".local/share/backgrounds/**",
    ".local/share/wallpapers/**",
    ".local/share/sounds/**",
    ".fonts/**",
)
"""Files whose format cannot run code and which redirect no trust: no finding."""


@dataclass(frozen=True)
class FileClass:
    """One program's files: where they are, and what in them runs code.

    Attributes:
        name: short name, shown nowhere (tests and docs use it).
        patterns: ``$HOME``-relative globs (``**`` crosses ``/``, ``*`` does not).
        whole: rule for the file as a whole (the file is code), or None.
        check: name of the content check in :data:`_CHECKS` (keys or lines), or None.
    """

    name: str
    patterns: tuple[str, ...]
    whole: str | None = None
    check: str | None = None


FILE_CLASSES: tuple[FileClass, ...] = (
    FileClass("shell", SHELL_STARTUP, "shell-startup", "shell"),
    FileClass("x-session", X_SESSION, "x-session", "shell"),
    FileClass("autostart", AUTOSTART, "autostart-entry"),
    FileClass("systemd", SYSTEMD_USER, "systemd-user-unit"),
    FileClass("dbus", DBUS_SERVICES, "dbus-service"),
    FileClass("environment", ENVIRONMENT, "environment-d", "shell"),
    FileClass("ssh-rc", (".ssh/rc",), "ssh-rc", "shell"),
    FileClass("python", PYTHON_SITE, "python-startup"),
    FileClass("vim", VIM, "editor-config-code", "vim"),
    FileClass("emacs", EMACS, "editor-config-code"),
    FileClass("multiplexer", MULTIPLEXER, "multiplexer-config"),
    FileClass("mailcap", (".mailcap", ".config/mailcap"), "mailcap-command"),
    FileClass("gradle-init", (".gradle/init.gradle*", ".gradle/init.d/**"), "build-tool-code"),
    FileClass("desktop", DESKTOP_ENTRY, "desktop-entry"),
    FileClass(
        "authorized-keys", ("**authorized_keys", "**authorized_keys2"), "ssh-authorized-keys"
    ),
    FileClass("known-hosts", (".ssh/known_hosts*",), "ssh-known-hosts"),
    FileClass("inputrc", (".inputrc", ".config/readline/inputrc"), None, "inputrc"),
    FileClass("git-config", GITCONFIG, None, "git"),
    FileClass("git-attributes", GITATTRIBUTES, None, "gitattributes"),
    FileClass("ssh-config", SSH_CONFIG, None, "ssh"),
    FileClass("npm", (".npmrc", ".config/npm/npmrc"), None, "npm"),
    FileClass("pip", (".pip/pip.conf", ".config/pip/pip.conf", ".pydistutils.cfg"), None, "pip"),
    FileClass("cargo", (".cargo/config", ".cargo/config.toml"), None, "cargo"),
    FileClass("starship", (".config/starship.toml",), None, "starship"),
    FileClass("lesskey", (".lesskey", ".config/lesskey", ".less"), None, "lesskey"),
    FileClass("wget", (".wgetrc", ".config/wgetrc"), None, "wget"),
    FileClass("curl", (".curlrc", ".config/curlrc"), None, "curl"),
    FileClass(
        "mimeapps",
        (".config/mimeapps.list", ".config/*-mimeapps.list", ".local/share/applications/*.list"),
        None,
        "mimeapps",
    ),
    FileClass("gradle-properties", (".gradle/gradle.properties",), None, "javaprops"),
    FileClass("harmless", HARMLESS),
)
_BY_NAME = {c.name: c for c in FILE_CLASSES}
_GIT_HOOKS = FileClass("git-hooks", (), "git-command")


def _is_config_place(path: str) -> bool:
    """Top-level dotfiles and dot directories: where programs read their settings from."""
    return path.startswith(".")


def classify(path: str) -> list[str]:
    """Names of the :data:`FILE_CLASSES` a path belongs to by its name alone.

    Args:
        path: ``$HOME``-relative path.

    Returns:
        Class names; ``["unclassified"]`` for a file in a config place that no class
        claims, ``[]`` for plain data elsewhere.
    """
    names = [c.name for c in _classes_by_name(path)]
    if not names and _is_config_place(path):
        return ["unclassified"]
    return names


@functools.lru_cache(maxsize=65536)
def _classes_by_name(path: str) -> tuple[FileClass, ...]:
    out = [c for c in FILE_CLASSES if _match(path, c.patterns)]
    if _match(path, _NOT_GITCONFIG):
        out = [c for c in out if c.name != "git-config"]
    return tuple(out)


# -- shell lines ------------------------------------------------------------------------

_COMMON_COMMANDS = _words(
    """sudo su doas pkexec ssh scp sftp rsync git gpg gpg2 ls cd cat rm cp mv ln chmod chown
    curl wget python python3 pip pip3 perl ruby node npm bash sh zsh fish env exec
    vim vi nvim nano emacs less more man echo printf grep find xargs tar unzip openssl
    apt apt-get dnf yum rpm dpkg flatpak snap passwd qvm-run qvm-copy qvm-move qvm-open-in-vm
    qvm-open-in-dvm qrexec-client-vm qubes-gpg-client qubes-gpg-client-wrapper qgitconf
    test which type command builtin source export alias unalias set unset trap eval read
    history clear exit logout kill ps top mount umount systemctl journalctl ssh-add
    ssh-keygen ssh-agent gpg-agent keepassxc pass"""
)

_ASSIGN = (
    r"(?:^|[\s;&|(])"
    r"(?:export\s+|declare\s+(?:-\w+\s+)*|typeset\s+(?:-\w+\s+)*|local\s+|readonly\s+)?"
)
_FISH_SET = r"(?:^|[\s;])set\s+(?:-[a-zA-Z]+\s+)*"


def _env_var_re(names: str) -> re.Pattern[str]:
    return re.compile(
        rf"{_ASSIGN}(?:{names})\+?=|{_FISH_SET}(?:{names})\b|^\s*(?:{names})\s*(?:=|DEFAULT=|OVERRIDE=)",
    )


_PATH_RE = re.compile(
    rf"{_ASSIGN}PATH\+?=|{_FISH_SET}(?:PATH|fish_user_paths)\b|\bfish_add_path\b|"
    r"^\s*PATH\s*(?:=|DEFAULT=|OVERRIDE=)|(?:^|[\s;])path\+?=\(|(?:^|[\s;])path\[\d*\]=",
)
_PRELOAD_RE = _env_var_re("LD_PRELOAD|LD_LIBRARY_PATH|LD_AUDIT")
_CODE_ENV_RE = _env_var_re(
    "BASH_ENV|ENV|ZDOTDIR|PROMPT_COMMAND|PYTHONSTARTUP|PYTHONPATH|PYTHONHOME|PERL5OPT|PERL5LIB|"
    "NODE_OPTIONS|RUBYOPT|GIT_SSH|GIT_SSH_COMMAND|GIT_EXEC_PATH|GIT_ASKPASS|SSH_ASKPASS|"
    "GIT_CONFIG_GLOBAL|GIT_CONFIG_SYSTEM|GNUPGHOME|XDG_CONFIG_HOME|XDG_CONFIG_DIRS|"
    "XDG_DATA_DIRS|XDG_DATA_HOME|GTK_MODULES|GTK_PATH|QT_PLUGIN_PATH"
)
_ALIAS_RE = re.compile(
    r"(?:^|[\s;&|])alias\s+(?:-[a-zA-Z]+\s+)*(?:--\s+)?['\"]?([\w.+-]+)['\"]?(?:=|\s+)"
    r"(?:'([^']*)'|\"([^\"]*)\"|(\S*))"
)
_METACHARS = re.compile(r"[;|&$`<>()\\\n]")
_ABBR_RE = re.compile(r"(?:^|[\s;])abbr\s+(?:-[-a-zA-Z]+\s+)*([\w.+-]+)\s")
_FUNC_RE = re.compile(
    r"^\s*(?:function\s+([\w.+-]+)|([\w.+-]+)\s*\(\s*\)\s*(?:\{|\(|$))",
)


def _adds_options(m: re.Match[str]) -> bool:
    """``alias ls='ls --color=auto'``: the command itself with plain options added."""
    value = next((g for g in m.groups()[1:] if g is not None), "")
    words = value.split()
    return bool(words) and words[0] == m.group(1) and not _METACHARS.search(value)


def _shell_line(line: str) -> Iterator[str]:
    code = line.lstrip()
    if code.startswith("#"):
        return
    if _PATH_RE.search(line):
        yield "shell-path-override"
    if _PRELOAD_RE.search(line):
        yield "shell-preload"
    if _CODE_ENV_RE.search(line):
        yield "shell-code-env"
    names = [m.group(1) for m in _ALIAS_RE.finditer(line) if not _adds_options(m)]
    names += [m.group(1) for m in _ABBR_RE.finditer(line)]
    m = _FUNC_RE.match(line)
    if m:
        names.append(m.group(1) or m.group(2))
    if any(n in _COMMON_COMMANDS for n in names):
        yield "shell-alias-override"


# -- git config (git-config(1); the parser follows git's config.c) ------------------------


@dataclass(frozen=True)
class GitConfigEntry:
    """One ``section[.subsection].key = value`` of a git config file."""

    section: str  # lower case
    subsection: str | None  # case kept (git compares it case-sensitively)
    key: str  # lower case
    value: str | None  # None: a bare key (boolean true)
    line: int  # 1-based

    @property
    def name(self) -> str:
        """``section.subsection.key`` as git prints it."""
        sub = f".{self.subsection}" if self.subsection is not None else ""
        return f"{self.section}{sub}.{self.key}"


_C_SPACE = " \t\n\v\f\r"  # C isspace()


def _git_keychar(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "-")


def _git_header(s: str, i: int) -> tuple[int, tuple[str, str | None] | None]:
    """After ``[``: ``(index after the header, (section, subsection))``, or None when git
    would refuse it (the index then points at the offending character, never past a
    newline)."""
    name: list[str] = []
    while i < len(s):
        c = s[i]
        if c == "]":
            base = "".join(name)
            if "." in base:  # deprecated [section.subsection]: all lower case
                head, _, tail = base.partition(".")
                return i + 1, (head, tail)
            return i + 1, (base, None)
        if c in _C_SPACE:
            while i < len(s) and s[i] in _C_SPACE and s[i] != "\n":
                i += 1
            if i >= len(s) or s[i] != '"':
                return i, None
            i += 1
            sub: list[str] = []
            while i < len(s) and s[i] not in '"\n':
                if s[i] == "\\":
                    i += 1
                    if i >= len(s) or s[i] == "\n":
                        return i, None
                sub.append(s[i])
                i += 1
            if i + 1 >= len(s) or s[i] != '"' or s[i + 1] != "]":
                return i, None
            base = "".join(name)
            head, _, tail = base.partition(".")
            subsection = "".join(sub) if not tail else f"{tail}.{''.join(sub)}"
            return i + 2, (head, subsection)
        if not (_git_keychar(c) or c == "."):
            return i, None
        name.append(c.lower())
        i += 1
    return i, None


def _git_value(s: str, i: int) -> tuple[int, str]:
    """After ``=``: ``(index after the value's newline, value)``, as config.c's
    parse_value: quotes removed, ``\\t \\b \\n \\\\ \\"`` resolved, ``#``/``;`` outside
    quotes start a comment (in which a backslash is plain text), and only an unescaped
    backslash right before the newline, outside a comment, continues the value."""
    out: list[str] = []
    quote = comment = False
    trim = 0
    while i < len(s):
        c = s[i]
        i += 1
        if c == "\n":
            break  # a newline inside quotes: git refuses the file; the value ends here
        if comment:
            continue
        if c in _C_SPACE and not quote:
            if not trim:
                trim = len(out)
            if out:
                out.append(c)
            continue
        if not quote and c in "#;":
            comment = True
            continue
        trim = 0
        if c == "\\":
            d = s[i] if i < len(s) else "\n"
            i += 1
            if d == "\n":
                continue  # continuation line
            out.append({"t": "\t", "b": "\b", "n": "\n"}.get(d, d))  # unknown: git refuses
            continue
        if c == '"':
            quote = not quote
            continue
        out.append(c)
    if trim:
        del out[trim:]
    return i, "".join(out)


def parse_gitconfig(text: str) -> list[GitConfigEntry]:
    """Parse git config text as git's config.c does (never raises).

    Sections are ``[name]``, ``[name "sub"]`` (``\\`` escapes in the subsection) or the
    old ``[name.sub]``; a key may follow a header on the same line; ``#`` and ``;``
    start a comment anywhere outside a quoted value; CRLF counts as LF.  Where git would
    refuse the whole file, this parser skips the rest of the offending line and goes on
    (a file git refuses runs nothing, so the extra entries can only add findings).

    Args:
        text: the file's content, decoded leniently.

    Returns:
        Every entry with its 1-based line.
    """
    s = text.replace("\r\n", "\n")
    i = 1 if s.startswith("\ufeff") else 0
    entries: list[GitConfigEntry] = []
    section: str | None = None
    subsection: str | None = None
    comment = False
    while i < len(s):
        c = s[i]
        if c == "\n" or comment or c in _C_SPACE or c in "#;":
            comment = (comment or c in "#;") and c != "\n"
            i += 1
            continue
        if c == "[":
            i, header = _git_header(s, i + 1)
            section, subsection = header if header is not None else (None, None)
            comment = header is None
            continue
        if section is None or not (c.isascii() and c.isalpha()):
            comment = True  # git: "bad config line"
            continue
        line = s.count("\n", 0, i) + 1
        j = i
        while j < len(s) and _git_keychar(s[j]):
            j += 1
        key = s[i:j].lower()
        while j < len(s) and s[j] in " \t":
            j += 1
        value: str | None = None
        if j < len(s) and s[j] == "=":
            j, value = _git_value(s, j + 1)
        elif j < len(s) and s[j] != "\n":
            i, comment = j, True  # git: "bad config line"
            continue
        entries.append(GitConfigEntry(section, subsection, key, value, line))
        i = j
    return entries


_GIT_KEYS: tuple[tuple[str, str, str, str], ...] = (
    # (section, subsection glob ("" = none, "*" = any or none), key glob, rule)
    ("core", "*", "pager", "git-command"),
    ("core", "*", "editor", "git-command"),
    ("core", "*", "sshcommand", "git-command"),
    ("core", "*", "fsmonitor", "git-command"),
    ("core", "*", "hookspath", "git-command"),
    ("core", "*", "askpass", "git-command"),
    ("core", "*", "gitproxy", "git-command"),
    ("core", "*", "alternaterefscommand", "git-command"),
    ("core", "*", "attributesfile", "git-attributes"),
    ("init", "*", "templatedir", "git-command"),  # hooks of the template run in every clone
    ("credential", "*", "helper", "git-command"),
    ("diff", "*", "external", "git-command"),
    ("diff", "*", "textconv", "git-command"),
    ("diff", "*", "command", "git-command"),
    ("merge", "*", "driver", "git-command"),
    ("filter", "*", "*", "git-command"),
    ("pager", "*", "*", "git-command"),
    ("gpg", "*", "program", "git-command"),
    ("gpg", "*", "defaultkeycommand", "git-command"),
    ("gpg", "*", "allowedsignersfile", "git-trust"),
    ("gpg", "*", "revocationfile", "git-trust"),
    ("gpg", "*", "mintrustlevel", "git-trust"),
    ("sequence", "*", "editor", "git-command"),
    ("difftool", "*", "cmd", "git-command"),
    ("difftool", "*", "path", "git-command"),
    ("mergetool", "*", "cmd", "git-command"),
    ("mergetool", "*", "path", "git-command"),
    ("guitool", "*", "cmd", "git-command"),
    ("trailer", "*", "command", "git-command"),
    ("trailer", "*", "cmd", "git-command"),
    ("tar", "*", "command", "git-command"),
    ("web", "*", "browser", "git-command"),
    ("help", "*", "browser", "git-command"),
    ("instaweb", "*", "browser", "git-command"),
    ("instaweb", "*", "httpd", "git-command"),
    ("browser", "*", "cmd", "git-command"),
    ("browser", "*", "path", "git-command"),
    ("man", "*", "cmd", "git-command"),
    ("man", "*", "path", "git-command"),
    ("sendemail", "*", "smtpserver", "git-command"),
    ("sendemail", "*", "tocmd", "git-command"),
    ("sendemail", "*", "cccmd", "git-command"),
    ("sendemail", "*", "headercmd", "git-command"),
    ("sendemail", "*", "sendmailcmd", "git-command"),
    ("uploadpack", "*", "packobjectshook", "git-command"),
    ("remote", "*", "uploadpack", "git-command"),
    ("remote", "*", "receivepack", "git-command"),
    ("remote", "*", "vcs", "git-command"),
    ("remote", "*", "proxy", "git-proxy"),
    ("lfs", "*", "path", "git-command"),  # lfs.customtransfer.<name>.path
    ("ssh", "*", "variant", "git-command"),
    ("ssh", "*", "program", "git-command"),
    ("interactive", "*", "difffilter", "git-command"),
    ("safe", "*", "directory", "git-command"),
    ("include", "*", "path", "git-include"),
    ("includeif", "*", "path", "git-include"),
    ("url", "*", "insteadof", "git-url-rewrite"),
    ("url", "*", "pushinsteadof", "git-url-rewrite"),
    ("http", "*", "proxy", "git-proxy"),
    ("https", "*", "proxy", "git-proxy"),
    ("http", "*", "curloptresolve", "git-proxy"),
    ("http", "*", "sslverify", "git-tls"),
    ("http", "*", "sslcainfo", "git-tls"),
    ("http", "*", "sslcapath", "git-tls"),
    ("http", "*", "sslbackend", "git-tls"),
    ("http", "*", "sslcert", "git-tls"),
)
_GIT_ALIAS_CODE_RE = re.compile(r"^\s*!|(?:^|\s)(?:-c|--config-env|--exec-path)(?:\s|=|$)")


def _git_entry(e: GitConfigEntry) -> str | None:
    s, k, v = e.section, e.key, (e.value or "")
    if s == "alias":
        return "git-alias-shell" if _GIT_ALIAS_CODE_RE.search(v) else None
    if s == "protocol" and k == "allow" and v.strip().lower() != "never":
        return "git-command"  # protocol.allow, protocol.ext.allow: ext:: URLs run commands
    if s == "submodule" and k == "update" and v.lstrip().startswith("!"):
        return "git-command"
    if s == "remote" and k in ("url", "pushurl") and re.match(r"\s*(?:ext|fd)::", v):
        return "git-command"
    for section, sub, key, rule in _GIT_KEYS:
        if section != s or not _glob(key).fullmatch(k):
            continue
        if sub == "*" or (sub == "" and e.subsection is None):
            return rule
    return None


def _git_findings(
    old: str, new: str, _added: object = None
) -> Iterator[tuple[str, int | None, str]]:
    before = Counter((e.name, e.value) for e in parse_gitconfig(old))
    for e in parse_gitconfig(new):
        if before[(e.name, e.value)] > 0:
            before[(e.name, e.value)] -= 1
            continue
        rule = _git_entry(e)
        if rule is not None:
            shown = e.name if e.value is None else f"{e.name} = {e.value}"
            yield rule, e.line, _excerpt(shown)


def _home_path(including: str, value: str) -> str | None:
    """A path named in a config file, as a ``$HOME``-relative path (None: outside, or
    unknown).  ``~/`` is ``$HOME``; ``/home/<user>/`` and ``/root/`` are taken as it;
    a relative path is relative to the including file's directory."""
    value = value.strip()
    m = re.match(r"(?:~|/home/[^/]+|/root)(?:/|$)", value)
    if m:
        rest = value[m.end() :]
    elif value.startswith(("/", "%(")) or not value:
        return None
    else:
        rest = posixpath.join(posixpath.dirname(including), value)
    norm = posixpath.normpath(rest) if rest else ""
    return None if norm.startswith("..") or norm in ("", ".") else norm


def _git_refs(path: str, text: str) -> tuple[list[str], list[str]]:
    """Files a git config includes, and directories it runs hooks from."""
    includes: list[str] = []
    code_dirs: list[str] = []
    for e in parse_gitconfig(text):
        if e.value is None:
            continue
        if e.section in ("include", "includeif") and e.key == "path":
            target = _home_path(path, e.value)
            if target:
                includes.append(target)
        elif (e.section, e.key) in (("core", "hookspath"), ("init", "templatedir")):
            target = _home_path(path, e.value)
            if target:
                code_dirs.append(target)
    return includes, code_dirs


_ATTR_RE = re.compile(r"(?:^|\s)-?!?(?:filter|diff|merge|textconv)(?:=|\s|$)")


def _gitattributes_line(line: str) -> Iterator[str]:
    if _ATTR_RE.search(line):
        yield "git-attributes"


# -- ssh config (ssh_config(5); tokens as OpenSSH's strdelim/argv_split) -------------------


def _ssh_keyword(line: str) -> tuple[str, str] | None:
    """``(keyword in lower case, rest)`` of an ssh config line, None for a comment.

    As strdelim: leading whitespace skipped; a quote inside the keyword is removed and
    the keyword ends at the matching quote (``"ProxyCommand"``, ``Proxy"Command"``); the
    keyword ends at whitespace or ``=``, and one ``=`` between keyword and value is
    skipped."""
    s = line.lstrip(" \t\r")
    m = re.match(r'[^ \t\r\n"=]*', s)
    kw = m.group() if m else ""
    rest = s[len(kw) :]
    if rest.startswith('"'):
        end = rest.find('"', 1)
        if end < 0:
            return None
        kw += rest[1:end]
        rest = rest[end + 1 :]
    rest = rest.lstrip(" \t\r")
    if rest.startswith("="):
        rest = rest[1:].lstrip(" \t\r")
    if not kw or kw.startswith("#"):
        return None
    return kw.lower(), rest


def _ssh_args(rest: str) -> list[str]:
    """The arguments of an ssh config line, as argv_split: quotes (either kind) group and
    are removed, backslash escapes a quote, backslash or space, ``#`` ends the line."""
    args: list[str] = []
    cur: list[str] = []
    quote = ""
    started = False
    i = 0
    while i < len(rest):
        c = rest[i]
        if c == "\\" and i + 1 < len(rest) and rest[i + 1] in "\"'\\ ":
            cur.append(rest[i + 1])
            started = True
            i += 2
            continue
        if quote:
            if c == quote:
                quote = ""
            else:
                cur.append(c)
        elif c in "\"'":
            quote, started = c, True
        elif c in " \t\r\n":
            if started:
                args.append("".join(cur))
                cur, started = [], False
        elif c == "#" and not started:
            break
        else:
            cur.append(c)
            started = True
        i += 1
    if started:
        args.append("".join(cur))
    return args


_SSH_RULES = {
    "proxycommand": "ssh-proxy-command",
    "localcommand": "ssh-local-command",
    "knownhostscommand": "ssh-known-hosts-command",
    "pkcs11provider": "ssh-provider",
    "securitykeyprovider": "ssh-provider",
    "include": "ssh-include",
    "proxyjump": "ssh-weakened",
    "userknownhostsfile": "ssh-weakened",
    "globalknownhostsfile": "ssh-weakened",
    "identityagent": "ssh-weakened",
    "hostkeyalias": "ssh-weakened",
    "controlpath": "ssh-weakened",
}
_SSH_YES_RULES = {
    "permitlocalcommand": "ssh-local-command",
    "forwardagent": "ssh-weakened",
    "forwardx11": "ssh-weakened",
    "forwardx11trusted": "ssh-weakened",
}


def _ssh_line(line: str) -> Iterator[str]:
    parsed = _ssh_keyword(line)
    if parsed is None:
        return
    key, rest = parsed
    args = [a.lower() for a in _ssh_args(rest)]
    value = args[0] if args else ""
    if key == "match":
        if any(re.fullmatch(r"!?exec(?:=.*)?", a, re.DOTALL) for a in args):
            yield "ssh-match-exec"
    elif key == "stricthostkeychecking":
        if value in ("no", "off", "accept-new"):
            yield "ssh-weakened"
    elif key in _SSH_YES_RULES:
        if value not in ("no", "false", ""):
            yield _SSH_YES_RULES[key]
    elif key in _SSH_RULES and value not in ("none", "internal"):
        yield _SSH_RULES[key]


def _ssh_includes(path: str, text: str) -> list[str]:
    """``$HOME``-relative globs of the files an ssh config ``Include``s (relative names
    are relative to ``~/.ssh``)."""
    out: list[str] = []
    for line in text.split("\n"):
        parsed = _ssh_keyword(line)
        if parsed is None or parsed[0] != "include":
            continue
        for arg in _ssh_args(parsed[1]):
            target = _home_path(".ssh/x", arg)
            if target:
                out.append(target)
    return out


# -- vim and neovim (the whole file is code: these only say what to look at) -------------

_VIM_SHELL_RE = re.compile(
    # an ex command that starts with '!' (or :r !, :w !, :silent !, autocmd ... !, :{range}!)
    r"(?:^|(?<!\|)\|(?!\|)|:|<[Cc][Rr]>|\bsil(?:ent)?!?\s|\bexe(?:cute)?\s+['\"]"
    r"|\bau(?:tocmd)?!?\s[^\"]*?\s|\bvim\.cmd\s*\(?\s*(?:\[\[|['\"]))"
    r"\s*:?\s*(?:r(?:ead)?\s*|w(?:rite)?\s*|[.$%\d]*,?[.$\d]*)?!(?![=~])"
    # functions that start processes, in vimscript and in neovim's lua
    r"|\b(?:system|systemlist|jobstart|job_start|termopen|term_start|libcall|libcallnr)\s*\("
    r"|\bos\.execute\s*\(|\bio\.popen\s*\(|\bvim\.system\s*\(|\bvim\.(?:loop|uv)\.spawn\s*\("
    # :terminal and the ex commands that run another language's code
    r"|(?:^|(?<!\|)\|(?!\|)|:)\s*(?:ter(?:minal)?|py3?|python3?|pyx|pythonx|perl|ruby|rubydo"
    r"|perldo|py3do|pydo|pyxdo|luado|luafile|py3file|pyfile|rubyfile|perlfile|lua)\b(?!\s*=)",
)
_VIM_LOADS_RE = re.compile(
    # :execute, :source, :runtime build or read ex commands from a string or another file
    r"(?:^|(?<!\|)\|(?!\|)|:|<[Cc][Rr]>)\s*(?:exe(?:c|cu|cut|cute)?|so(?:u|ur|urc|urce)?"
    r"|ru(?:n|nt|nti|ntim|ntime)?!?)\s"
    # functions that call code by a computed name, or evaluate a string
    r"|\b(?:execute|eval|call|funcref|luaeval|py3eval|pyeval|pyxeval|perleval|rubyeval)\s*\("
    r"|\bfunction\s*\(\s*['\"]"
    r"|\bvim\.fn\s*\[|\bvim\.call\s*\(|\bvim\.cmd\b"
    r"|\bvim\.api\.nvim_(?:command|exec\w*|cmd|call_function|call_dict_function|eval)\b"
    r"|\b(?:loadstring|load|loadfile|dofile)\s*\(",
)
_VIM_SET_RE = re.compile(r"(?:^|[|:]\s*)\s*(?:se|set|setl|setlocal|setg|setglobal)\s+(.*)$")
_VIM_LUA_OPT_RE = re.compile(
    r"\bvim\.(?:o|opt|go|bo|wo|opt_local|opt_global)\.(\w+)\s*[=:]"
    r"|\bvim\.(?:o|opt|go|bo|wo|opt_local|opt_global)\s*\[\s*['\"](\w+)"
    r"|\bnvim_set_option(?:_value)?\s*\(\s*['\"](\w+)"
    r"|\blet\s+&(?:[lg]:)?(\w+)",
)
_VIM_RISKY_OPTIONS = _words(
    """shell sh shellcmdflag shcf shellpipe sp shellredir srr makeprg mp grepprg gp keywordprg kp
    equalprg ep formatprg fp exrc ex modeline ml modelineexpr mle secure packpath pp runtimepath
    rtp diffexpr dex patchexpr pex"""
)


def _vim_line(line: str) -> Iterator[str]:
    code = line.strip()
    if not code or code.startswith('"') or (code.startswith("--") and "vim.cmd" not in code):
        return
    if _VIM_SHELL_RE.search(code):
        yield "vim-shell-command"
        return
    if _VIM_LOADS_RE.search(code):
        yield "vim-loads-code"
        return
    names = [next(g for g in m.groups() if g) for m in _VIM_LUA_OPT_RE.finditer(code)]
    m = _VIM_SET_RE.search(code)
    if m:
        for token in m.group(1).split('"')[0].split():
            names.append(re.split(r"[=:+^\-!&?<]", token, maxsplit=1)[0])
    if any(n in _VIM_RISKY_OPTIONS for n in names):
        yield "vim-option"


# -- readline -----------------------------------------------------------------------------

_INPUTRC_MACRO_RE = re.compile(r"""^\s*(?:"(?:[^"\\]|\\.)*"|[^\s:"]+)\s*:\s*["']""")


def _inputrc_line(line: str) -> Iterator[str]:
    if re.match(r"\s*\$include\b", line):
        yield "config-include"
    elif _INPUTRC_MACRO_RE.match(line):
        yield "readline-macro"


# -- key = value formats of other programs -------------------------------------------------

_KeyRule = tuple[str, tuple[str, ...], str]  # (section glob, key globs, rule); normalised

_KEYED: dict[str, tuple[_KeyRule, ...]] = {
    # npm-config(7): these keys name programs npm runs, or where packages come from
    "npm": (
        (
            "**",
            (
                "scriptshell",
                "shell",
                "nodeoptions",
                "editor",
                "browser",
                "git",
                "initmodule",
                "onloadscript",
                "viewer",
            ),
            "tool-runs-code",
        ),
        ("**", ("registry", "*:registry", "replaceregistryhost"), "package-source"),
        ("**", ("userconfig", "globalconfig"), "config-include"),
        (
            "**",
            ("proxy", "httpsproxy", "httpproxy", "noproxy", "strictssl", "ca", "cafile"),
            "tool-network",
        ),
    ),
    # pip's config files hold its long options
    "pip": (
        (
            "**",
            ("indexurl", "extraindexurl", "findlinks", "trustedhost", "noindex"),
            "package-source",
        ),
        ("**", ("proxy", "cert", "clientcert"), "tool-network"),
    ),
    # cargo's config.toml
    "cargo": (
        (
            "build",
            ("rustc", "rustcwrapper", "rustcworkspacewrapper", "rustdoc", "rustflags"),
            "tool-runs-code",
        ),
        ("target.**", ("runner", "linker", "ar", "rustflags", "rustdocflags"), "tool-runs-code"),
        ("host**", ("linker", "runner", "rustflags"), "tool-runs-code"),
        ("env", ("*",), "tool-runs-code"),
        ("doc", ("browser",), "tool-runs-code"),
        ("credentialalias", ("*",), "tool-runs-code"),
        ("registr*", ("credentialprovider", "globalcredentialproviders"), "tool-runs-code"),
        ("registr*", ("index", "default"), "package-source"),
        ("source**", ("*",), "package-source"),
        ("patch**", ("*",), "package-source"),
        ("", ("paths",), "package-source"),
        ("", ("include",), "config-include"),
        ("http", ("proxy", "cainfo", "proxycainfo", "checkrevoke", "sslversion"), "tool-network"),
    ),
    # starship: custom modules run `command` and `when` at every prompt; *_binary is run
    "starship": (
        ("custom.**", ("command", "when", "shell"), "tool-runs-code"),
        ("**", ("*binary",), "tool-runs-code"),
    ),
    # lesskey: #env variables; less runs LESSOPEN/LESSCLOSE for every file (and for stdin
    # with "|-"), so a git pager runs them too
    "lesskey": (
        (
            "**",
            ("lessopen", "lessclose", "lessedit", "visual", "editor", "shell", "less", "lesskey*"),
            "tool-runs-code",
        ),
    ),
    # wgetrc commands (wget ignores - and _ in names)
    "wget": (
        ("**", ("useaskpass",), "tool-runs-code"),
        (
            "**",
            (
                "httpproxy",
                "httpsproxy",
                "ftpproxy",
                "useproxy",
                "noproxy",
                "checkcertificate",
                "cacertificate",
                "cadirectory",
                "certificate",
                "privatekey",
            ),
            "tool-network",
        ),
    ),
    # curlrc: long option names, or their one-letter forms
    "curl": (
        ("**", ("engine",), "tool-runs-code"),
        ("**", ("config", "K"), "config-include"),
        (
            "**",
            (
                "proxy",
                "x",
                "preproxy",
                "socks*",
                "insecure",
                "k",
                "cacert",
                "capath",
                "proxyinsecure",
                "dohurl",
                "resolve",
                "connectto",
            ),
            "tool-network",
        ),
    ),
    "mimeapps": (("**", ("**",), "mime-handler"),),
    # gradle.properties: JVM arguments (-javaagent) and the JDK gradle runs; proxies
    "javaprops": (
        ("**", ("org.gradle.jvmargs", "org.gradle.java.home*"), "tool-runs-code"),
        ("**", ("systemprop.*proxy*", "systemprop.javax.net.ssl*"), "tool-network"),
    ),
}
_TOML_DOTTED = frozenset({"cargo", "starship"})
_INI_KEY_RE = re.compile(r"""-{0,2}("[^"]*"|'[^']*'|[^\s=]+)""")


def _ini_entries(lines: Sequence[str], dotted: bool) -> Iterator[tuple[int, str, str]]:
    """``(line, section, key)`` of an ini/toml/rc file, names normalised."""
    section = ""
    for n, raw in enumerate(lines, 1):
        s = raw.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("["):
            inner = s.strip("[] \t")
            section = ".".join(_norm_key(p.strip("\"' ")) for p in inner.split("."))
            continue
        m = _INI_KEY_RE.match(s)
        if m is None:
            continue
        key = m.group(1).strip("\"'").rstrip(":")
        if dotted and "." in key:
            head, _, key = key.rpartition(".")
            full = f"{section}.{head}" if section else head
            yield n, ".".join(_norm_key(p.strip("\"' ")) for p in full.split(".")), key
        else:
            yield n, section, key


def _keyed_rule(table: tuple[_KeyRule, ...], section: str, key: str) -> str | None:
    names = {key, _norm_key(key), _norm_key(key.split(":", 1)[0])}
    for sec_glob, keys, rule in table:
        if _glob(sec_glob).fullmatch(section) and any(
            _glob(k).fullmatch(name) for k in keys for name in names
        ):
            return rule
    return None


def _keyed_check(table: tuple[_KeyRule, ...], dotted: bool) -> _Check:
    def check(old: str, new: str, added: list[tuple[int, str]]) -> Iterator[_Found]:
        wanted = dict(added)
        for n, section, key in _ini_entries(new.split("\n"), dotted):
            rule = _keyed_rule(table, section, key) if n in wanted else None
            if rule is not None:
                yield rule, n, _excerpt(wanted[n])

    return check


# -- the content checks, by FileClass.check ------------------------------------------------

_Found = tuple[str, int | None, str]  # (rule, line, excerpt)
_Check = Callable[[str, str, list[tuple[int, str]]], Iterator[_Found]]
LineCheck = Callable[[str], Iterable[str]]


def _per_line(check: LineCheck) -> _Check:
    def run(old: str, new: str, added: list[tuple[int, str]]) -> Iterator[_Found]:
        for n, line in added:
            for rule in dict.fromkeys(check(line)):  # one finding per rule and line
                yield rule, n, _excerpt(line)

    return run


_CHECKS: dict[str, _Check] = {
    "shell": _per_line(_shell_line),
    "git": _git_findings,
    "gitattributes": _per_line(_gitattributes_line),
    "ssh": _per_line(_ssh_line),
    "vim": _per_line(_vim_line),
    "inputrc": _per_line(_inputrc_line),
}
_CHECKS.update({name: _keyed_check(t, name in _TOML_DOTTED) for name, t in _KEYED.items()})


# -- what the whole update knows: included files, new names --------------------------------


@dataclass
class _Context:
    """What :func:`assess` knows beyond one file (built by :func:`_context`)."""

    links: Mapping[str, str] = field(default_factory=dict)
    modes: Mapping[str, int] = field(default_factory=dict)
    git_configs: set[str] = field(default_factory=set)  # by name or included
    git_code_dirs: set[str] = field(default_factory=set)  # core.hooksPath, init.templateDir
    ssh_globs: set[str] = field(default_factory=set)  # Include targets
    fresh: set[str] = field(default_factory=set)  # reachable under a new name: judged whole
    changed: set[str] = field(default_factory=set)  # regular files of this update
    _sorted: list[str] | None = None

    def sorted_paths(self) -> list[str]:
        """Every path of the new tree, sorted (for prefix searches)."""
        if self._sorted is None:
            self._sorted = sorted(self.modes)
        return self._sorted


def _classes(path: str, ctx: _Context) -> list[FileClass]:
    out = list(_classes_by_name(path))
    if path in ctx.git_configs and _BY_NAME["git-config"] not in out:
        out.append(_BY_NAME["git-config"])
    if _match(path, ctx.ssh_globs) and _BY_NAME["ssh-config"] not in out:
        out.append(_BY_NAME["ssh-config"])
    if any(path.startswith(d + "/") for d in ctx.git_code_dirs):
        out.append(_GIT_HOOKS)
    return out


def _follow(path: str, links: Mapping[str, str], hops: int = 8) -> str:
    """Where ``path`` leads through the tree's symlinks (its own name if nowhere known)."""
    for _ in range(hops):
        if path not in links:
            break
        dest = _resolve(path, links[path])
        if dest is None:
            break
        path = dest
    return path


def _config_refs(
    paths: Iterable[str], read: Callable[[str], bytes | None], links: Mapping[str, str]
) -> tuple[set[str], set[str], set[str]]:
    """git config files (by name, and everything they include, transitively), the hook
    directories they name, and the globs of the ssh config files ``Include``d."""
    all_paths = set(paths)
    git = {p for p in all_paths if _match(p, GITCONFIG) and not _match(p, _NOT_GITCONFIG)}
    ssh_globs = set(SSH_CONFIG)
    code_dirs: set[str] = set()
    queue = sorted(git) + sorted(p for p in all_paths if _match(p, SSH_CONFIG))
    seen: set[str] = set()
    while queue and len(seen) < MAX_RISK_CONFIG_TEXTS:
        p = queue.pop(0)
        if p in seen:
            continue
        seen.add(p)
        data = read(_follow(p, links))
        if data is None:
            continue
        text = _text(data[:MAX_RISK_CONFIG_BYTES])
        if p in git:
            includes, dirs = _git_refs(p, text)
            code_dirs.update(dirs)
            for t in includes:
                git.add(t)
                queue.append(t)
        else:
            for g in _ssh_includes(p, text):
                ssh_globs.add(g)
                queue.extend(sorted(q for q in all_paths if _match(q, [g]) and q not in seen))
    return git, code_dirs, ssh_globs


def _includes_of(ch: FileChange, data: bytes, ctx: _Context) -> set[str]:
    """The paths a git/ssh config file includes (ssh globs matched against the tree)."""
    classes = {c.name for c in _classes(ch.path, ctx)}
    out: set[str] = set()
    text = _text(data)
    if "git-config" in classes:
        out.update(_git_refs(ch.path, text)[0])
    if "ssh-config" in classes:
        for g in _ssh_includes(ch.path, text):
            out.update(p for p in set(ctx.modes) | ctx.changed if _match(p, [g]))
    return out


def _context(changes: Sequence[FileChange], tree: Tree) -> tuple[_Context, list[FileChange]]:
    """The update's context, and synthetic changes for unchanged files that become
    config in this update (newly included): they are judged as new files."""
    modes = dict(tree.modes)
    contents: dict[str, bytes] = dict(tree.texts)
    regular: set[str] = set()
    for ch in changes:
        if ch.new_mode is None:
            modes.pop(ch.path, None)
            contents.pop(ch.path, None)
            continue
        modes[ch.path] = ch.new_mode
        if ch.new_mode == MODE_SYMLINK:
            contents.pop(ch.path, None)
        else:
            contents[ch.path] = ch.new
            regular.add(ch.path)
    links = dict(tree.links)
    git, code_dirs, ssh_globs = _config_refs(set(modes) | regular, contents.get, links)
    ctx = _Context(links, modes, git, code_dirs, ssh_globs, set(), regular)
    extra: list[FileChange] = []
    for ch in changes:
        if ch.new_mode is None:
            continue
        if ch.new_mode == MODE_SYMLINK:
            if ch.old_mode == MODE_SYMLINK and ch.old == ch.new:
                continue
            dest = _resolve(ch.path, _text(ch.new))
            if dest is not None:
                ctx.fresh.update(p for p in regular if p == dest or p.startswith(dest + "/"))
            continue
        old = ch.old if ch.old_mode not in (None, MODE_SYMLINK) else b""
        for target in sorted(_includes_of(ch, ch.new, ctx) - _includes_of(ch, old, ctx)):
            target = _follow(target, links)
            if target in regular:
                ctx.fresh.add(target)
            elif target in contents:
                mode = modes.get(target, MODE_FILE)
                extra.append(FileChange(target, None, mode, b"", contents[target]))
    return ctx, extra


# -- the driver ---------------------------------------------------------------------------


@dataclass
class _Collector:
    change: FileChange
    found: list[Finding] = field(default_factory=list)
    seen: set[tuple[str, int | None, str]] = field(default_factory=set)

    def add(self, rule: str, line: int | None = None, text: str = "") -> None:
        if (rule, line, text) in self.seen:  # one symlink can reach a class by many names
            return
        self.seen.add((rule, line, text))
        r = RULES[rule]
        self.found.append(
            Finding(r.id, r.severity, sanitize(self.change.path), line, text, r.explanation)
        )


def _whole_file(
    c: _Collector, rule: str, added: list[tuple[int, str]], binary: bool, comments: str
) -> None:
    """One finding for the file: its first added line that is not blank or a comment."""
    if binary:
        c.add(rule, None, "binary content")
        return
    code = [(n, s) for n, s in added if s.strip() and not (comments and s.lstrip()[:1] in comments)]
    if code:
        n, s = code[0]
        more = f" (+{len(code) - 1} more lines)" if len(code) > 1 else ""
        c.add(rule, n, _excerpt(s) + more)
    elif added and c.change.old_mode is None:
        c.add(rule, None, "new file")


def _reachable(path: str, target: str, aliases: Sequence[str], ctx: _Context) -> list[str]:
    """The names a new or retargeted symlink gives: itself and its aliases or - for a
    link to a directory of the tree - every file below it under those names."""
    names = [path, *aliases]
    dest = _resolve(path, target)
    if not dest:
        return names
    tree = ctx.sorted_paths()
    below: list[str] = []
    for p in tree[bisect.bisect_left(tree, dest + "/") :]:
        if not p.startswith(dest + "/"):
            break
        below.append(p[len(dest) :])
    return [n + rest for n in names for rest in below] if below else names


def _symlink_findings(c: _Collector, aliases: Sequence[str], ctx: _Context) -> None:
    change = c.change
    target = _text(change.new)
    if any(_hidden(ch) for ch in target):
        c.add("hidden-characters", None, "in the symlink target")
    if change.old_mode == MODE_SYMLINK and change.old == change.new:
        return
    shown = "now a symlink -> " + _excerpt(target)
    c.add("symlink", None, "-> " + _excerpt(target))
    dest = _resolve(change.path, target)
    for name in _reachable(change.path, target, aliases, ctx):
        real = (dest or "") + name[len(change.path) :] if name.startswith(change.path) else None
        judged = real in ctx.fresh  # the file it reaches is judged whole in this update
        in_path = _match(name, PATH_DIRS)
        if in_path:
            c.add("executable-in-path", None, shown)
        classes = _classes(name, ctx)
        for cls in classes:
            if cls.whole is not None:
                c.add(cls.whole, None, shown)
            elif cls.check is not None and not judged:
                c.add("symlink-config", None, shown)
        if not classes and not in_path and _is_config_place(name) and not judged:
            c.add("symlink-config", None, shown)


def findings_for(
    change: FileChange, aliases: Sequence[str] = (), context: _Context | None = None
) -> list[Finding]:
    """Every finding for one changed path; none for a removal.

    Args:
        change: the changed path.
        aliases: other paths of the new tree that lead to this one through symlinks
            (``.bashrc -> notes/shell``): the path rules apply to them as well, so a
            startup file cannot hide behind an innocent name.
        context: what :func:`assess` knows about the rest of the update.

    Returns:
        The findings, in rule order.
    """
    ctx = context or _Context()
    c = _Collector(change)
    if change.new_mode is None:
        return c.found
    path = change.path
    if path.startswith(SYSTEM_PREFIX):
        _system_findings(c, path[len(SYSTEM_PREFIX) :], change)
        return c.found
    names = [path, *aliases]
    if any(_hidden(ch) for ch in path):
        c.add("hidden-characters", None, "in the file name")
    if change.new_mode == MODE_SYMLINK:
        _symlink_findings(c, aliases, ctx)
        return c.found
    fresh = path in ctx.fresh or change.old_mode in (None, MODE_SYMLINK)
    old = b"" if fresh else change.old
    changed = fresh or change.old != change.new
    in_path = any(_match(n, PATH_DIRS) for n in names)
    if change.new_mode == MODE_EXECUTABLE and change.old_mode != MODE_EXECUTABLE:
        c.add("executable-in-path" if in_path else "executable-file", None, "mode 100755")
    elif in_path and changed:
        mode = "" if change.new_mode == MODE_EXECUTABLE else f" (mode {change.new_mode:o})"
        c.add("executable-in-path", None, "content changed" + mode)
    classes: list[FileClass] = []
    for n in names:
        classes += [cls for cls in _classes(n, ctx) if cls not in classes]
    binary = _is_binary(change.new)
    new_lines = _lines(change.new)
    added = [(i + 1, new_lines[i]) for i in _added(_lines(old), new_lines)]
    if binary and changed:
        c.add("binary-file", None, f"{len(change.new)} bytes")
    if not binary:
        for no, line in added:
            if any(_hidden(ch) for ch in line.rstrip("\r")):
                c.add("hidden-characters", no, _excerpt(line))
    if not added:
        return c.found  # a mode-only change, or only lines removed
    for cls in classes:
        if cls.whole is not None:
            _whole_file(c, cls.whole, added, binary, '#;"' if cls.check else "")
    checks = [cls.check for cls in classes if cls.check is not None]
    if any(n.endswith(".sh") for n in names):
        checks.append("shell")
    old_text, new_text = _text(old), _text(change.new)
    for check in dict.fromkeys(checks):
        for rule, line_no, text in _CHECKS[check](old_text, new_text, added):
            c.add(rule, line_no, text)
    if not classes and not in_path and any(_is_config_place(n) for n in names):
        _whole_file(c, "unclassified-config", added, binary, "")
    return c.found


SYSTEM_PREFIX = "system/"
"""The reserved directory of system files (``qgitconf.core.systemrules.SYSTEM_TOP``)."""

_SYSTEM_ROOT_RUN = _globs(
    (
        "etc/systemd/**",
        "etc/cron*",
        "etc/cron*/**",
        "etc/anacrontab",
        "etc/udev/**",
        "etc/modprobe.d/**",
        "etc/modules-load.d/**",
        "etc/apt/**",
        "etc/dnf/**",
        "etc/yum.repos.d/**",
        "etc/init.d/**",
        "etc/rc.local",
        "etc/rc*.d/**",
        "etc/NetworkManager/dispatcher.d/**",
        "etc/logrotate.d/**",
        "etc/tmpfiles.d/**",
        "etc/sysctl.conf",
        "etc/sysctl.d/**",
        "etc/environment",
        "etc/sudo*",
        "etc/sudo*/**",
        "etc/pam.d/**",
        "etc/ld.so.*",
        "etc/ld.so.*/**",
    )
)
"""System paths root runs or obeys (the denied ones too, should a rule ever change)."""
_SYSTEM_LOGIN = _globs(
    (
        "etc/profile",
        "etc/profile.d/**",
        "etc/bash.bashrc",
        "etc/bashrc",
        "etc/zsh/**",
        "etc/zshrc",
        "etc/zprofile",
        "etc/xdg/autostart/**",
        "etc/X11/Xsession*",
        "etc/X11/Xsession.d/**",
        "etc/X11/xinit/**",
        "etc/skel/**",
        "etc/inputrc",
        "etc/vim/**",
        "etc/gitconfig",
        "etc/ssh/ssh_config",
        "etc/ssh/ssh_config.d/**",
    )
)
"""System-wide files every user's shell, session or tools read and may run code from."""


def _system_findings(c: _Collector, rel: str, change: FileChange) -> None:
    """One finding for a changed system file (``rel`` relative to ``/``)."""
    if _SYSTEM_ROOT_RUN.fullmatch(rel):
        c.add("system-runs-as-root", None, "/" + rel + " (runs as root)")
    elif rel.startswith(("usr/local/bin/", "usr/local/sbin/")):
        c.add("system-path-program", None, "/" + rel + " (on root's PATH: runs as root)")
    elif _SYSTEM_LOGIN.fullmatch(rel):
        c.add("system-user-code", None, "/" + rel)
    else:
        c.add("system-file", None, "/" + rel)
    if change.new_mode == MODE_EXECUTABLE and change.old_mode != MODE_EXECUTABLE:
        c.add("executable-file", None, "mode 100755")


def _resolve(link: str, target: str) -> str | None:
    """Where ``link -> target`` points, as a $HOME-relative path (lexically)."""
    if target.startswith("/"):
        return None
    parts = link.split("/")[:-1]
    for comp in target.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                return None
            parts.pop()
        else:
            parts.append(comp)
    return "/".join(parts)


def symlink_aliases(links: Mapping[str, str], path: str, hops: int = 8) -> list[str]:
    """Paths of the tree that reach ``path`` through the symlinks ``links`` (path -> target).

    Args:
        links: symlinks of the tree.
        path: the path reached.
        hops: how many links in a chain are followed.

    Returns:
        Every alias, nearest first.
    """
    found: list[str] = []
    frontier = [path]
    for _ in range(hops):
        nxt: list[str] = []
        for p in frontier:
            for link, target in links.items():
                dest = _resolve(link, target)
                if dest is None:
                    continue
                if p == dest:
                    alias = link
                elif p.startswith(dest + "/"):
                    alias = link + p[len(dest) :]
                else:
                    continue
                if alias not in found and alias != path:
                    found.append(alias)
                    nxt.append(alias)
        if not nxt:
            break
        frontier = nxt
    return found


def tree_of(
    modes: Mapping[str, int], links: Mapping[str, str], read: Callable[[str], bytes]
) -> Tree:
    """The :class:`Tree` of an update's new commit, for :func:`assess`.

    Reads (through ``read``) only the git and ssh config files - by name, and every file
    they include, transitively (at most 200 files, 1 MiB each).

    Args:
        modes: every file and symlink of the tree (path -> git mode).
        links: every symlink of the tree (path -> target).
        read: content of a regular file of the tree.

    Returns:
        The tree.
    """
    texts: dict[str, bytes] = {}

    def fetch(p: str) -> bytes | None:
        if modes.get(p) not in (MODE_FILE, MODE_EXECUTABLE):
            return None
        if p not in texts:
            texts[p] = read(p)[:MAX_RISK_CONFIG_BYTES]
        return texts[p]

    _config_refs(modes, fetch, links)
    return Tree(links, modes, texts)


def assess(
    changes: Iterable[FileChange], links: Mapping[str, str] | Tree | None = None
) -> list[Finding]:
    """The risk report for an update: every finding, in path order.

    Args:
        changes: the changed paths.
        links: the new tree (:func:`tree_of`), or just its symlinks (path -> target), so
            rules also apply to a file reached through a symlink or an include.

    Returns:
        The findings.
    """
    tree = links if isinstance(links, Tree) else Tree(links or {})
    items = sorted(changes, key=lambda ch: ch.path)
    ctx, extra = _context(items, tree)
    out: list[Finding] = []
    for change in sorted([*items, *extra], key=lambda ch: ch.path):
        aliases = symlink_aliases(tree.links, change.path) if tree.links else []
        out.extend(findings_for(change, aliases, ctx))
    return out


def has_high(findings: Iterable[Finding]) -> bool:
    """Whether any finding is high (auto-apply refuses the update)."""
    return any(f.severity == "high" for f in findings)


def summary(findings: Sequence[Finding]) -> dict[str, int]:
    """Counts per severity, e.g. ``{"high": 2, "medium": 0, "low": 0}``."""
    counts = Counter(f.severity for f in findings)
    return {s: counts.get(s, 0) for s in SEVERITIES}
