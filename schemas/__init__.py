"""Avro schemas of every event and the codec that reads and writes them."""
