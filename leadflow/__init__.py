"""leadflow: an event-sourced streaming pipeline for B2B lead generation.

The code lives in the design card's folders (``streams/``, ``schemas/``, ``processors/``,
``sinks/``, ``infra/``), reached here through relative links so that everything imports as
``leadflow.<folder>`` and nothing generic lands at the top of ``site-packages``.
"""

__version__ = "0.1.0"
