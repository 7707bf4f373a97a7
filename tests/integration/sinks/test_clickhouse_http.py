"""The embedded engine's ClickHouse HTTP interface, with stock clients, while the projector inserts.

A real projector consumes a stream of events from the session's broker into a fresh
database while clickhouse-connect (``get_client(host=..., port=...)``, unmodified), plain
HTTP in several formats, and (tests/integration/sinks/test_clickhouse_http_clients.py) the
JDBC driver and ``@clickhouse/client`` read it. Every count they see only grows and never
counts an event twice. Then bad input: each gets ClickHouse's own error, and the projector
keeps committing meanwhile. No timing is asserted (speed is ``make bench``'s).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from clickhouse_connect import get_client
from clickhouse_connect.driver.exceptions import DatabaseError
from confluent_kafka import Producer

from leadflow.processors.events import Kind
from leadflow.schemas.codec import codec_from_settings
from leadflow.sinks.analysts import AnalystStore, users_path
from leadflow.sinks.clickhouse_http import Serving, native_decompress
from leadflow.sinks.projector import Projector
from leadflow.sinks.workspaces import create_workspace_views
from leadflow.streams.settings import Settings
from leadflow.streams.topics import EVENTS, create_topics
from tests.integration.sinks import scenario

Serve = Callable[..., AbstractContextManager[Serving]]


@dataclass
class Stream:
    """A projector projecting a growing event stream of one workspace into ``database``."""

    database: str
    workspace: str
    total: int
    produced: int = 0
    errors: list[BaseException] = field(default_factory=list)

    def count_sql(self, table: str = "v_events") -> str:
        return (
            f"SELECT count(), uniqExact(event_id) FROM {self.database}.{table} "
            f"WHERE workspace_id = '{self.workspace}'"
        )


def _events(workspace: str, start: int, n: int) -> list[Any]:
    return [
        dataclasses.replace(
            scenario.ev(f"{workspace}-e{i}", Kind.VISIT, i / 1000, anon=f"{workspace}-a{i % 50}"),
            workspace_id=workspace,
        )
        for i in range(start, start + n)
    ]


@contextmanager
def projecting(
    kafka: Settings, owner: Any, database: str, *, batches: int = 30, size: int = 40
) -> Iterator[Stream]:
    """Produce ``batches`` x ``size`` events over a few seconds while a projector runs."""
    create_topics(kafka)
    stream = Stream(database, f"ws-{uuid.uuid4().hex[:8]}", batches * size)
    stop = threading.Event()
    projector = Projector(kafka, owner, database, group_id=f"g-{uuid.uuid4()}", batch_size=50)
    codec = codec_from_settings(kafka)

    def produce() -> None:
        producer = Producer({**kafka.kafka_client_config(), "acks": "all"})
        try:
            for b in range(batches):
                for event in _events(stream.workspace, b * size, size):
                    producer.produce(
                        EVENTS.name, value=codec.encode(event), key=event.person_key.encode()
                    )
                producer.flush(30)
                stream.produced += size
                time.sleep(0.1)  # a stream, not one burst
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            stream.errors.append(exc)

    runner = threading.Thread(target=projector.run, args=(stop,), daemon=True)
    feeder = threading.Thread(target=produce, daemon=True)
    runner.start()
    feeder.start()
    try:
        yield stream
    finally:
        feeder.join(timeout=120)
        stop.set()
        runner.join(timeout=60)
    assert not stream.errors, stream.errors


def wait_for(predicate: Callable[[], bool], seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)


def _owner_count(owner: Any, stream: Stream) -> int:
    try:
        return int(owner.query(stream.count_sql()).result_rows[0][0])
    except Exception:  # the projector has not migrated the database yet
        return 0


@pytest.fixture
def analyst(base_settings: Settings) -> Callable[[Serving, str], tuple[str, str]]:
    def make(serving: Serving, workspace: str) -> tuple[str, str]:
        store = AnalystStore(users_path(serving.app.settings))
        return store.add(workspace, lambda: datetime.now(UTC), f"a_{uuid.uuid4().hex[:8]}")

    return make


def test_stock_clients_read_while_the_projector_inserts(
    kafka: Settings,
    clickhouse_session: Any,
    clickhouse_db: str,
    serve_engine: Serve,
    counts_checked: Callable[[str], None],
) -> None:
    seen: dict[str, list[int]] = {"v_events": [], "events": [], "query_df": [], "http": []}
    with (
        serve_engine(clickhouse_db) as serving,
        projecting(kafka, clickhouse_session, clickhouse_db) as stream,
    ):
        client = get_client(host="127.0.0.1", port=int(serving.url.rsplit(":", 1)[1]))
        assert client.server_version
        wait_for(lambda: _owner_count(clickhouse_session, stream) > 0)
        while True:
            done = stream.produced == stream.total
            for table in ("v_events", "events"):
                rows, distinct = client.query(stream.count_sql(table)).result_rows[0]
                assert rows == distinct, f"{table}: {rows} rows, {distinct} distinct ids"
                seen[table].append(rows)
            frame = client.query_df(
                f"SELECT event_id FROM {clickhouse_db}.v_events WHERE workspace_id = {{w:String}}",
                parameters={"w": stream.workspace},
            )
            assert frame["event_id"].is_unique
            seen["query_df"].append(len(frame))
            answer = httpx.get(
                serving.url,
                params={"query": stream.count_sql() + " FORMAT JSONEachRow"},
            )
            assert answer.status_code == 200, answer.text
            seen["http"].append(int(json.loads(answer.text)["count()"]))
            if done and seen["v_events"][-1] == stream.total:
                break
            time.sleep(0.05)
        with pytest.raises(DatabaseError) as refused:
            client.insert(
                f"{clickhouse_db}.events",
                [["x", stream.workspace, "visit", 1]],
                column_names=["event_id", "workspace_id", "kind", "occurred_at"],
            )
        assert "(READONLY)" in str(refused.value)
        assert "164" in str(refused.value)
    for name, counts in seen.items():
        assert counts == sorted(counts), f"{name} went down: {counts}"
        assert counts[-1] == stream.total or name != "v_events"
    growing = len(set(seen["v_events"]))
    assert growing > 2, seen["v_events"]  # the reads really overlapped the inserts
    counts_checked(
        f"{stream.total} events projected while read {len(seen['v_events'])} times by "
        f"clickhouse-connect, query_df and plain HTTP: {growing} distinct counts, only "
        "growing, never a duplicate; insert refused (164 READONLY)"
    )


def _fetch(serving: Serving, query: str, **kw: Any) -> httpx.Response:
    return httpx.post(serving.url, content=query.encode(), timeout=60, **kw)


def test_plain_http_formats_parameters_compression_and_sessions(
    clickhouse_session: Any, clickhouse_db: str, serve_engine: Serve
) -> None:
    clickhouse_session.command(
        f"CREATE TABLE {clickhouse_db}.t (workspace_id String, n UInt32) ENGINE = MergeTree "
        "ORDER BY n"
    )
    clickhouse_session.command(f"INSERT INTO {clickhouse_db}.t VALUES ('a', 1), ('b', 2)")
    table = f"{clickhouse_db}.t"
    with serve_engine(clickhouse_db) as s:
        assert httpx.get(s.url + "/ping").text == "Ok.\n"
        assert httpx.get(s.url).text == "Ok.\n"
        tsv = httpx.get(s.url, params={"query": f"SELECT * FROM {table} ORDER BY n"})
        assert tsv.text == "a\t1\nb\t2\n"
        assert tsv.headers["X-ClickHouse-Format"] == "TabSeparated"
        assert tsv.headers["X-ClickHouse-Timezone"]
        assert json.loads(tsv.headers["X-ClickHouse-Summary"])["read_rows"] == "2"
        csv = _fetch(s, f"SELECT * FROM {table} ORDER BY n FORMAT CSVWithNames")
        assert csv.text == '"workspace_id","n"\n"a",1\n"b",2\n'
        assert csv.headers["content-type"].startswith("text/csv")
        js = httpx.get(
            s.url,
            params={"query": f"SELECT n FROM {table} WHERE n > {{m:UInt32}}", "param_m": "1",
                    "default_format": "JSON"},
        )  # fmt: skip
        assert json.loads(js.text)["data"] == [{"n": 2}]
        parquet = _fetch(s, f"SELECT * FROM {table} FORMAT Parquet")
        assert parquet.content[:4] == b"PAR1"
        zipped = httpx.get(
            s.url,
            params={"query": f"SELECT count() FROM {table}", "enable_http_compression": "1"},
            headers={"Accept-Encoding": "gzip"},
        )
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.text == "2\n"
        native = httpx.get(s.url, params={"query": f"SELECT count() FROM {table}", "compress": "1"})
        assert native_decompress(native.content) == b"2\n"
        body = gzip.compress(f"SELECT sum(n) FROM {table}".encode())
        assert _fetch(s, "", headers={"Content-Encoding": "gzip"}).status_code == 400
        assert httpx.post(s.url, content=body, headers={"Content-Encoding": "gzip"}).text == "3\n"
        session = {"session_id": uuid.uuid4().hex}
        httpx.get(s.url, params={"query": f"USE {clickhouse_db}", **session}).raise_for_status()
        assert httpx.get(s.url, params={"query": "SELECT count() FROM t", **session}).text == "2\n"
        assert (
            httpx.get(s.url, params={"query": "SELECT 1", "session_id": "nope",
                                     "session_check": "1"}).status_code == 500
        )  # fmt: skip
        headers = httpx.get(
            s.url,
            params={"query": "SELECT currentDatabase()", "database": clickhouse_db},
            headers={"X-ClickHouse-User": "default", "X-ClickHouse-Key": ""},
        )
        assert headers.text == f"{clickhouse_db}\n"


BAD = [
    ("SELEC 1", 62, "SYNTAX_ERROR", 400),
    ("SELECT 1; SELECT 2", 62, "SYNTAX_ERROR", 400),
    ("INSERT INTO $db.t VALUES ('c', 3)", 164, "READONLY", 500),
    ("CREATE TABLE $db.x (a Int8) ENGINE = Memory", 164, "READONLY", 500),
    ("DROP TABLE $db.t", 164, "READONLY", 500),
    ("ALTER TABLE $db.t DELETE WHERE 1", 164, "READONLY", 500),
    ("OPTIMIZE TABLE $db.t FINAL", 164, "READONLY", 500),
    ("KILL QUERY WHERE 1", 164, "READONLY", 500),
    ("SET max_threads = 8", 164, "READONLY", 500),
    ("SELECT 1 INTO OUTFILE '/tmp/leadflow-outfile'", 358, "INTO_OUTFILE_NOT_ALLOWED", 500),
    ("SELECT file('/etc/hostname')", 497, "ACCESS_DENIED", 403),
    ("SELECT * FROM file('/etc/hostname', 'LineAsString')", 497, "ACCESS_DENIED", 403),
    ("SELECT * FROM url('http://127.0.0.1:9/x', 'CSV')", 497, "ACCESS_DENIED", 403),
    ("SELECT count() FROM $db.t SETTINGS max_threads = 64", 164, "READONLY", 500),
    ("SELECT count() FROM nowhere.t", 81, "UNKNOWN_DATABASE", 404),
]


def test_bad_input_gets_clickhouse_errors_while_ingestion_goes_on(
    kafka: Settings,
    clickhouse_session: Any,
    clickhouse_db: str,
    serve_engine: Serve,
    counts_checked: Callable[[str], None],
) -> None:
    clickhouse_session.command(
        f"CREATE TABLE {clickhouse_db}.t (workspace_id String, n UInt32) ENGINE = Memory"
    )
    limits = {
        "clickhouse_http_max_query_seconds": 2.0,
        "clickhouse_http_max_query_memory": 64 * 1024**2,
        "clickhouse_http_max_result_bytes": 1024**2,
        "clickhouse_http_max_concurrent": 2,
        "clickhouse_http_max_queued": 4,
        "clickhouse_http_queue_seconds": 1.0,
    }
    checked = []
    with (
        serve_engine(clickhouse_db, **limits) as s,
        projecting(kafka, clickhouse_session, clickhouse_db, batches=40) as stream,
    ):
        wait_for(lambda: _owner_count(clickhouse_session, stream) > 0)
        before = _owner_count(clickhouse_session, stream)
        for sql, code, name, status in BAD:
            answer = _fetch(s, sql.replace("$db", clickhouse_db))
            assert answer.status_code == status, (sql, answer.text)
            assert answer.headers["X-ClickHouse-Exception-Code"] == str(code), answer.text
            assert answer.text.startswith(f"Code: {code}. DB::Exception: "), answer.text
            assert f"({name}) (version " in answer.text, answer.text
            checked.append(code)
        port = int(s.url.rsplit(":", 1)[1])
        with pytest.raises(DatabaseError, match="AUTHENTICATION_FAILED"):
            get_client(host="127.0.0.1", port=port, username="default", password="wrong")
        client = get_client(host="127.0.0.1", port=port)
        for settings, code in (({"max_execution_time": 600}, "452"), ({"max_threads": 99}, "452")):
            with pytest.raises(DatabaseError, match=f"code: {code}"):
                client.query("SELECT 1", settings=settings)
        # A ten-minute query stops at the limit (2 s here) with TIMEOUT_EXCEEDED.
        ten_minutes = "SELECT count() FROM numbers(10000000000000) WHERE sipHash64(number) = 0"
        long = _fetch(s, ten_minutes)
        assert long.headers["X-ClickHouse-Exception-Code"] == "159", long.text
        assert long.status_code == 408
        huge = _fetch(s, "SELECT groupArray(number) FROM numbers(100000000)")
        assert huge.headers["X-ClickHouse-Exception-Code"] == "241", huge.text
        big = _fetch(s, "SELECT * FROM numbers(10000000)")
        assert big.headers["X-ClickHouse-Exception-Code"] == "396", big.text
        wait_for(lambda: _owner_count(clickhouse_session, stream) == stream.total)
        after = _owner_count(clickhouse_session, stream)
    assert after > before
    # 100 at once, on an interface with the default time limit (the machine may be busy):
    # 2 run, 4 wait up to 1 s, the rest are refused at once; each answer is either the
    # result or ClickHouse's TOO_MANY_SIMULTANEOUS_QUERIES.
    burst = {k: v for k, v in limits.items() if "query" not in k and "result" not in k}
    with (
        serve_engine(clickhouse_db, **burst) as s,
        projecting(kafka, clickhouse_session, clickhouse_db, batches=20) as more,
    ):
        wait_for(lambda: _owner_count(clickhouse_session, more) > 0)
        before_burst = _owner_count(clickhouse_session, more)
        query = "SELECT count() FROM numbers(1000000) WHERE sipHash64(number) % 3 = 1"
        with ThreadPoolExecutor(100) as pool:
            answers = list(pool.map(lambda _i: _fetch(s, query), range(100)))
        codes = [a.headers.get("X-ClickHouse-Exception-Code", "ok") for a in answers]
        assert set(codes) <= {"ok", "202"}, codes
        assert codes.count("ok") >= 2, codes
        assert codes.count("202") >= 1, codes
        assert all(a.text.startswith("Code: 202.") for a in answers if a.status_code != 200)
        assert all(a.text == "333857\n" for a in answers if a.status_code == 200)
        wait_for(lambda: _owner_count(clickhouse_session, more) == more.total)
        after_burst = _owner_count(clickhouse_session, more)
    assert after_burst > before_burst
    counts_checked(
        f"{len(checked)} bad statements, wrong password, 2 settings over limits, a 10-minute "
        f"query (159), 64 MiB memory (241), 1 MiB result (396) while ingestion went {before} "
        f"-> {after} events; 100 parallel ({codes.count('ok')} answered, "
        f"{codes.count('202')} refused 202) while it went {before_burst} -> {after_burst}"
    )


def test_a_workspace_analyst_sees_only_its_workspace(
    clickhouse_session: Any,
    clickhouse_db: str,
    serve_engine: Serve,
    analyst: Callable[[Serving, str], tuple[str, str]],
    counts_checked: Callable[[str], None],
) -> None:
    from leadflow.sinks import reports
    from leadflow.sinks.migrations import migrate
    from leadflow.sinks.projection import rows_for_all
    from leadflow.sinks.projector import insert_rows

    migrate(clickhouse_session, clickhouse_db)
    both = [
        dataclasses.replace(o, workspace_id=w)  # type: ignore[type-var]
        for w in ("wa", "wb")
        for o in scenario.everything()
    ]
    insert_rows(clickhouse_session, clickhouse_db, rows_for_all(both))
    create_workspace_views(clickhouse_session, clickhouse_db, "wb")
    with serve_engine(clickhouse_db) as s:
        user, password = analyst(s, "wa")
        port = int(s.url.rsplit(":", 1)[1])
        mine = get_client(host="127.0.0.1", port=port, username=user, password=password)
        admin = get_client(host="127.0.0.1", port=port)
        views = [r[0] for r in admin.query(f"SHOW TABLES FROM {clickhouse_db}").result_rows]
        compared = 0
        for view in views:
            if view.startswith(("v_", "events", "deals", "costs", "scores", "handoffs")):
                own = mine.query(f"SELECT count() FROM {clickhouse_db}.{view}").result_rows
                all_ = admin.query(
                    f"SELECT countIf(workspace_id = 'wa'), count() FROM {clickhouse_db}.{view}"
                ).result_rows[0]
                assert own[0][0] == all_[0], view
                assert all_[1] > all_[0] or all_[0] == 0, view
                compared += 1
        listed = {r[0] for r in mine.query("SELECT name FROM system.databases").result_rows}
        assert clickhouse_db in listed
        assert f"{clickhouse_db}_ws_wb" not in listed
        range_ = {"date_from": date(2025, 12, 1), "date_to": date(2026, 3, 1)}
        assert (
            reports.funnel(mine, clickhouse_db, **range_).rows
            == reports.funnel(admin, clickhouse_db, workspace="wa", **range_).rows
        )
        for sql in (
            f"SELECT count() FROM {clickhouse_db}_ws_wb.events",
            f"SELECT count() FROM merge('{clickhouse_db}', 'events')",
            "SELECT * FROM system.processes",
            f"SELECT 1 WHERE 'x' IN {clickhouse_db}_ws_wb.events",
        ):
            with pytest.raises(DatabaseError, match="ACCESS_DENIED"):
                mine.query(sql)
        with pytest.raises(DatabaseError, match="READONLY"):
            mine.query(
                f"SELECT count() FROM {clickhouse_db}.events "
                "SETTINGS additional_table_filters = {}"
            )
    counts_checked(
        f"analyst of wa: {compared} tables/views equal the operator's wa-only counts, the "
        "funnel equals --workspace wa, 4 reads around the filter refused (497), 1 (164)"
    )


def test_report_and_sql_read_through_the_owner_without_stopping_it(
    clickhouse_session: Any, clickhouse_db: str, serve_engine: Serve
) -> None:
    from click.testing import CliRunner

    from leadflow.cli.main import cli
    from leadflow.sinks.migrations import migrate
    from leadflow.sinks.projection import rows_for_all
    from leadflow.sinks.projector import insert_rows

    migrate(clickhouse_session, clickhouse_db)
    insert_rows(clickhouse_session, clickhouse_db, rows_for_all(scenario.everything()))
    with serve_engine(clickhouse_db) as serving:
        env = serving.app.settings.to_env()
        sql = CliRunner().invoke(
            cli,
            ["sql", "SELECT count() AS n FROM v_events", "--database", clickhouse_db,
             "--format", "csv"],
            env=env,
        )  # fmt: skip
        assert sql.exit_code == 0, sql.output
        assert sql.output.split() == ["n", "12"]
        report = CliRunner().invoke(
            cli,
            ["report", "funnel", "--from", "2025-12-01", "--to", "2026-03-01", "--database",
             clickhouse_db, "--format", "json"],
            env=env,
        )  # fmt: skip
        assert report.exit_code == 0, report.output
        # The same process holds the engine, so only the HTTP path refuses a write: proof
        # that `leadflow sql` went through the owner's interface, not the engine.
        drop = CliRunner().invoke(
            cli, ["sql", "DROP TABLE events", "--database", clickhouse_db], env=env
        )
        assert drop.exit_code == 1
        said = f"{drop.output} {drop.exception}"
        assert "code: 164" in said
        assert "(READONLY)" in said
    assert clickhouse_session.command(f"EXISTS TABLE {clickhouse_db}.events") == 1
