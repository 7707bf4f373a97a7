"""leadflow: an event-sourced streaming pipeline for B2B lead generation.

The code lives in the top-level folders of the repository, each one package named
``leadflow.<folder>`` (``streams/`` is ``leadflow.streams``, ``cli/`` is ``leadflow.cli``...):
``[tool.setuptools] package-dir`` in pyproject.toml maps them, for the wheel and for the
editable install alike, so nothing generic lands at the top of ``site-packages``.
"""

__version__ = "0.1.0"
