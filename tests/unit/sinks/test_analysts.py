"""Users of the HTTP interface: the operator's user and workspace analysts (hashed, rotatable)."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from leadflow.sinks.analysts import AnalystError, AnalystStore, Authenticator, users_path
from leadflow.streams.settings import load_settings


def _now() -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC)


def test_analysts_are_stored_hashed_and_authenticate_to_their_workspace(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, clickhouse_http_password=SecretStr("s3cret"))
    store = AnalystStore(users_path(settings))
    user, password = store.add("acme-eu", _now)
    assert user == "analyst_acme_eu"
    assert password not in users_path(settings).read_text()
    assert stat.S_IMODE(users_path(settings).stat().st_mode) == 0o600
    auth = Authenticator(settings)
    assert auth.authenticate(user, password) == auth.authenticate(user, password)
    principal = auth.authenticate(user, password)
    assert principal is not None
    assert principal.workspace_id == "acme-eu"
    assert auth.authenticate(user, password + "x") is None
    assert auth.authenticate("nobody", password) is None
    operator = auth.authenticate("default", "s3cret")
    assert operator is not None
    assert operator.workspace_id is None
    assert auth.authenticate("default", "") is None
    with pytest.raises(AnalystError, match="exists"):
        store.add("acme-eu", _now)
    fresh = store.rotate(user, _now)
    assert auth.authenticate(user, password) is None
    assert auth.authenticate(user, fresh) is not None
    store.revoke(user, _now)
    assert auth.authenticate(user, fresh) is None
    with pytest.raises(AnalystError, match="no active user"):
        store.rotate(user, _now)


def test_the_operator_needs_no_password_only_on_loopback(tmp_path: Path) -> None:
    auth = Authenticator(load_settings(data_dir=tmp_path))
    assert auth.authenticate("default", "") is not None
    assert auth.authenticate("default", "anything") is None
