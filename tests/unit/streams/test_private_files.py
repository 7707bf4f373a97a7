"""Private file modes: new key files, the model key and an older data dir brought to 0600/0700."""

from __future__ import annotations

import doctest
import stat
from datetime import UTC, datetime
from pathlib import Path

from leadflow.streams import private_files
from leadflow.streams.collector.keys import KeyStore
from leadflow.streams.private_files import tighten, write_private
from leadflow.streams.settings import load_settings
from leadflow.streams.worker import model_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_doctests() -> None:
    assert doctest.testmod(private_files).failed == 0


def test_an_older_tree_is_tightened_and_symlinks_are_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "kafka"
    (root / "data" / "leadflow.pii-keys-0").mkdir(parents=True)
    segment = root / "data" / "leadflow.pii-keys-0" / "00000000000000000000.log"
    segment.write_bytes(b"key bytes")
    segment.chmod(0o644)
    (root / "data").chmod(0o755)
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours to change")
    outside.chmod(0o644)
    (root / "link").symlink_to(outside)
    assert tighten(root) >= 2
    assert _mode(segment) == 0o600
    assert _mode(root / "data") == 0o700
    assert _mode(outside) == 0o644
    assert tighten(root) == 0  # nothing left to change


def test_write_private_replaces_a_wider_file(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"old")
    path.chmod(0o644)
    write_private(path, b"new")
    assert (path.read_bytes(), _mode(path)) == (b"new", 0o600)


def test_key_files_and_the_model_key_are_private(tmp_path: Path) -> None:
    KeyStore(tmp_path / "collector" / "keys.json").create("acme", lambda: datetime.now(UTC))
    assert _mode(tmp_path / "collector" / "keys.json") == 0o600
    assert _mode(tmp_path / "collector") == 0o700
    model_key(load_settings(data_dir=tmp_path / "data"))
    assert _mode(tmp_path / "data" / "model.key") == 0o600
