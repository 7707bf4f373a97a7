"""leadflow's benchmark harness: ``make bench`` (or ``python -m bench.run``).

Each module measures one family of figures next to a baseline taken in the same run, and
writes them as JSON rows that :mod:`bench.run` gathers into one table. See docs/benchmarks.md.
"""
