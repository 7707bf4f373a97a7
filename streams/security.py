"""Kafka and ClickHouse client security, built from the settings in one place.

Two client libraries talk to the outside: confluent-kafka (collector producer, worker,
projector, admin, simulator) and clickhouse-connect. Each wants SASL/TLS in its own shape;
these translate the one set of ``LEADFLOW_*`` settings so that no client is built with a
plaintext connection by accident:

- confluent-kafka: :meth:`Settings.kafka_client_config` (librdkafka keys),
- clickhouse-connect: :func:`clickhouse_options` (keyword arguments of ``get_client``).
"""

from __future__ import annotations

from typing import Any

from leadflow.streams.settings import Settings


def clickhouse_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for clickhouse-connect's ``get_client`` (DSN and TLS).

    The embedded engine (``chdb://``) takes no TLS options; a server gets ``secure``,
    ``verify`` and the certificate paths that are set.

    Example:
        >>> from leadflow.streams.settings import load_settings
        >>> opts = clickhouse_options(load_settings(
        ...     clickhouse_dsn="https://u:p@ch:8443/leadflow", clickhouse_ca_cert="/ca.pem"))
        >>> {k: v for k, v in opts.items() if k != "dsn"}
        {'secure': True, 'verify': True, 'ca_cert': '/ca.pem'}
    """
    url = settings.clickhouse_url
    options: dict[str, Any] = {"dsn": url}
    if url.startswith("chdb:"):
        return options
    options["secure"] = settings.clickhouse_secure or url.startswith("https:")
    options["verify"] = settings.clickhouse_verify
    for key, path in (
        ("ca_cert", settings.clickhouse_ca_cert),
        ("client_cert", settings.clickhouse_client_cert),
        ("client_cert_key", settings.clickhouse_client_cert_key),
    ):
        if path is not None:
            options[key] = str(path)
    return options
