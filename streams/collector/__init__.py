"""The Segment-compatible HTTP collector: validate, map to :class:`Event`, produce to Kafka.

Pure parts (tracking plan, channel grouping, mapping, limits) are importable without
FastAPI or Kafka; ``app`` and ``producer`` are the I/O glue. See docs/collector.md.
"""
