"""The collector's admin API: erasure with a secret admin key, audited and confirmable.

A public write key only adds events (it is in every web page). Erasing a person is
irreversible, so it takes an admin key (``leadflow keys create <ws> --admin``), sent as
``Authorization: Bearer lfa_...`` by a server, never by a browser:

- ``POST /v1/erasure`` ``{"lead_id": ...}`` or ``{"email": ...}``, ``"requested_by"`` (who
  asked, audited), optional ``"devices"``, ``"dry_run"``: shreds the person's keys and sends the
  erasure event (``streams/pii/erasure.py``), or with ``dry_run`` says what it would shred.
  The answer is the receipt with its ``erasure_id``.
- ``GET /v1/erasure/{erasure_id}``: the audit records of that erasure (``requested`` then
  ``done`` or ``failed``), to confirm it later.

Refused: a write key (403), an unknown or revoked key (401), any request with an ``Origin``
header (403: a browser; CSRF has nothing to ride on since the key is never sent
automatically, but an admin key must not live in a page at all), a workspace's key asking
about another workspace's erasure (404, as if it did not exist).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool

from leadflow.processors.errors import LeadflowError
from leadflow.processors.identity import derive_lead_id
from leadflow.streams.collector.keys import ADMIN, KeyRecord, KeyStore
from leadflow.streams.collector.limits import RateLimiter
from leadflow.streams.collector.metrics import CollectorMetrics
from leadflow.streams.collector.models import FieldError, Problem
from leadflow.streams.logs import get_logger
from leadflow.streams.pii.erasure import Eraser, ErasureRequest

log = get_logger(__name__)

MAX_BODY = 16 * 1024


class ErasureBody(BaseModel):
    """What ``POST /v1/erasure`` accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lead_id: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, min_length=3, max_length=320, pattern=r".+@.+")
    devices: list[str] = Field(default_factory=list, max_length=100)
    requested_by: str = Field(min_length=1, max_length=200, description="Who asked (audited).")
    dry_run: bool = False

    @model_validator(mode="after")
    def _one_person(self) -> ErasureBody:
        if (self.lead_id is None) == (self.email is None):
            raise ValueError("give exactly one of lead_id or email")
        return self


class AdminRejection(Exception):
    """Stop an admin request with ``status`` and a :class:`Problem`."""

    def __init__(
        self, status: int, error: str, message: str, errors: list[FieldError] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.problem = Problem(error=error, message=message, errors=errors or [])


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header.

    Example:
        >>> bearer_token("Bearer lfa_x"), bearer_token("Basic eA=="), bearer_token(None)
        ('lfa_x', None, None)
    """
    if not header or header[:7].lower() != "bearer ":
        return None
    return header[7:].strip() or None


class Admin:
    """The admin endpoints' logic (authorisation, validation, the eraser in a thread)."""

    def __init__(
        self,
        keys: KeyStore,
        eraser: Eraser | None,
        limiter: RateLimiter,
        metrics: CollectorMetrics,
    ) -> None:
        self.keys = keys
        self.eraser = eraser
        self.limiter = limiter
        self.metrics = metrics

    def authorize(self, request: Request) -> KeyRecord:
        """The admin key's record, or an :class:`AdminRejection`."""
        if request.headers.get("origin") is not None:
            raise AdminRejection(
                403, "forbidden", "admin endpoints are for servers, not browsers (Origin sent)"
            )
        token = bearer_token(request.headers.get("authorization"))
        record = self.keys.lookup(token) if token else None
        if record is None:
            raise AdminRejection(
                401, "unauthorized", "missing or unknown admin key (Authorization: Bearer ...)"
            )
        if record.role != ADMIN:
            raise AdminRejection(
                403,
                "forbidden",
                "a write key cannot erase: use an admin key (leadflow keys "
                "create <workspace> --admin) or `leadflow erase`",
            )
        if not self.limiter.bucket(record.key_id).take(1):
            raise AdminRejection(429, "rate_limited", "too many admin requests for this key")
        return record

    async def body(self, request: Request) -> ErasureBody:
        """The validated request body."""
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                raise AdminRejection(413, "too_large", f"the body exceeds {MAX_BODY} bytes")
        try:
            data = json.loads(raw or b"null")
            return ErasureBody.model_validate(data)
        except ValueError as exc:
            errors = (
                [FieldError(path=".".join(map(str, e["loc"])) or "body", message=e["msg"])
                 for e in exc.errors(include_url=False)]
                if isinstance(exc, ValidationError)
                else [FieldError(path="body", message=f"malformed JSON: {exc}")]
            )  # fmt: skip
            raise AdminRejection(400, "invalid", "the erasure request is invalid", errors) from None

    def eraser_or_503(self) -> Eraser:
        """The eraser (absent when the collector was built without Kafka)."""
        if self.eraser is None:
            raise AdminRejection(503, "unavailable", "erasure is not configured here")
        return self.eraser

    async def erase(self, request: Request) -> dict[str, Any]:
        """``POST /v1/erasure``."""
        record = self.authorize(request)
        body = await self.body(request)
        eraser = self.eraser_or_503()
        ws = record.workspace_id
        lead = body.lead_id or derive_lead_id(ws, body.email or "")
        order = ErasureRequest(
            workspace_id=ws,
            lead_id=lead,
            devices=tuple(dict.fromkeys(d for d in body.devices if d)),
            requested_by=body.requested_by,
            actor=f"key:{record.key_id}",
        )
        act = eraser.preview if body.dry_run else eraser.erase
        try:
            receipt = await run_in_threadpool(act, order)
        except LeadflowError as exc:
            log.warning("collector.erasure_unavailable", workspace=ws, reason=str(exc))
            raise AdminRejection(
                503,
                "unavailable",
                f"erasure not completed ({exc}); retry: every step is idempotent",
            ) from exc
        self.metrics.erasures.labels("preview" if body.dry_run else "done").inc()
        return receipt.as_json()

    async def status(self, request: Request, erasure_id: str) -> dict[str, Any]:
        """``GET /v1/erasure/{erasure_id}``."""
        record = self.authorize(request)
        eraser = self.eraser_or_503()
        try:
            found = await run_in_threadpool(eraser.audit.find, record.workspace_id, erasure_id)
        except LeadflowError as exc:
            raise AdminRejection(503, "unavailable", f"audit trail unreadable ({exc})") from exc
        if not found:
            raise AdminRejection(404, "not_found", f"no erasure {erasure_id!r} in this workspace")
        return {
            "erasure_id": erasure_id,
            "status": found[-1].status,
            "records": [
                {"action": r.action, "status": r.status, "at": r.at, "actor": r.actor,
                 **dict(r.details)}
                for r in found
            ],
        }  # fmt: skip


def add_admin_routes(app: FastAPI, admin: Admin) -> None:
    """Mount ``/v1/erasure`` on ``app``."""

    async def answer(request: Request, work: Any) -> Response:
        try:
            return JSONResponse(await work)
        except AdminRejection as rejection:
            admin.metrics.reject(rejection.problem.error, 0)
            log.info("collector.admin_refused", path=request.url.path,
                     error=rejection.problem.error)  # fmt: skip
            return JSONResponse(rejection.problem.model_dump(), rejection.status)

    async def erase(request: Request) -> Response:
        return await answer(request, admin.erase(request))

    async def status(request: Request, erasure_id: str) -> Response:
        return await answer(request, admin.status(request, erasure_id))

    app.add_api_route(
        "/v1/erasure",
        erase,
        methods=["POST"],
        summary="Erase a person (admin key, Bearer): shred their keys, send the erasure event; "
        "audited. dry_run says what would be shredded.",
        response_class=JSONResponse,
    )
    app.add_api_route(
        "/v1/erasure/{erasure_id}",
        status,
        methods=["GET"],
        summary="Confirm an erasure: its audit records (admin key, Bearer).",
        response_class=JSONResponse,
    )
