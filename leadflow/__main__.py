"""``python -m leadflow`` is the ``leadflow`` command."""

from leadflow.streams.cli import main

main()
