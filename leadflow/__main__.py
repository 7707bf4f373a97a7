"""``python -m leadflow`` is the ``leadflow`` command."""

from leadflow.cli.main import main

main()
