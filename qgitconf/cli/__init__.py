"""The command line: ``cli``, the click tree of commands (``tree.py``), and ``main``, which
runs it and turns errors into exit statuses (``run.py``)."""

from qgitconf.cli.run import main
from qgitconf.cli.tree import cli

__all__ = ["cli", "main"]
