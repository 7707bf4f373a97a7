"""Kafka and ClickHouse client security, built from the settings in one place.

Three client libraries talk to the outside: confluent-kafka (collector producer, projector,
admin, simulator), aiokafka through faust (the worker) and clickhouse-connect. Each wants
SASL/TLS in its own shape; these helpers translate the one set of ``LEADFLOW_*`` settings
so that no client is built with a plaintext connection by accident:

- confluent-kafka: :meth:`Settings.kafka_client_config` (librdkafka keys),
- faust/aiokafka: :func:`faust_credentials` (``broker_credentials=``),
- clickhouse-connect: :func:`clickhouse_options` (keyword arguments of ``get_client``).
"""

from __future__ import annotations

import ssl
from typing import Any

from leadflow.streams.settings import Settings


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for aiokafka, or ``None`` when the protocol has no TLS.

    Example:
        >>> from leadflow.streams.settings import load_settings
        >>> kafka_ssl_context(load_settings()) is None
        True
        >>> kafka_ssl_context(load_settings(kafka_security_protocol="SSL")).check_hostname
        True
    """
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    context.check_hostname = settings.kafka_ssl_check_hostname
    if settings.kafka_ssl_certfile:
        password = settings.kafka_ssl_key_password
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            password.get_secret_value() if password else None,
        )
    return context


def faust_credentials(settings: Settings) -> Any:
    """The ``broker_credentials`` of faust for the settings (``None`` for plaintext).

    SASL_SSL gives SASL credentials carrying the TLS context, SSL gives TLS credentials,
    SASL_PLAINTEXT gives SASL credentials without TLS.

    Example:
        >>> from leadflow.streams.settings import load_settings
        >>> creds = faust_credentials(load_settings(
        ...     kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256",
        ...     kafka_sasl_username="svc", kafka_sasl_password="pw"))
        >>> creds.protocol.value, creds.mechanism.value, creds.username
        ('SASL_PLAINTEXT', 'SCRAM-SHA-256', 'svc')
        >>> faust_credentials(load_settings()) is None
        True
    """
    import faust

    context = kafka_ssl_context(settings)
    if settings.kafka_sasl_mechanism:
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username or "",
            password=password.get_secret_value() if password else "",
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


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
