from pathlib import Path

import pytest
from pydantic import ValidationError

from leadflow.streams.logs import redact
from leadflow.streams.settings import SettingsError, load_settings


def test_defaults_use_a_local_broker_and_embedded_clickhouse(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.local_kafka
    assert settings.bootstrap == "127.0.0.1:19092"
    assert settings.clickhouse_url == f"chdb://{tmp_path.resolve() / 'clickhouse'}"


def test_bootstrap_from_environment_disables_the_local_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEADFLOW_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    settings = load_settings()
    assert not settings.local_kafka
    assert settings.bootstrap == "kafka-1:9092,kafka-2:9092"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LEADFLOW_KAFKA_PORT", "not-a-port"),
        ("LEADFLOW_KAFKA_PORT", "70000"),
        ("LEADFLOW_LOG_FORMAT", "xml"),
        ("LEADFLOW_TOPIC_PARTITIONS", "0"),
        ("LEADFLOW_WORKER_BATCH_MAX", "0"),
        ("LEADFLOW_KAFKA_SECURITY_PROTOCOL", "CARRIER_PIGEON"),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    with pytest.raises(ValidationError):
        settings.kafka_port = 1  # type: ignore[misc]


def test_secrets_are_hidden_in_repr_and_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADFLOW_KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("LEADFLOW_CLICKHOUSE_DSN", "https://u:topsecret@ch:8443/leadflow")
    settings = load_settings()
    assert "hunter2" not in repr(settings)
    assert "topsecret" not in repr(settings)
    assert settings.kafka_client_config()["sasl.password"] == "hunter2"


def test_log_redaction_masks_nested_secrets_and_pii() -> None:
    event = redact(None, "info", {"event": "x", "email": "a@b.c", "ctx": [{"password": "p"}]})
    assert event == {"event": "x", "email": "***", "ctx": [{"password": "***"}]}


def test_to_env_rebuilds_the_same_settings_in_a_child_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        kafka_port=29092,
        kafka_sasl_password="s3cret",
        collector_cors_origins=("https://a.example", "https://b.example"),
        worker_batch_max=250,
    )
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    assert load_settings() == settings
