"""``python -m run`` is the ``vballoon`` command."""

from run.console.cli import main

main()
