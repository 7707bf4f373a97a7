"""Seeded, deterministic B2B lead-generation traffic as Segment messages (``leadflow simulate``).

``model`` holds the world (ideal customer profile, personas, channels, campaigns, pages),
``generator`` walks simulated people through it in event time, ``send`` delivers the
messages to the collector's HTTP API or straight to Kafka, ``cli`` is the command.
"""
