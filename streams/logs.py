"""structlog, configured once at the entry point: pretty on a terminal, JSON everywhere else.

Secrets and personal data never reach a log line: values under sensitive keys are masked
by a processor, so a careless ``log.info(..., password=...)`` is harmless.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import structlog
from pydantic import SecretStr

from leadflow.streams.settings import LogFormat, Settings

# Keys whose values are secrets or personal data: masked wherever they appear in an event.
SENSITIVE_KEYS = frozenset(
    {
        "password",
        "secret",
        "token",
        "authorization",
        "write_key",
        "api_key",
        "dsn",
        "sasl_password",
        "email",
        "ip",
        "phone",
        "name",
        "first_name",
        "last_name",
        "user_agent",
        "subject_email",
    }
)
MASK = "***"
# Client configs name secrets with dotted or prefixed keys ("sasl.password",
# "ssl.key.password", "kafka_sasl_password"): any key ending in one of these is a secret.
_SECRET_SUFFIXES = ("password", "secret", "token", "api_key", "write_key", "dsn")
# Credentials inside URLs ("https://user:pass@host") that end up in messages and errors.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]+):[^@\s]+@")


def is_sensitive(key: object) -> bool:
    """Whether values under ``key`` are masked in logs.

    Example:
        >>> is_sensitive("sasl.password"), is_sensitive("Email"), is_sensitive("topic")
        (True, True, False)
    """
    name = str(key).lower()
    return name in SENSITIVE_KEYS or name.endswith(_SECRET_SUFFIXES)


def _mask(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: MASK if is_sensitive(k) else _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    if isinstance(value, str) and "@" in value:
        return _URL_CREDENTIALS.sub(r"\g<scheme>:" + MASK + "@", value)
    return value


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Structlog processor: replace sensitive values with ``***``, recursively.

    Example:
        >>> redact(None, "info", {"event": "x", "email": "a@b.c", "ctx": {"token": "t"}})
        {'event': 'x', 'email': '***', 'ctx': {'token': '***'}}
        >>> redact(None, "info", {"event": "ch down: http://lf:s3cret@ch:8123/"})["event"]
        'ch down: http://lf:***@ch:8123/'
    """
    for key in list(event_dict):
        if is_sensitive(key):
            event_dict[key] = MASK
        else:
            event_dict[key] = _mask(event_dict[key])
    return event_dict


def secret_values(settings: Settings) -> tuple[str, ...]:
    """The configured secrets themselves (SASL and key passwords, the DSN's password ...).

    Key names cannot protect a secret that a library formats into its message text
    ("auth failed with {'sasl.password': ...}"), so the values are scrubbed as well.

    Example:
        >>> from leadflow.streams.settings import load_settings
        >>> secret_values(load_settings(clickhouse_dsn="https://lf:pa55word@ch:8443"))
        ('https://lf:pa55word@ch:8443', 'pa55word')
    """
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
    if settings.clickhouse_dsn is not None:
        found.append(urlsplit(settings.clickhouse_dsn.get_secret_value()).password or "")
    # Very short values would mask ordinary words; such secrets are not secrets anyway.
    return tuple(v for v in dict.fromkeys(found) if len(v) >= 4)


class ScrubSecrets:
    """Structlog processor: replace every configured secret value in every string."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        """Remember the values to scrub, longest first (a DSN before its password)."""
        self.secrets = tuple(sorted(secrets, key=len, reverse=True))

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                value = value.replace(secret, MASK)
            return value
        if isinstance(value, Mapping):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        return value

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Scrub ``event_dict`` in place and return it."""
        if self.secrets:
            for key in list(event_dict):
                event_dict[key] = self._scrub(event_dict[key])
        return event_dict


def configure_logging(settings: Settings) -> None:
    """Set up structlog and route the standard library's logging (faust, kafka) through it."""
    scrub = ScrubSecrets(secret_values(settings))
    use_json = settings.log_format is LogFormat.JSON or (
        settings.log_format is LogFormat.AUTO and not sys.stderr.isatty()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
        scrub,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,  # again: a formatted traceback may quote a DSN with its password
            scrub,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("aiokafka", "kafka", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class Throttle:
    """Whether a repeated log line is due: at most one per ``seconds`` per key.

    Through an outage the same warning would otherwise be logged at every retry.

    Example:
        >>> throttle = Throttle(10.0)
        >>> throttle.due("worker.retry"), throttle.due("worker.retry"), throttle.due("other")
        (True, False, True)
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last: dict[str, float] = {}

    def due(self, key: str) -> bool:
        """True (and the key's clock restarted) when ``key`` was not logged within the period."""
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.seconds:
            return False
        self._last[key] = now
        return True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A named structlog logger."""
    return structlog.stdlib.get_logger(name)
