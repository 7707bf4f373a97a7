"""Kafka SASL/TLS and ClickHouse TLS reach every client; secrets never reach a log line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import KafkaException, Producer

from leadflow.streams.engine.kafka import consumer_config, producer_config
from leadflow.streams.logs import configure_logging, get_logger
from leadflow.streams.security import clickhouse_options
from leadflow.streams.settings import Settings, SettingsError, load_settings

PASSWORD = "s3cr3t-SASL-pw"  # must never appear in any log output
KEY_PASSWORD = "k3y-pw"

SASL = {
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "leadflow",
    "kafka_sasl_password": PASSWORD,
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed CA-less client certificate with an encrypted key (openssl)."""
    folder = tmp_path_factory.mktemp("certs")
    cert, key = folder / "client.pem", folder / "client.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-days", "1", "-subj", "/CN=lf",
         "-keyout", str(key), "-out", str(cert), "-passout", f"pass:{KEY_PASSWORD}"],
        check=True, capture_output=True,
    )  # fmt: skip
    return {"cert": cert, "key": key}


def test_plaintext_is_the_local_default() -> None:
    settings = load_settings()
    assert settings.kafka_client_config() == {
        "bootstrap.servers": "127.0.0.1:19092",
        "security.protocol": "PLAINTEXT",
    }


def test_confluent_config_carries_sasl_and_tls(certs: dict[str, Path]) -> None:
    settings = load_settings(
        **SASL,
        kafka_bootstrap="b1:9093,b2:9093",
        kafka_ssl_cafile=certs["cert"],
        kafka_ssl_certfile=certs["cert"],
        kafka_ssl_keyfile=certs["key"],
        kafka_ssl_key_password=KEY_PASSWORD,
    )
    assert settings.kafka_client_config() == {
        "bootstrap.servers": "b1:9093,b2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "leadflow",
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(certs["cert"]),
        "ssl.certificate.location": str(certs["cert"]),
        "ssl.key.location": str(certs["key"]),
        "ssl.key.password": KEY_PASSWORD,
        "ssl.endpoint.identification.algorithm": "https",
    }
    unchecked = settings.model_copy(update={"kafka_ssl_check_hostname": False})
    assert unchecked.kafka_client_config()["ssl.endpoint.identification.algorithm"] == "none"


def test_the_worker_clients_get_the_same_sasl_and_tls(certs: dict[str, Path]) -> None:
    settings = load_settings(
        **SASL,
        kafka_ssl_cafile=certs["cert"],
        kafka_ssl_certfile=certs["cert"],
        kafka_ssl_keyfile=certs["key"],
        kafka_ssl_key_password=KEY_PASSWORD,
    )
    secure = ("sasl.", "ssl.", "security.")
    wanted = {k: v for k, v in settings.kafka_client_config().items() if k.startswith(secure)}
    for config in (consumer_config(settings, "w1"), producer_config(settings, "w1")):
        assert {k: v for k, v in config.items() if k.startswith(secure)} == wanted
        assert config["security.protocol"] == "SASL_SSL"
        assert config["sasl.password"] == PASSWORD


def test_a_wrong_key_password_fails_loudly(certs: dict[str, Path]) -> None:
    settings = load_settings(
        kafka_security_protocol="SSL",
        kafka_ssl_certfile=certs["cert"],
        kafka_ssl_keyfile=certs["key"],
        kafka_ssl_key_password="wrong",
    )
    with pytest.raises(KafkaException, match=r"(?i)bad decrypt|password|PEM|ssl.key"):
        Producer(producer_config(settings, "w1"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kafka_sasl_mechanism": "PLAIN"}, "LEADFLOW_KAFKA_SASL_MECHANISM: .*needs"),
        ({"kafka_security_protocol": "SASL_SSL"}, "LEADFLOW_KAFKA_SASL_MECHANISM: .*must be set"),
        ({**SASL, "kafka_sasl_mechanism": "GSSAPI"}, "must be one of PLAIN"),
        ({"kafka_security_protocol": "TLS"}, "LEADFLOW_KAFKA_SECURITY_PROTOCOL"),
        ({"collector_cors_origins": ("https://shop.example/",)}, "is not an origin"),
        ({"collector_cors_origins": ("shop.example",)}, "LEADFLOW_COLLECTOR_CORS_ORIGINS"),
    ],
)
def test_inconsistent_security_settings_are_refused(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(**overrides)


def test_clickhouse_tls_options(certs: dict[str, Path]) -> None:
    assert clickhouse_options(load_settings(data_dir=Path("/d"))) == {"dsn": "chdb:///d/clickhouse"}
    options = clickhouse_options(
        load_settings(
            clickhouse_dsn="http://lf:pw@ch:8123/leadflow",
            clickhouse_secure=True,
            clickhouse_verify=False,
            clickhouse_ca_cert=certs["cert"],
            clickhouse_client_cert=certs["cert"],
            clickhouse_client_cert_key=certs["key"],
        )
    )
    assert options == {
        "dsn": "http://lf:pw@ch:8123/leadflow",
        "secure": True,
        "verify": False,
        "ca_cert": str(certs["cert"]),
        "client_cert": str(certs["cert"]),
        "client_cert_key": str(certs["key"]),
    }
    https = clickhouse_options(load_settings(clickhouse_dsn="https://ch:8443"))
    assert (https["secure"], https["verify"]) == (True, True)


def test_clickhouse_connect_accepts_the_tls_options(monkeypatch: pytest.MonkeyPatch) -> None:
    # The options are real get_client keywords: the client it builds is secure and
    # verifies (construction pings the server, so the ping is stubbed out).
    from clickhouse_connect.driver.httpclient import HttpClient

    from leadflow.cli.report import clickhouse_client

    monkeypatch.setattr(HttpClient, "_init_common_settings", lambda *_a, **_k: None)
    seen: dict[str, Any] = {}
    real_init = HttpClient.__init__

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        seen["interface"] = args[0] if args else kwargs.get("interface")
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(HttpClient, "__init__", spy)
    settings = load_settings(clickhouse_dsn="http://lf:pw@127.0.0.1:1/x", clickhouse_secure=True)
    clickhouse_client(settings)
    assert seen["interface"] == "https"
    assert seen["verify"] is True


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(load_settings(**SASL, kafka_ssl_key_password=KEY_PASSWORD, log_format="json"))
    root = logging.getLogger()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    previous = handler.setStream(stream)
    try:
        yield stream
    finally:
        handler.setStream(previous)


def test_sasl_password_never_reaches_a_log_line(log_output: io.StringIO) -> None:
    settings = load_settings(**SASL, kafka_ssl_key_password=KEY_PASSWORD)
    log = get_logger("test.security")
    log.info("kafka.connect", config=settings.kafka_client_config())
    log.info("settings", env=settings.to_env(), sasl_password=PASSWORD)
    log.info("settings.repr", settings=repr(settings))
    logging.getLogger("aiokafka").error("auth failed with %s", {"sasl.password": PASSWORD})
    try:
        raise ConnectionError("http://leadflow:" + PASSWORD + "@ch:8123 refused")
    except ConnectionError:
        log.exception("clickhouse.down", dsn="http://leadflow:" + PASSWORD + "@ch:8123")
    text = log_output.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 5
    assert PASSWORD not in text
    assert KEY_PASSWORD not in text
    assert lines[0]["config"]["sasl.password"] == "***"
    assert lines[0]["config"]["sasl.username"] == "leadflow"  # not over-masked
    assert "leadflow:***@ch:8123" in lines[4]["exception"]


def test_collector_defaults_are_safe() -> None:
    settings = Settings()
    assert "*" not in settings.collector_cors_origins
    assert settings.collector_max_event_bytes == 32 * 1024
    assert settings.collector_max_batch_bytes == 4000 * 1024  # RudderStack gateway default
    assert settings.collector_rate_per_second == 1000.0
    assert settings.collector_rate_burst == 2000.0


def test_cors_answers_only_listed_origins_and_never_allows_credentials(tmp_path: Path) -> None:
    from leadflow.schemas.codec import SingleObjectCodec
    from leadflow.streams.collector.app import Collector, create_app
    from leadflow.streams.collector.keys import KeyStore

    collector = Collector(
        settings=load_settings(data_dir=tmp_path, collector_cors_origins=("https://shop.example",)),
        keys=KeyStore(tmp_path / "keys.json"),
        sink=object(),
        encode=SingleObjectCodec().encode,
        clock_ms=lambda: 0,
        monotonic=lambda: 0.0,
        new_id=lambda: "id",
    )
    app = create_app(collector, manage_sink=False)

    async def preflight(origin: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.options(
                "/v1/track",
                headers={
                    "Origin": origin,
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )

    allowed = asyncio.run(preflight("https://shop.example"))
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert "access-control-allow-credentials" not in allowed.headers
    refused = asyncio.run(preflight("https://evil.example"))
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
