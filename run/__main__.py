"""``python -m run`` is the ``vballoon`` command."""

from run.cli import main

main()
