"""The collector's HTTP layer: the trackers' APIs, pixels and webhooks before the log.

A request goes through, in order: body size (413), write key (401), UTF-8 and JSON
(400), the per-key rate (429); then each message on its own: its size and validation
(every problem with its path). Valid messages are encoded and produced to
``leadflow.events``, refused ones to ``leadflow.events.dlq`` with their reasons; the 200
(listing both) is sent only after Kafka acknowledged every record (acks=all), else 503
with ``Retry-After``. A request with nothing storable is a 400/413. See docs/collector.md.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from leadflow import __version__
from leadflow.processors.bounds import BoundsTable
from leadflow.processors.bounds_load import load_bounds
from leadflow.processors.errors import LeadflowError
from leadflow.processors.events import Event, Kind
from leadflow.processors.evolve import evolve
from leadflow.streams.collector.admin import Admin, add_admin_routes, bearer_token
from leadflow.streams.collector.dead_letters import DeadLetter, dead_letter
from leadflow.streams.collector.keys import WRITE, KeyRecord, KeyStore
from leadflow.streams.collector.limits import RateLimiter
from leadflow.streams.collector.mapping import MapOptions, Mapped, map_message, pydantic_errors
from leadflow.streams.collector.metrics import CollectorMetrics
from leadflow.streams.collector.models import (
    Accepted,
    AliasMessage,
    BatchRequest,
    FieldError,
    GroupMessage,
    IdentifyMessage,
    PageMessage,
    Problem,
    Refusal,
    ScreenMessage,
    SegmentContext,
    TrackMessage,
)
from leadflow.streams.collector.pixel import GIF, PIXEL_TYPES, PixelError, pixel_message
from leadflow.streams.collector.producer import EventProducer, KafkaUnavailable
from leadflow.streams.collector.receive_clock import ReceiveClock, Stamp
from leadflow.streams.collector.timing import epoch_ms
from leadflow.streams.collector.webhooks import inbound, postmark
from leadflow.streams.collector.webhooks.config import VENDORS, WebhookSecrets
from leadflow.streams.collector.webhooks.replay import ReplayGuard
from leadflow.streams.logs import get_logger
from leadflow.streams.pii.erasure import Eraser, build_eraser
from leadflow.streams.pii.keyring import KeyringError
from leadflow.streams.pii.vault import Vault
from leadflow.streams.settings import Settings
from leadflow.streams.topics import DLQ, EVENTS

log = get_logger(__name__)
# ``batch[12].context.device`` -> ``context.device``: the shape of a dropped path.
_BATCH_INDEX = re.compile(r"^batch\[\d+\]\.")

# What a public write key may not do: it is in every web page. Erasure needs the admin API
# (an admin key) or `leadflow erase` (docs/privacy.md, "Threat model").
DESTRUCTIVE_KINDS = frozenset({Kind.ERASURE_REQUESTED})
FORBIDDEN = (
    "a write key cannot request erasure: use POST /v1/erasure with an admin key, or "
    "`leadflow erase`"
)


class Sink(Protocol):
    """Where accepted events go (the Kafka producer; tests may pass another)."""

    available: bool

    def start(self) -> None:
        """Connect and start delivering."""

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued and stop."""

    def reachable(self, timeout: float = 2.0) -> bool:
        """Whether the destination answers now."""

    async def send(
        self,
        records: Sequence[tuple[bytes, bytes]],
        dead: Sequence[DeadLetter] = (),
        queued: Callable[[], None] | None = None,
    ) -> float:
        """Deliver all records (and dead letters) or raise :class:`KafkaUnavailable`.

        ``queued`` is called once every record is in the order it will be written in (or
        never will be), before the acknowledgements are awaited.
        """


def wall_clock_ms() -> int:
    """The collector's clock (``receivedAt``): the one legitimate wall-clock read."""
    return time.time_ns() // 1_000_000


def keys_path(settings: Settings) -> Path:
    """Where the hashed write keys live.

    Example:
        >>> from leadflow.streams.settings import load_settings
        >>> str(keys_path(load_settings(data_dir="/tmp/lf")))
        '/tmp/lf/collector/keys.json'
    """
    return settings.collector_keys_file or settings.data_dir / "collector" / "keys.json"


@dataclass
class Collector:
    """Everything a running collector uses, injected so tests control clocks and Kafka.

    Attributes:
        settings: limits, tolerance, CORS origins.
        keys: the write keys.
        sink: where events go.
        encode: event -> Avro bytes (the project codec).
        clock_ms: ``receivedAt`` source, UTC epoch ms.
        monotonic: the rate limiter's clock, seconds.
        new_id: event id for messages without ``messageId``.
        vault: seals PII before it reaches Kafka (None: off).
        webhooks: the vendors' webhook secrets per workspace (None: no webhooks).
        bounds: accepted ranges of amounts and counts per workspace.
        eraser: the admin API's erasure (None: no admin API, e.g. tests without Kafka).
        receive: stamps ``receivedAt`` (over ``clock_ms``) and gives the heartbeats' floor;
            shared with the Kafka sink that writes the heartbeats.
    """

    settings: Settings
    keys: KeyStore
    sink: Sink
    encode: Callable[[Event], bytes]
    clock_ms: Callable[[], int] = wall_clock_ms
    monotonic: Callable[[], float] = time.monotonic
    new_id: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))
    metrics: CollectorMetrics = field(default_factory=CollectorMetrics)
    vault: Vault | None = None
    webhooks: WebhookSecrets | None = None
    bounds: BoundsTable = field(default_factory=BoundsTable)
    eraser: Eraser | None = None
    receive: ReceiveClock | None = None  # None: one over ``clock_ms``

    def __post_init__(self) -> None:
        if self.receive is None:
            self.receive = ReceiveClock(self.clock_ms)


class Rejection(Exception):
    """Stop handling a request and answer with ``problem``."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        errors: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
        events: int = 0,
        refused: Sequence[Refusal] = (),
    ) -> None:
        super().__init__(message)
        self.status, self.headers, self.events = status, headers or {}, events
        self.problem = Problem(
            error=error, message=message, errors=list(errors), refused=list(refused)
        )


def basic_username(header: str | None) -> str | None:
    """The user name of an HTTP Basic ``Authorization`` header (Segment's write key).

    Example:
        >>> basic_username("Basic " + base64.b64encode(b"key123:").decode())
        'key123'
        >>> basic_username("Bearer x") is None
        True
    """
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (what Segment's 32 KB per event counts)."""
    try:
        return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    except RecursionError:
        return 1 << 62  # deeper than anything sane: certainly over any limit


def _finite_float(text: str) -> float:
    # 1e999 parses as infinity, which no JSON consumer downstream could read back.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a number")
    return value


def parse_json(body: bytes) -> Any:
    """Strict JSON from bytes: UTF-8 only, no NaN/Infinity; errors say where.

    Raises:
        Rejection: 400 naming the byte of bad UTF-8 or the line and column of bad JSON.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection(
            400,
            "invalid",
            "the body is not valid UTF-8",
            [FieldError(path="body", message=f"invalid UTF-8 at byte {exc.start}")],
        ) from None
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise Rejection(
            400,
            "invalid",
            "the body is nested too deeply",
            [FieldError(path="body", message="JSON nested too deeply")],
        ) from None
    except ValueError as exc:
        raise Rejection(
            400,
            "invalid",
            "the body is not valid JSON",
            [FieldError(path="body", message=f"malformed JSON: {exc}")],
        ) from None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, gunzipped if sent so, refusing anything over ``limit`` bytes."""
    too_large = Rejection(413, "too_large", f"the request body exceeds {limit} bytes")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        # The client left, or the request deadline closed its connection mid-body
        # (streams/collector/server.py): nothing was stored, nobody reads the answer.
        raise Rejection(408, "timeout", "the request body did not arrive in time") from None
    body = b"".join(chunks)
    if request.headers.get("content-encoding", "").lower() == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error:
            raise Rejection(400, "invalid", "the body is not valid gzip") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise too_large
    return body


_SENT_AT: TypeAdapter[datetime | None] = TypeAdapter(datetime | None)


class Ingest:
    """The request pipeline shared by every endpoint (trackers, pixels, webhooks)."""

    def __init__(self, collector: Collector) -> None:
        self.c = collector
        s = collector.settings
        self.limiter = RateLimiter(
            s.collector_rate_per_second, s.collector_rate_burst, collector.monotonic
        )
        self.replay = ReplayGuard(int(s.collector_webhook_tolerance_seconds * 1000))
        # Postmark's notifications are retried for hours and carry their own time.
        self.notices = ReplayGuard(postmark.LONG_WINDOW_MS)
        self._drops_logged: set[tuple[str, str]] = set()

    def _authorize(self, write_key: str | None) -> KeyRecord:
        record = self.c.keys.lookup(write_key) if write_key else None
        if record is None or record.role != WRITE:
            # An admin key is a secret for the admin API: as a tracker's key it would end up
            # in a web page. Answered like an unknown key (no hint that it exists).
            raise Rejection(
                401,
                "unauthorized",
                "unknown write key: send it as the HTTP Basic user name with an empty password"
                if write_key
                else "missing write key (HTTP Basic user name)",
            )
        return record

    def _messages(
        self, data: Any, msg_type: str | None, workspace_id: str, received_at: int
    ) -> tuple[list[tuple[Any, str, str]], MapOptions]:
        """The request's messages as ``(raw, type, path prefix)`` and the mapping options."""
        s = self.c.settings
        options = MapOptions(
            workspace_id=workspace_id,
            received_at=received_at,
            future_tolerance_ms=int(s.collector_future_tolerance_seconds * 1000),
            strict=s.collector_strict_properties,
            tracking_consent_default=s.collector_tracking_consent_default,
            bounds=self.c.bounds.of(workspace_id),
        )
        if msg_type is not None:
            if isinstance(data, dict) and "type" in data:
                # As in Segment, the endpoint decides the call type, not the body.
                data = {k: v for k, v in data.items() if k != "type"}
            return [(data, msg_type, "")], options
        if not isinstance(data, dict) or not isinstance(data.get("batch"), list):
            raise Rejection(
                400,
                "invalid",
                "a batch is an object with a list under 'batch'",
                [FieldError(path="batch", message="expected a list of messages")],
            )
        items = data["batch"]
        if not items:
            raise Rejection(
                400,
                "invalid",
                "the batch is empty",
                [FieldError(path="batch", message="at least one message")],
            )
        errors: list[FieldError] = []
        sent_at = context = None
        try:
            moment = _SENT_AT.validate_python(data.get("sentAt"))
            sent_at = epoch_ms(moment) if moment is not None else None
        except ValidationError as exc:
            errors.extend(pydantic_errors(exc, "sentAt"))
        if data.get("context") is not None:
            try:
                context = SegmentContext.model_validate(data["context"])
            except ValidationError as exc:
                errors.extend(pydantic_errors(exc, "context"))
        if errors:
            raise Rejection(
                400, "invalid", "the batch envelope is invalid", errors, events=len(items)
            )
        messages = []
        for i, item in enumerate(items):
            kind = item.get("type") if isinstance(item, dict) else None
            messages.append((item, kind if isinstance(kind, str) else "", f"batch[{i}]"))
        return messages, evolve(options, sent_at=sent_at, context=context)

    async def handle(self, request: Request, msg_type: str | None) -> Response:
        """Run one request through the pipeline; every failure becomes a :class:`Problem`."""
        return await self._answer(lambda: self._from_body(request, msg_type))

    async def pixel(self, request: Request, msg_type: str) -> Response:
        """A tracking pixel: the message is in the URL; the answer is always the GIF."""
        problem: Problem | None = None
        try:
            message, key = pixel_message(request.query_params.multi_items())
        except PixelError as exc:
            self.c.metrics.reject("invalid", 1)
            problem = Problem(error="invalid", message=str(exc))
        else:
            answer = await self._answer(
                lambda: self._ingest(message, msg_type, key, request.url.path, 0)
            )
            if answer.status_code != 200:
                problem = Problem.model_validate_json(bytes(answer.body))
        if problem is not None:
            # An image has no error path: the GIF goes back anyway, so say it here.
            log.info("collector.pixel_refused", path=request.url.path, error=problem.message)
        return Response(GIF, media_type="image/gif", headers={"Cache-Control": "no-store"})

    async def webhook(self, request: Request, vendor: str, workspace_id: str) -> Response:
        """A vendor's signed webhook for one workspace (see :mod:`webhooks`)."""
        return await self._answer(lambda: self._webhook(request, vendor, workspace_id))

    async def _webhook(self, request: Request, vendor: str, workspace_id: str) -> Accepted:
        conf = self.c.webhooks.lookup(workspace_id, vendor) if self.c.webhooks else None
        if conf is None:
            raise Rejection(
                401, "unauthorized", f"no {vendor} webhook is configured for {workspace_id!r}"
            )
        body = await read_body(request, self.c.settings.collector_max_batch_bytes)
        data = parse_json(body)
        now = self.c.clock_ms()
        parts = inbound.Request(request.method, str(request.url), request.headers, body, data)
        try:
            proof = inbound.authenticate(vendor, conf, parts, now)
        except inbound.WebhookRefused as exc:
            raise Rejection(401, "unauthorized", str(exc)) from exc
        guard = self.notices if proof.window_ms is not None else self.replay
        token = f"{vendor}:{workspace_id}:{proof.token}"
        problem = guard.problem(
            token, sent_at_ms=proof.sent_ms, now_ms=now, window_ms=proof.window_ms
        )
        if problem is not None:
            raise Rejection(401, "unauthorized", f"{vendor} webhook refused: {problem}")
        converted = inbound.convert(vendor, data, workspace_id, proof.sent_ms)
        if vendor == "ses" and isinstance(data, dict) and data.get("SubscribeURL"):
            # The collector makes no outbound calls: the operator confirms the subscription.
            log.warning(
                "collector.sns_subscription",
                workspace=workspace_id,
                type=data.get("Type"),
                topic=data.get("TopicArn"),
                subscribe_url=data.get("SubscribeURL"),
            )
        if converted.skipped:
            log.info("collector.webhook_skipped", vendor=vendor, skipped=converted.skipped)
        if converted.messages:
            accepted = await self._store(
                _Submission(
                    {"batch": converted.messages},
                    None,
                    workspace_id,
                    f"webhook:{workspace_id}",
                    request.url.path,
                    len(body),
                    skipped=tuple(converted.skipped),
                )
            )
        else:
            accepted = Accepted(event_ids=[], ignored=converted.skipped)
        # Remembered only once stored: a vendor's retry after a 503 must still get in.
        guard.remember(token, now_ms=now)
        return accepted

    async def _answer(self, run: Callable[[], Awaitable[Accepted]]) -> Response:
        try:
            accepted = await run()
        except Rejection as rejection:
            self.c.metrics.reject(rejection.problem.error, rejection.events)
            return JSONResponse(
                rejection.problem.model_dump(), rejection.status, headers=rejection.headers
            )
        except Exception:
            # A bug or a broken keys file: nothing was acknowledged, so the client may retry.
            log.exception("collector.internal_error")
            self.c.metrics.reject("internal", 0)
            problem = Problem(error="internal", message="internal error; nothing was stored")
            return JSONResponse(problem.model_dump(), 500)
        return JSONResponse(accepted.model_dump())

    async def _from_body(self, request: Request, msg_type: str | None) -> Accepted:
        s = self.c.settings
        header_key = basic_username(request.headers.get("authorization"))
        if header_key:
            self._authorize(header_key)  # a wrong key is a 401 before the body is read
        limit = s.collector_max_event_bytes if msg_type else s.collector_max_batch_bytes
        body = await read_body(request, limit)
        data = parse_json(body)
        # Browser beacons cannot set headers: the key may be in the body or the query
        # (RudderStack's /beacon/v1/batch?writeKey=...).
        key = header_key
        if key is None and isinstance(data, dict) and isinstance(data.get("writeKey"), str):
            key = data["writeKey"]
        key = key or request.query_params.get("writeKey")
        return await self._ingest(data, msg_type, key, request.url.path, len(body))

    async def _ingest(
        self, data: Any, msg_type: str | None, key: str | None, source: str, size: int
    ) -> Accepted:
        record = self._authorize(key)
        return await self._store(
            _Submission(data, msg_type, record.workspace_id, record.key_id, source, size)
        )

    async def _store(self, sub: _Submission) -> Accepted:
        """Map, store and dead-letter the messages of one authenticated request."""
        # The request's receivedAt stays open until its records are queued: no heartbeat
        # promises past it meanwhile (streams/collector/receive_clock.py). The sink closes
        # it as soon as they are, before the broker acknowledges them: the heartbeat round
        # it kicks then follows them closely, often in the same produce request, and the
        # worker can release them in the transaction that reads them.
        clock = self.c.receive
        assert clock is not None  # set by __post_init__
        with clock.stamped() as stamp:
            return await self._store_at(sub, stamp)

    async def _store_at(self, sub: _Submission, stamp: Stamp) -> Accepted:
        s = self.c.settings
        received_at = stamp.at
        workspace_id, source, skipped = sub.workspace_id, sub.source, sub.skipped
        messages, options = self._messages(sub.data, sub.msg_type, workspace_id, received_at)
        bucket = self.limiter.bucket(sub.bucket_id)
        if not bucket.take(len(messages)):
            raise Rejection(
                429,
                "rate_limited",
                f"over {s.collector_rate_per_second:g} events/s for this write key",
                headers={"Retry-After": str(max(1, math.ceil(bucket.wait_seconds())))},
                events=len(messages),
            )
        outcome = self._map_all(messages, options, sub.size > s.collector_max_event_bytes)
        mapped = await self._seal([m for _i, m in outcome.mapped])
        records: list[tuple[bytes, bytes]] = []
        stored: list[Mapped] = []
        for (index, _m), item in zip(outcome.mapped, mapped, strict=True):
            try:
                records.append((item.event.person_key.encode(), self.c.encode(item.event)))
            except LeadflowError as exc:
                # A mapping the codec refuses is our bug, but the client still gets a path.
                log.error("collector.encode_failed", error=str(exc), index=index)
                prefix = messages[index][2] or "body"
                outcome.refuse(index, "invalid", [FieldError(path=prefix, message=str(exc))])
                continue
            stored.append(item)
        refused = sorted(outcome.refused, key=lambda r: r.index)
        letters = [
            dead_letter(
                messages[r.index][0],
                r.reason,
                r.errors,
                workspace_id=workspace_id,
                source=source,
                index=r.index,
                received_at=options.received_at,
            )
            for r in refused
        ]
        try:
            latency = await self.c.sink.send(records, letters, queued=stamp.close)
        except KafkaUnavailable as exc:
            log.warning("collector.unavailable", reason=str(exc), events=len(records))
            raise Rejection(
                503,
                "unavailable",
                f"Kafka did not acknowledge the events ({exc}); retry the whole request "
                "with the same messageIds (event ids make the retry idempotent downstream)",
                headers={"Retry-After": str(s.collector_retry_after_seconds)},
                events=len(messages),
            ) from exc
        self.c.metrics.produce_seconds.observe(latency)
        for r in refused:
            self.c.metrics.refused_events.labels(r.reason).inc()
        if refused:
            log.info(
                "collector.refused",
                workspace=workspace_id,
                source=source,
                refused=[(r.index, r.reason, [e.path for e in r.errors]) for r in refused],
            )
        if not stored:
            # Nothing of the request is stored: a 400 (413 for one oversized event), which no
            # SDK retries; the messages are on the dead-letter topic.
            too_large = all(r.reason == "too_large" for r in refused)
            errors = [e for r in refused for e in r.errors]
            raise Rejection(
                413 if too_large else 400,
                "too_large" if too_large else "invalid",
                f"{len(errors)} problem(s) in {len(refused)} message(s); nothing was stored "
                "(the messages are on the dead-letter topic)",
                errors,
                events=len(messages),
                refused=refused,
            )
        ignored = list(dict.fromkeys([*skipped, *(p for m in stored for p in m.ignored)]))
        kept = [p for m in stored for p in m.kept]
        warnings = [w for m in stored for w in m.warnings]
        self.c.metrics.accepted.inc(len(stored))
        self.c.metrics.ignored_fields.inc(len(ignored))
        self.c.metrics.kept_fields.inc(len(kept))
        self.c.metrics.warnings.inc(len(warnings))
        self._log_drops(workspace_id, ignored)
        return Accepted(
            event_ids=[m.event.event_id for m in stored],
            ignored=ignored,
            kept=kept,
            warnings=warnings,
            refused=refused,
        )

    def _log_drops(self, workspace_id: str, paths: Sequence[str]) -> None:
        """Log each kind of dropped field once per process (the counter has every one).

        Browsers send the same SDK context with every call: one line per request would
        drown the log, none would hide what is lost.
        """
        fresh = []
        for path in paths:
            shape = (workspace_id, _BATCH_INDEX.sub("", path))
            if shape not in self._drops_logged and len(self._drops_logged) < 10_000:
                self._drops_logged.add(shape)
                fresh.append(shape[1])
        if fresh:
            log.info("collector.fields_dropped", workspace=workspace_id, paths=fresh)

    async def _seal(self, mapped: list[Mapped]) -> list[Mapped]:
        """Encrypt PII with per-person keys (docs/privacy.md); 503 if a new key is not durable."""
        vault = self.c.vault
        if vault is None or not mapped:
            return mapped
        if not self.c.sink.available:
            # Kafka is known to be down: answer 503 now rather than wait on the key topic.
            raise self._keys_unavailable(KafkaUnavailable("Kafka is unreachable"), len(mapped))
        try:
            sealed = await run_in_threadpool(vault.seal, [m.event for m in mapped])
        except KeyringError as exc:
            raise self._keys_unavailable(exc, len(mapped)) from exc
        return [evolve(m, event=e) for m, e in zip(mapped, sealed, strict=True)]

    def _keys_unavailable(self, exc: Exception, events: int) -> Rejection:
        log.warning("collector.keys_unavailable", reason=str(exc))
        return Rejection(
            503,
            "unavailable",
            f"the PII key topic is unavailable ({exc}); retry the whole request",
            headers={"Retry-After": str(self.c.settings.collector_retry_after_seconds)},
            events=events,
        )

    def _map_all(
        self, messages: list[tuple[Any, str, str]], options: MapOptions, check_sizes: bool
    ) -> _Outcome:
        """Map every message; each one is stored or refused on its own."""
        s = self.c.settings
        outcome = _Outcome()
        for index, (raw, msg_type, prefix) in enumerate(messages):
            if check_sizes:
                size = _json_size(raw)
                if size > s.collector_max_event_bytes:
                    message = f"{size} bytes exceeds {s.collector_max_event_bytes} per event"
                    outcome.refuse(
                        index, "too_large", [FieldError(path=prefix or "body", message=message)]
                    )
                    continue
            if not msg_type:
                problem = "required: track, page, screen, identify, alias or group"
                outcome.refuse(
                    index, "invalid", [FieldError(path=f"{prefix}.type", message=problem)]
                )
                continue
            try:
                result = map_message(raw, msg_type, options, self.c.new_id, prefix)
            except RecursionError:
                result = [FieldError(path=prefix or "body", message="nested too deeply")]
            if not isinstance(result, Mapped):
                outcome.refuse(index, "invalid", result)
            elif result.event.kind in DESTRUCTIVE_KINDS:
                outcome.refuse(index, "forbidden", [FieldError(path=prefix or "body",
                                                               message=FORBIDDEN)])  # fmt: skip
            else:
                outcome.mapped.append((index, result))
        return outcome


@dataclass(frozen=True)
class _Submission:
    """One authenticated request's body, on its way to Kafka.

    ``bucket_id`` names the rate-limit bucket (the write key, or the webhook's workspace);
    ``skipped`` are the vendor fields a webhook conversion left out, reported as ignored.
    """

    data: Any
    msg_type: str | None
    workspace_id: str
    bucket_id: str
    source: str
    size: int
    skipped: tuple[str, ...] = ()


@dataclass
class _Outcome:
    """What became of a request's messages: mapped (with their index) or refused."""

    mapped: list[tuple[int, Mapped]] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)

    def refuse(self, index: int, reason: str, errors: list[FieldError]) -> None:
        self.refused.append(Refusal(index=index, reason=reason, errors=errors))


_BODY_MODELS = (
    TrackMessage,
    PageMessage,
    IdentifyMessage,
    AliasMessage,
    GroupMessage,
    ScreenMessage,
    BatchRequest,
)
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": Accepted,
        "description": "Every accepted event is durably in Kafka; refused ones are listed "
        "and on the dead-letter topic.",
    },
    400: {"model": Problem, "description": "Invalid JSON or nothing storable (each named)."},
    401: {"model": Problem, "description": "Unknown or missing write key."},
    413: {"model": Problem, "description": "Request body over the limit."},
    429: {"model": Problem, "description": "Over the write key's rate; see Retry-After."},
    503: {"model": Problem, "description": "Kafka did not acknowledge; retry after Retry-After."},
    500: {"model": Problem, "description": "Internal error; nothing was stored."},
}


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document, with the request bodies the handlers parse by hand."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _, defs = models_json_schema(
            [(m, "validation") for m in _BODY_MODELS],
            ref_template="#/components/schemas/{model}",
        )
        components = doc.setdefault("components", {})
        components.setdefault("schemas", {}).update(defs.get("$defs", {}))
        components["securitySchemes"] = {
            "writeKey": {
                "type": "http",
                "scheme": "basic",
                "description": "The write key as user name, empty password.",
            }
        }
        for model, path in zip(_BODY_MODELS, _PATHS, strict=True):
            operation = doc["paths"][path]["post"]
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}
                    }
                },
            }
            operation["security"] = [{"writeKey": []}]
        app.openapi_schema = doc
        return doc

    return build


_PATHS = (
    "/v1/track",
    "/v1/page",
    "/v1/identify",
    "/v1/alias",
    "/v1/group",
    "/v1/screen",
    "/v1/batch",
)
# The same calls under the other paths real trackers post to: analytics.js posts
# /v1/{t,p,i,a,g,s} and, batching, /v1/b; RudderStack's JS beacon plugin posts
# /beacon/v1/batch?writeKey=...; /v1/import is the historical-import name of a batch.
_ALIASES: dict[str, tuple[str, ...]] = {
    "/v1/track": ("/v1/t",),
    "/v1/page": ("/v1/p",),
    "/v1/identify": ("/v1/i",),
    "/v1/alias": ("/v1/a",),
    "/v1/group": ("/v1/g",),
    "/v1/screen": ("/v1/s",),
    "/v1/batch": ("/v1/b", "/v1/import", "/beacon/v1/batch"),
}


def create_app(collector: Collector, *, manage_sink: bool = True) -> FastAPI:
    """The FastAPI application of one collector.

    Args:
        collector: settings, keys, sink, codec and clocks.
        manage_sink: start the sink on startup and close it on shutdown.
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_sink:
            await run_in_threadpool(collector.sink.start)
        log.info("collector.started", kafka=collector.sink.available)
        try:
            yield
        finally:
            if manage_sink:
                await run_in_threadpool(collector.sink.close)
                if collector.eraser is not None:
                    await run_in_threadpool(collector.eraser.close)
                if collector.vault is not None:
                    await run_in_threadpool(collector.vault.close)

    docs = collector.settings.collector_expose_docs  # off: no /docs, /redoc, /openapi.json
    app = FastAPI(
        title="leadflow collector",
        version=__version__,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
        description="Segment-compatible HTTP Tracking API in front of leadflow.events. "
        "A 200 means every event of the request is acknowledged by Kafka (acks=all).",
        lifespan=lifespan,
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(collector.settings.collector_cors_origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        # X-Retry-Count: analytics.js's retries. RudderStack's JS SDK v3 sends AnonymousId and
        # SentAt on every call and the Rsa-* headers on retries (its XHR queue, measured in
        # chromium): a preflight that refuses one of them loses every event it sends.
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Content-Encoding",
            "X-Retry-Count",
            "AnonymousId",
            "SentAt",
            "Rsa-Recovered",
            "Rsa-Retry-Attempt",
            "Rsa-Retry-Reason",
            "Rsa-Since-First-Attempt",
            "Rsa-Since-Last-Attempt",
        ],
        expose_headers=["Retry-After"],
        max_age=600,
    )
    ingest = Ingest(collector)
    app.state.collector = collector

    def endpoint(msg_type: str | None) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            return await ingest.handle(request, msg_type)

        return handle

    summaries = (
        ("track", "Record an action (the tracking plan picks the kind)."),
        ("page", "Record a page view (kind visit)."),
        ("identify", "Tie traits to a user (kind identify)."),
        ("alias", "Merge two ids (kind alias)."),
        ("group", "Tie a user to an account (kind group: the company's firmographics)."),
        ("screen", "Record a screen view (kind visit)."),
        (None, "Many messages at once; each is stored or refused (dead-letter topic) alone."),
    )
    for path, (msg_type, summary) in zip(_PATHS, summaries, strict=True):
        for route in (path, *_ALIASES[path]):
            app.add_api_route(
                route,
                endpoint(msg_type),
                methods=["POST"],
                summary=summary,
                responses=_RESPONSES,
                response_class=JSONResponse,
                include_in_schema=route == path,
            )

    def pixel(msg_type: str) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            return await ingest.pixel(request, msg_type)

        return handle

    for msg_type in PIXEL_TYPES:
        routes = [f"/v1/pixel/{msg_type}"]
        if msg_type in ("track", "page"):
            routes.append(f"/pixel/v1/{msg_type}")  # RudderStack's pixel paths
        for route in routes:
            app.add_api_route(
                route,
                pixel(msg_type),
                methods=["GET"],
                summary=f"Tracking pixel ({msg_type}): ?data=<base64 JSON> or dotted query "
                "parameters; always a 1x1 GIF.",
                response_class=Response,
            )

    def webhook(vendor: str) -> Callable[[Request, str], Awaitable[Response]]:
        async def handle(request: Request, workspace_id: str) -> Response:
            return await ingest.webhook(request, vendor, workspace_id)

        return handle

    for vendor in VENDORS:
        app.add_api_route(
            f"/webhooks/{vendor}/{{workspace_id}}",
            webhook(vendor),
            methods=["POST"],
            summary=f"{vendor} webhook for one workspace, checked with its signature.",
            responses=_RESPONSES,
            response_class=JSONResponse,
        )

    admin = Admin(
        collector.keys,
        collector.eraser,
        # Erasure is rare: a loop holding an admin key must not shred at line speed.
        RateLimiter(1.0, 10.0, collector.monotonic),
        collector.metrics,
    )
    add_admin_routes(app, admin)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        # Unknown paths and methods answer in the Problem shape too: rudder-sdk-python reads
        # body["code"] of every error and retries forever when it is missing.
        error = "not_found" if exc.status_code in (404, 405) else "invalid"
        collector.metrics.reject(error, 0)
        problem = Problem(error=error, message=str(exc.detail))
        return JSONResponse(problem.model_dump(), exc.status_code, headers=exc.headers)

    @app.get("/health", summary="Liveness: the process serves HTTP.")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: Kafka answers and the events topic exists.")
    async def ready() -> Response:
        ok = await run_in_threadpool(collector.sink.reachable, 2.0)
        return JSONResponse({"ready": ok, "topic": EVENTS.name}, 200 if ok else 503)

    settings = collector.settings
    token = settings.collector_metrics_token
    if settings.collector_expose_metrics or token is not None:

        @app.get("/metrics", summary="Prometheus metrics (open, or with the metrics token).")
        async def metrics(request: Request) -> Response:
            if token is not None and not _same_secret(
                bearer_token(request.headers.get("authorization")), token.get_secret_value()
            ):
                collector.metrics.reject("unauthorized", 0)
                problem = Problem(error="unauthorized", message="metrics need the metrics token")
                return JSONResponse(problem.model_dump(), 401)
            registry = collector.metrics.registry
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app


def _same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison (no timing signal about how much of a token was right).

    Example:
        >>> _same_secret("t0k", "t0k"), _same_secret("t0", "t0k"), _same_secret(None, "t0k")
        (True, False, False)
    """
    return given is not None and secrets.compare_digest(given.encode(), expected.encode())


def build_collector(settings: Settings, **overrides: Any) -> Collector:
    """A collector wired to the real Kafka producer, keys file and project codec."""
    from leadflow.schemas.codec import codec_from_settings

    receive = overrides.get("receive") or ReceiveClock(overrides.get("clock_ms", wall_clock_ms))
    sink = EventProducer(
        settings.kafka_client_config(),
        EVENTS.name,
        settings.collector_delivery_timeout_seconds,
        DLQ.name,
        heartbeat=receive.floor,
        heartbeat_ms=settings.collector_heartbeat_ms,
        promised=lambda floor: receive.promised_past(floor, settings.order_lateness_ms),
        # Past the bound of another writer's future stamp, by the lateness a key may have.
        late_round_s=(settings.order_max_ahead_ms + settings.order_lateness_ms + 1) / 1000,
    )
    receive.on_close = sink.kick  # a queued request's records are released soon
    parts: dict[str, Any] = {
        "settings": settings,
        "keys": KeyStore(keys_path(settings)),
        "sink": sink,
        "receive": receive,
        "encode": codec_from_settings(settings).encode,
        "vault": Vault(settings) if settings.pii_encryption else None,
        "webhooks": WebhookSecrets(
            settings.collector_webhooks_file or settings.data_dir / "collector" / "webhooks.json"
        ),
        "bounds": load_bounds(settings.bounds_file),
    }
    parts.update(overrides)
    if "eraser" not in parts:
        parts["eraser"] = build_eraser(settings, parts["vault"], wall_clock_ms)
    return Collector(**parts)
