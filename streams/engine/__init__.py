"""The worker's stream engine: consume a batch, process it, commit it in one Kafka transaction.

Separated as quix-streams separates its parts:

- :mod:`.kafka`: the Kafka layer (one consumer, one transactional producer, error classes);
- :mod:`.stores`: state stores per (store, input partition), restored from compacted
  changelogs and written in the same transaction as the outputs and input offsets;
- :mod:`.stage`: how a stage is declared and what a task may touch (:class:`TaskContext`);
- :mod:`.loop`: the batch loop, rebalances, aborts and outages.

Why it exists (docs/architecture.md, "Why the worker left faust"): faust-streaming 0.15.3
committed offsets past records it never processed after a restart under traffic.
"""
