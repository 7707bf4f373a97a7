"""The partition store's changelog: what a transaction puts on it, and what a restore rebuilds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from leadflow.streams.engine.stores import PartitionStore

# One transaction: writes (None deletes) over a few keys, then commit (True) or abort.
WRITES = st.lists(
    st.tuples(st.sampled_from([b"a", b"b", b"c"]), st.one_of(st.none(), st.binary(max_size=2))),
    max_size=6,
)
TRANSACTIONS = st.lists(st.tuples(WRITES, st.booleans()), max_size=8)


def test_a_key_written_and_deleted_in_one_transaction_puts_nothing_on_the_changelog() -> None:
    store = PartitionStore()
    store.put(b"held", b"record")
    store.put(b"held", None)
    store.put(b"never", None)
    assert store.pending == {}
    assert store.get(b"held") is None
    store.commit()
    assert store.data == {}


def test_deleting_a_committed_key_still_writes_a_tombstone() -> None:
    store = PartitionStore()
    store.apply(b"kept", b"1")
    store.put(b"kept", b"2")
    store.put(b"kept", None)
    assert store.pending == {b"kept": None}
    assert store.get(b"kept") is None
    assert list(store.items()) == []
    store.commit()
    assert store.data == {}


@settings(max_examples=300, deadline=None)
@given(TRANSACTIONS)
def test_a_restore_from_the_changelog_rebuilds_what_the_store_holds(
    transactions: list[tuple[list[tuple[bytes, bytes | None]], bool]],
) -> None:
    store = PartitionStore()
    reference: dict[bytes, bytes] = {}  # every write applied as it comes, commits only
    changelog: list[tuple[bytes, bytes | None]] = []  # what the engine produces per commit
    for writes, commits in transactions:
        seen = dict(reference)
        for key, value in writes:
            store.put(key, value)
            if value is None:
                seen.pop(key, None)
            else:
                seen[key] = value
            assert {k: v for k, v in store.items()} == seen
        if commits:
            changelog.extend(store.pending.items())
            store.commit()
            reference = seen
        else:
            store.abort()
        assert store.data == reference
    restored = PartitionStore()
    for key, value in changelog:
        restored.apply(key, value)
    assert restored.data == store.data
