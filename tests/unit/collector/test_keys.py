"""Write keys: stored hashed, looked up, rotated and revoked; the file never holds a key."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from leadflow.streams.collector import keys as keys_module
from leadflow.streams.collector.keys import ADMIN, KeyStore, KeyStoreError, hash_key


def now() -> datetime:
    return datetime(2026, 3, 1, tzinfo=UTC)


def test_create_lookup_and_the_file_holds_only_hashes(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    key = store.create("acme", now)
    assert key.startswith("lfw_")
    assert len(key) > 40
    record = store.lookup(key)
    assert record is not None
    assert record.workspace_id == "acme"
    assert record.sha256 == hash_key(key)
    text = (tmp_path / "keys.json").read_text()
    assert key not in text
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600
    assert store.lookup(key + "x") is None
    assert store.lookup("") is None


def test_rotation_revokes_old_keys_of_that_workspace_only(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    old = store.create("acme", now)
    other = store.create("globex", now)
    new = store.rotate("acme", now)
    assert store.lookup(old) is None
    assert store.lookup(new) is not None
    assert store.lookup(other) is not None
    assert [r.revoked_at is not None for r in store.records()] == [True, False, False]
    with pytest.raises(KeyStoreError, match="no write keys"):
        store.rotate("initech", now)


def test_a_second_store_on_the_same_file_sees_changes(tmp_path: Path) -> None:
    """The running collector and the CLI are different processes sharing the file."""
    serving = KeyStore(tmp_path / "keys.json")
    cli = KeyStore(tmp_path / "keys.json")
    assert serving.lookup("lfw_x") is None
    key = cli.create("acme", now)
    assert serving.lookup(key) is not None
    cli.revoke(serving.records()[0].key_id, now)
    assert serving.lookup(key) is None
    with pytest.raises(KeyStoreError, match="no active key"):
        cli.revoke("nope", now)


def test_a_corrupt_file_is_a_loud_error(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text("{not json")
    with pytest.raises(KeyStoreError, match="unreadable"):
        KeyStore(tmp_path / "keys.json").lookup("k")


def test_empty_workspace_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError):
        KeyStore(tmp_path / "keys.json").create(" ", now)


@pytest.mark.parametrize("bad", ["wsA\n", "ws A", "x' OR 1=1 --", "", "a" * 101, '"ws"'])
def test_workspace_ids_are_checked_whole(tmp_path: Path, bad: str) -> None:
    # Issue 19 (LOW): "wsA\n" passed the old ^...$ check (``$`` matches before a final newline).
    with pytest.raises(KeyStoreError, match="must match"):
        KeyStore(tmp_path / "keys.json").create(bad, now)


def test_a_key_recorded_for_an_invalid_workspace_id_selects_nothing(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    good = store.create("acme", now)
    bad = store.create("acme2", now)
    path = tmp_path / "keys.json"
    path.write_text(path.read_text().replace('"acme2"', '"acme2\\n"'))  # an older, looser file
    other = KeyStore(path)
    assert other.lookup(bad) is None
    found = other.lookup(good)
    assert found is not None
    assert found.workspace_id == "acme"


def test_admin_keys_are_their_own_role_and_rotate_apart(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    write = store.create("acme", now)
    admin = store.create("acme", now, role=ADMIN)
    assert admin.startswith("lfa_")
    record = store.lookup(admin)
    assert record is not None
    assert record.role == ADMIN
    new_write = store.rotate("acme", now)  # rotating write keys leaves the admin key alone
    assert store.lookup(write) is None
    assert store.lookup(admin) is not None
    assert store.lookup(new_write) is not None
    with pytest.raises(KeyStoreError, match="unknown key role"):
        store.create("acme", now, role="root")


def test_a_keys_file_that_disappears_is_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every request then gets "unknown write key"; the log used to say nothing of why.
    logged: list[tuple[str, int]] = []
    monkeypatch.setattr(
        keys_module.log, "error", lambda event, **kw: logged.append((event, kw["keys"]))
    )
    store = KeyStore(tmp_path / "keys.json")
    key = store.create("acme", now)
    assert store.lookup(key) is not None
    (tmp_path / "keys.json").unlink()
    assert store.lookup(key) is None
    assert store.lookup(key) is None  # still gone: said once
    assert logged == [("collector.keys.file_gone", 1)]
