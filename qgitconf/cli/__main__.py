"""``python -m qgitconf.cli``: the command line without the click-free entry point."""

from qgitconf.cli.run import main

main()
