"""The HTTP sender against a fake collector (httpx.MockTransport), batching and pacing."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadflow.demo.simulator.generator import SimConfig, simulate
from leadflow.demo.simulator.send import (
    MAX_BATCH_BYTES,
    Pacer,
    SendError,
    batches,
    send_http,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


class FakeCollector:
    """Answers with a scripted list of statuses, then 200; records every request body."""

    def __init__(self, script: list[tuple[int, dict[str, str]]] | None = None) -> None:
        self.script = list(script or [])
        self.bodies: list[dict] = []
        self.auth: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/batch"
        self.auth.add(request.headers["Authorization"])
        body = json.loads(request.content)
        if self.script:
            status, headers = self.script.pop(0)
            return httpx.Response(status, headers=headers, json={"error": "scripted"})
        self.bodies.append(body)
        return httpx.Response(200, json={"success": True})


def run(fake: FakeCollector, messages: list[dict], **kwargs) -> tuple:
    slept: list[float] = []
    report = send_http(
        messages,
        collector_url="http://collector.test",
        write_key="lfw_key",
        transport=httpx.MockTransport(fake),
        now=lambda: NOW,
        sleep=slept.append,
        **kwargs,
    )
    return report, slept


@pytest.fixture(scope="module")
def messages() -> list[dict]:
    return list(simulate(SimConfig(people=60, days=20, seed=9)))


def test_sends_everything_once_in_order_in_small_batches(messages: list[dict]) -> None:
    fake = FakeCollector()
    sent: list[int] = []
    report, slept = run(fake, messages, on_sent=lambda n, _last: sent.append(n))
    received = [m for body in fake.bodies for m in body["batch"]]
    assert [m["messageId"] for m in received] == [m["messageId"] for m in messages]
    assert all(len(body["batch"]) <= 100 for body in fake.bodies)
    assert all(len(json.dumps(body)) < 500 * 1024 for body in fake.bodies)
    assert report.sent == len(messages) == sum(sent)
    assert report.retries == 0
    assert not slept
    assert fake.auth == {"Basic " + base64.b64encode(b"lfw_key:").decode()}


def test_sent_at_is_the_wall_clock_and_the_timestamp_is_untouched(messages: list[dict]) -> None:
    fake = FakeCollector()
    run(fake, messages[:10])
    body = fake.bodies[0]
    assert body["sentAt"] == "2026-11-23T09:00:00.000Z"
    assert {m["sentAt"] for m in body["batch"]} == {"2026-11-23T09:00:00.000Z"}
    assert [m["timestamp"] for m in body["batch"]] == [m["timestamp"] for m in messages[:10]]
    assert messages[0]["sentAt"] != body["sentAt"]  # the generator's messages are not mutated


def test_retries_429_and_503_honouring_retry_after(messages: list[dict]) -> None:
    fake = FakeCollector([(429, {"Retry-After": "2"}), (503, {"Retry-After": "5"})])
    report, slept = run(fake, messages[:150])
    assert slept == [2.0, 5.0]
    assert report.retries == 2
    assert report.sent == 150
    assert sum(len(b["batch"]) for b in fake.bodies) == 150


def test_retries_without_retry_after_back_off(messages: list[dict]) -> None:
    fake = FakeCollector([(503, {}), (503, {})])
    _, slept = run(fake, messages[:5])
    assert slept == [0.5, 1.0]


def test_gives_up_after_max_retries(messages: list[dict]) -> None:
    fake = FakeCollector([(503, {"Retry-After": "1"})] * 4)
    with pytest.raises(SendError, match="gave up after 3 retries"):
        run(fake, messages[:5], max_retries=3)


def test_client_errors_fail_loudly_with_the_body(messages: list[dict]) -> None:
    fake = FakeCollector([(400, {})])
    with pytest.raises(SendError, match=r"400.*scripted"):
        run(fake, messages[:5])
    fake = FakeCollector([(401, {})])
    with pytest.raises(SendError, match="401"):
        run(fake, messages[:5])


def test_transport_errors_are_retried(messages: list[dict]) -> None:
    calls = {"n": 0}
    inner = FakeCollector()

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ConnectError("refused", request=request)
        return inner(request)

    slept: list[float] = []
    report = send_http(
        messages[:3],
        collector_url="http://collector.test",
        write_key="k",
        transport=httpx.MockTransport(flaky),
        now=lambda: NOW,
        sleep=slept.append,
    )
    assert report.sent == 3
    assert report.retries == 1
    assert slept == [0.5]


@given(
    sizes=st.lists(st.integers(0, 3000), max_size=300),
    max_messages=st.integers(1, 120),
    max_bytes=st.integers(3100, 60_000),
)
def test_batches_keep_order_and_limits(sizes: list[int], max_messages: int, max_bytes: int) -> None:
    items = [{"i": i, "pad": "x" * size} for i, size in enumerate(sizes)]
    out = list(batches(items, max_messages=max_messages, max_bytes=max_bytes))
    assert [m for b in out for m in b] == items
    for batch in out:
        assert 1 <= len(batch) <= max_messages
        size = sum(len(json.dumps(m)) + 1 for m in batch)
        assert size <= max_bytes


def test_default_batch_budget_is_under_segments_limit() -> None:
    assert MAX_BATCH_BYTES < 500 * 1024


def test_pacer_holds_the_rate() -> None:
    clock = {"t": 100.0}
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock["t"] += seconds

    pacer = Pacer(50.0, clock=lambda: clock["t"], sleep=sleep)
    for _ in range(5):
        pacer.wait(100)
    # 500 events at 50/s: the fifth batch may start only 8 s after the first.
    assert clock["t"] == pytest.approx(108.0)
    assert len(waits) == 4


def test_pacer_without_rate_never_waits() -> None:
    pacer = Pacer(None, sleep=lambda s: pytest.fail("slept"))
    pacer.wait(10**6)


def test_pacer_refuses_nonsense() -> None:
    with pytest.raises(SendError):
        Pacer(0.0)
