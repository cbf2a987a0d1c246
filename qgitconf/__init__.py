"""qgitconf: signed, Git-backed dotfiles for Qubes OS qubes."""

__version__ = "0.1.0"
