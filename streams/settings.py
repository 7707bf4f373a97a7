"""The one settings object: built once at the entry point, frozen, passed down explicitly.

Every value comes from an environment variable with the ``LEADFLOW_`` prefix (or the
defaults below). Nothing else in leadflow reads the environment.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from leadflow.processors.errors import LeadflowError

ENV_PREFIX = "LEADFLOW_"


class LogFormat(StrEnum):
    """How log lines look: ``auto`` is pretty on a terminal and JSON everywhere else."""

    AUTO = "auto"
    CONSOLE = "console"
    JSON = "json"


Port = Annotated[int, Field(ge=1, le=65535)]
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")


def node_ports_problem(brokers: int, port: int, controller_port: int) -> str | None:
    """Why ``brokers`` local nodes cannot use these ports (node n: both + 2(n-1)), or None.

    Two nodes on one port fail with "address in use" deep in a JVM log; say it up front.

    Example:
        >>> node_ports_problem(3, 19092, 19093) is None
        True
        >>> node_ports_problem(3, 19092, 19094)
        'with 3 nodes the client ports 19092-19096 and controller ports 19094-19098 overlap'
    """
    clients = [port + 2 * n for n in range(brokers)]
    controllers = [controller_port + 2 * n for n in range(brokers)]
    if set(clients) & set(controllers):
        return (
            f"with {brokers} nodes the client ports {clients[0]}-{clients[-1]} and controller "
            f"ports {controllers[0]}-{controllers[-1]} overlap"
        )
    if max(clients + controllers) > 65535:
        return f"{brokers} nodes need ports up to {max(clients + controllers)}"
    return None


class SettingsError(LeadflowError):
    """A setting has an invalid value; the message names the environment variable."""


class Settings(BaseSettings):
    """leadflow's configuration. Each field is the environment variable ``LEADFLOW_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    data_dir: Path = Field(
        default=Path(".leadflow"),
        description="Where local state lives: broker logs, embedded ClickHouse, worker tables.",
    )
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "leadflow",
        description="Where downloads are kept between clones (the Kafka broker's jars).",
    )
    kafka_bootstrap: str | None = Field(
        default=None,
        description="Bootstrap servers of an existing Kafka; when set, no local broker starts.",
    )
    kafka_brokers: int = Field(
        default=1,
        ge=1,
        le=9,
        description="Nodes (broker + controller each) of the local Kafka; 3 is a real cluster: "
        "replication 3, min.insync.replicas 2. Node n listens on the ports below + 2(n-1).",
    )
    kafka_port: Port = Field(default=19092, description="Port of the local broker.")
    kafka_controller_port: Port = Field(
        default=19093, description="KRaft controller port of the local broker."
    )
    kafka_version: str = Field(
        default="4.3.1", pattern=r"^\d+\.\d+\.\d+$", description="Kafka release to install."
    )
    kafka_heap: str = Field(
        default="1G", pattern=r"^\d+[mMgG]$", description="JVM heap of the local broker."
    )
    kafka_security_protocol: str = Field(
        default="PLAINTEXT",
        pattern=r"^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$",
        description="Kafka security protocol.",
    )
    kafka_sasl_mechanism: str | None = Field(
        default=None, description="SASL mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)."
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")
    kafka_ssl_cafile: Path | None = Field(default=None, description="CA bundle for Kafka TLS.")
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="Client certificate (PEM) for Kafka mutual TLS."
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None, description="Private key (PEM) of the Kafka client certificate."
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of the Kafka client key, if it is encrypted."
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Check that the broker's certificate names its host."
    )
    topic_partitions: int = Field(
        default=12, ge=1, le=10_000, description="Partitions per topic created by leadflow."
    )
    topic_replication: int | None = Field(
        default=None,
        ge=1,
        le=32,
        description="Replication factor of the topics; unset means the cluster's size, at most 3.",
    )
    schema_registry_url: str | None = Field(
        default=None,
        description="Confluent-compatible Schema Registry; unset means single-object encoding.",
    )
    clickhouse_dsn: SecretStr | None = Field(
        default=None,
        description="ClickHouse DSN (http[s]://user:pass@host:port/db or chdb://path); "
        "unset means embedded chdb under the data dir.",
    )
    clickhouse_cluster: str | None = Field(
        default=None, description="Cluster name: replicated engines and ON CLUSTER DDL."
    )
    clickhouse_secure: bool = Field(
        default=False,
        description="Use TLS to the ClickHouse server even if the DSN says http (an https DSN "
        "always does).",
    )
    clickhouse_verify: bool = Field(
        default=True, description="Verify the ClickHouse server's TLS certificate."
    )
    clickhouse_ca_cert: Path | None = Field(
        default=None, description="CA bundle (PEM) that signed the ClickHouse server certificate."
    )
    clickhouse_client_cert: Path | None = Field(
        default=None, description="Client certificate (PEM) for ClickHouse mutual TLS."
    )
    clickhouse_client_cert_key: Path | None = Field(
        default=None, description="Private key (PEM) of the ClickHouse client certificate."
    )
    # The ClickHouse HTTP interface that the process owning the embedded engine serves
    # (docs/analytics.md, "Connecting"). Read-only; limits keep ingestion ahead of analysts.
    clickhouse_http: bool = Field(
        default=True,
        description="Serve ClickHouse's HTTP interface (read-only) from the process that owns "
        "the embedded engine (the projector), so analysts can query while it ingests.",
    )
    clickhouse_http_host: str = Field(
        default="127.0.0.1", description="Bind address of that interface (loopback by default)."
    )
    clickhouse_http_port: Port = Field(default=8123, description="Its port (ClickHouse's).")
    clickhouse_http_user: str = Field(
        default="default",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        description="The user that may read every workspace (analysts get their own users).",
    )
    clickhouse_http_password: SecretStr | None = Field(
        default=None,
        description="That user's password; unset means none, allowed only on a loopback host.",
    )
    clickhouse_http_users_file: Path | None = Field(
        default=None,
        description="Workspace analysts (hashed passwords, JSON); unset means "
        "<data dir>/clickhouse-users.json.",
    )
    clickhouse_http_max_query_seconds: float = Field(
        default=60.0, gt=0, le=86400, description="Longest an analyst query may run."
    )
    clickhouse_http_max_query_memory: int = Field(
        default=2 * 1024**3, ge=16 * 1024**2, description="Most memory one query may use, bytes."
    )
    clickhouse_http_max_result_bytes: int = Field(
        default=512 * 1024**2, ge=1024**2, description="Largest result one query may return."
    )
    clickhouse_http_max_threads: int = Field(
        default=1, ge=1, le=256, description="Threads one analyst query may use."
    )
    clickhouse_http_max_concurrent: int = Field(
        default=2, ge=1, le=256, description="Analyst queries that run at once."
    )
    clickhouse_http_max_queued: int = Field(
        default=32,
        ge=0,
        le=10_000,
        description="Queries that may wait for a slot; more are refused.",
    )
    clickhouse_http_queue_seconds: float = Field(
        default=10.0, ge=0, le=3600, description="Longest a query waits for a slot."
    )
    collector_host: str = Field(default="127.0.0.1", description="Collector bind address.")
    collector_port: Port = Field(default=8088, description="Collector port.")
    collector_cors_origins: tuple[str, ...] = Field(
        default=("http://127.0.0.1:8089", "http://localhost:8089"),
        description="Origins allowed to call the collector from a browser (JSON list).",
    )
    collector_keys_file: Path | None = Field(
        default=None,
        description="Hashed write keys (JSON); unset means <data dir>/collector/keys.json.",
    )
    collector_max_event_bytes: int = Field(
        default=32 * 1024, ge=1024, description="Largest accepted event (Segment: 32 KB)."
    )
    collector_max_batch_bytes: int = Field(
        default=4000 * 1024,
        ge=1024,
        description="Largest accepted batch body, after gunzip (RudderStack's SDKs send up to "
        "its gateway's 4000 KB; Segment's send at most 500 KB).",
    )
    collector_rate_per_second: float = Field(
        default=1000.0, gt=0, description="Events per second each write key may send."
    )
    collector_rate_burst: float = Field(
        default=2000.0, ge=1, description="Events a write key may send at once (bucket size)."
    )
    collector_future_tolerance_seconds: float = Field(
        default=300.0, ge=0, description="How far past the collector's clock occurred_at may be."
    )
    collector_delivery_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="How long a request waits for Kafka's ack."
    )
    collector_request_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="A request's headers and body must arrive within this time of the "
        "connection opening (or of the previous response); else the connection is closed.",
    )
    collector_max_connections: int = Field(
        default=1000,
        ge=1,
        description="Open connections (and requests in flight) per collector process; beyond "
        "them new requests get 503 at once.",
    )
    collector_keep_alive_seconds: float = Field(
        default=5.0, gt=0, le=300, description="How long an idle keep-alive connection stays open."
    )
    collector_expose_docs: bool = Field(
        default=False,
        description="Serve /docs and /openapi.json (off: the API's shape is in docs/collector.md).",
    )
    collector_expose_metrics: bool = Field(
        default=False,
        description="Serve /metrics without a token (for a private network); see "
        "LEADFLOW_COLLECTOR_METRICS_TOKEN.",
    )
    collector_metrics_token: SecretStr | None = Field(
        default=None,
        description="Serve /metrics to requests with Authorization: Bearer <this token> "
        "(Prometheus' authorization.credentials).",
    )
    collector_heartbeat_ms: int = Field(
        default=100,
        ge=0,
        description="How often the collector writes a heartbeat on every partition of "
        "leadflow.events (0: never). The worker releases a lead's records in event-time "
        "order once every inbound partition has promised past them, so this bounds the "
        "wait ordering adds on a quiet partition (docs/operations.md, Event-time order).",
    )
    collector_retry_after_seconds: int = Field(
        default=5, ge=1, description="Retry-After sent with 503 while Kafka is unreachable."
    )
    collector_webhooks_file: Path | None = Field(
        default=None,
        description="Webhook secrets per workspace and vendor (JSON); unset means "
        "<data dir>/collector/webhooks.json. See docs/collector.md, Webhooks.",
    )
    collector_webhook_tolerance_seconds: float = Field(
        default=300.0,
        gt=0,
        description="How old (or early) a signed webhook may be; older ones are replays.",
    )
    collector_strict_properties: bool = Field(
        default=False,
        description="Reject properties/traits a known event kind does not define (else drop them).",
    )
    collector_tracking_consent_default: bool = Field(
        default=False,
        description="Keep IP and user agent of calls that do not state context.consent.tracking "
        "(default false: only with stated consent). See docs/privacy.md.",
    )
    pii_encryption: bool = Field(
        default=True,
        description="Encrypt PII fields with per-person keys in leadflow.pii-keys, so erasure "
        "can shred them in the Kafka log. See docs/privacy.md.",
    )
    order_lateness_ms: int = Field(
        default=0,
        ge=0,
        description="Allowed lateness D of event-time order (processors/ordering.py): events "
        "that arrive within D of when they occurred run in event-time order across requests; "
        "each fresh event waits up to D. 0: one request (an SDK batch) runs in event-time "
        "order, requests in arrival order (docs/architecture.md, measured).",
    )
    order_max_ahead_ms: int = Field(
        default=5_000,
        ge=0,
        description="How far a receive stamp (received_at or heartbeat) on leadflow.events may "
        "be ahead of its record's Kafka timestamp; beyond it the stamp counts as timestamp + "
        "this for the event-time order (processors/receive_bound.py), is counted and logged "
        "(identity.receive_ahead). Bounds how long a writer with future stamps can hold back "
        "the collector's traffic.",
    )
    deadline_clock_step_ms: int = Field(
        default=3_600_000,
        ge=0,
        description="The clock step of deadlines across by-lead partitions "
        "(processors/sla_clock.py): each inbound partition tells every by-lead partition when "
        "a workspace's event time enters a new step, so an SLA or horizon fires when event "
        "time moves on any partition, at most this much event time late when only another "
        "partition's traffic moves it. 0: deadlines move on the lead's own partition only.",
    )
    model_switch_records: int = Field(
        default=100,
        ge=0,
        le=1_000_000,
        description="The model switch gate M: a record is scored with the snapshots trained "
        "on examples before the M-th record released before it on its by-lead partition "
        "(processors/ordering.py, the model switch). A count, not a time, so it is the same "
        "in every run of the same records; a partition releases up to M records per lead -> "
        "trainer -> lead round trip (0: one position per round trip). The same on every worker.",
    )
    worker_stall_seconds: float = Field(
        default=30.0,
        gt=0,
        description="An input partition behind its end (from the consumer's position, past "
        "aborted batches and markers) that does not move this long is re-sought to its "
        "committed offset; if that does not help the worker exits (code 70) for its supervisor.",
    )
    projector_stall_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A projected partition behind its end (read_committed) whose position "
        "does not move this long gets a new consumer (a client that stopped fetching after a "
        "broker restart, librdkafka #5153); if the new one does not move it either the "
        "projector exits (code 70) for its supervisor.",
    )
    worker_batch_max: int = Field(
        default=1000,
        ge=1,
        description="Most records the worker processes in one transaction.",
    )
    worker_poll_seconds: float = Field(
        default=0.2,
        gt=0,
        description="How long the worker waits for a first record before its housekeeping "
        "(a record that arrives is processed at once).",
    )
    worker_hold_ms: float = Field(
        default=20.0,
        ge=0,
        description="A batch that produced nothing but store writes (watermarks, held "
        "records) leaves its transaction open this long for the next batch to ride in, "
        "instead of a commit of its own; committed when the worker is idle. 0: every batch "
        "commits.",
    )
    worker_linger_ms: float = Field(
        default=2.0,
        ge=0,
        description="How long the worker's producer waits to fill a batch.",
    )
    worker_transaction_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Kafka transaction timeout: the longest a dead worker's open transaction "
        "can hold readers back (when no worker with its data dir restarts to fence it).",
    )
    kafka_session_timeout_seconds: float = Field(
        default=10.0,
        ge=6,
        le=300,
        description="Consumer group session of the worker and the projector: a member killed "
        "without leaving holds its partitions this long before the group hands them on, "
        "also to its own restart (librdkafka's default is 45 s). Within the broker's "
        "group.min/max.session.timeout.ms (6-300 s by default).",
    )
    worker_hung_call_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A Kafka client call of the worker blocked this long (past its own "
        "timeout) ends the process with code 70 for its supervisor.",
    )
    model_signing_key: SecretStr | None = Field(
        default=None,
        description="HMAC key that signs model snapshots; unset means a random key kept "
        "in the data dir (fine for one machine; set it when workers run on several).",
    )
    policy_file: Path | None = Field(
        default=None, description="Business rules (YAML); unset means the packaged default."
    )
    bounds_file: Path | None = Field(
        default=None,
        description="Accepted ranges of amounts and counts, per workspace (YAML); unset means "
        "the built-in defaults (no negative money or counts, at most 1e9 per deal or cost "
        "line). See docs/operations.md.",
    )
    log_format: LogFormat = Field(default=LogFormat.AUTO, description="auto, console or json.")
    log_level: str = Field(
        default="INFO",
        pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$",
        description="Lowest level logged.",
    )

    @field_validator("kafka_sasl_mechanism")
    @classmethod
    def _sasl_needs_sasl_protocol(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A mechanism with a non-SASL protocol is silently ignored by the clients: the
        # operator believes the connection is authenticated when it is not.
        protocol = info.data.get("kafka_security_protocol", "PLAINTEXT")
        if value and not protocol.startswith("SASL_"):
            raise ValueError(
                f"needs LEADFLOW_KAFKA_SECURITY_PROTOCOL SASL_SSL or SASL_PLAINTEXT, not {protocol}"
            )
        if not value and protocol.startswith("SASL_"):
            raise ValueError(f"must be set when LEADFLOW_KAFKA_SECURITY_PROTOCOL is {protocol}")
        if value and value not in SASL_MECHANISMS:
            raise ValueError(f"must be one of {', '.join(SASL_MECHANISMS)}")
        return value or None

    @field_validator("kafka_controller_port")
    @classmethod
    def _node_ports_apart(cls, value: int, info: ValidationInfo) -> int:
        problem = node_ports_problem(
            info.data.get("kafka_brokers", 1), info.data.get("kafka_port", 19092), value
        )
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("collector_cors_origins")
    @classmethod
    def _origins_are_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Browsers send "scheme://host[:port]" with no path or trailing slash; anything else
        # never matches and silently blocks the site that was meant to be allowed.
        for origin in value:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not an origin like https://www.example.com")
        return value

    @field_validator("kafka_bootstrap", "schema_registry_url", "clickhouse_cluster")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @property
    def local_kafka(self) -> bool:
        """Whether leadflow runs its own broker (no ``LEADFLOW_KAFKA_BOOTSTRAP`` given)."""
        return self.kafka_bootstrap is None

    @property
    def kafka_node_ports(self) -> tuple[tuple[int, int], ...]:
        """``(client port, controller port)`` of each local Kafka node, node 1 first.

        Example:
            >>> load_settings(kafka_brokers=3).kafka_node_ports
            ((19092, 19093), (19094, 19095), (19096, 19097))
        """
        return tuple(
            (self.kafka_port + 2 * n, self.kafka_controller_port + 2 * n)
            for n in range(self.kafka_brokers)
        )

    @property
    def bootstrap(self) -> str:
        """The bootstrap servers every Kafka client uses.

        Locally that is every node, so a client starting while one node is down still
        finds the cluster.

        Example:
            >>> load_settings(kafka_brokers=2).bootstrap
            '127.0.0.1:19092,127.0.0.1:19094'
        """
        if self.kafka_bootstrap:
            return self.kafka_bootstrap
        return ",".join(f"127.0.0.1:{port}" for port, _ in self.kafka_node_ports)

    @property
    def clickhouse_url(self) -> str:
        """The ClickHouse DSN, embedded chdb under the data dir by default."""
        if self.clickhouse_dsn is not None:
            return self.clickhouse_dsn.get_secret_value()
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    def to_env(self) -> dict[str, str]:
        """The ``LEADFLOW_*`` variables that rebuild these settings in a child process.

        Example:
            >>> load_settings(kafka_port=29092).to_env()["LEADFLOW_KAFKA_PORT"]
            '29092'
        """
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, tuple):
                value = json.dumps(list(value))
            elif isinstance(value, StrEnum):
                value = value.value
            env[ENV_PREFIX + name.upper()] = str(value)
        return env

    def kafka_group_config(self) -> dict[str, int]:
        """Group membership timing shared by the worker's and the projector's consumers."""
        session_ms = int(self.kafka_session_timeout_seconds * 1000)
        # Over three heartbeats per session (Kafka's clients default to 45 s / 3 s): one
        # lost heartbeat does not end a membership.
        return {"session.timeout.ms": session_ms, "heartbeat.interval.ms": session_ms * 3 // 10}

    def kafka_client_config(self) -> dict[str, str | int | float | bool]:
        """librdkafka-style connection settings shared by every confluent-kafka client."""
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            config["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password:
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_cafile:
            config["ssl.ca.location"] = str(self.kafka_ssl_cafile)
        if self.kafka_ssl_certfile:
            config["ssl.certificate.location"] = str(self.kafka_ssl_certfile)
        if self.kafka_ssl_keyfile:
            config["ssl.key.location"] = str(self.kafka_ssl_keyfile)
        if self.kafka_ssl_key_password:
            config["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        if self.kafka_security_protocol.endswith("SSL"):
            config["ssl.endpoint.identification.algorithm"] = (
                "https" if self.kafka_ssl_check_hostname else "none"
            )
        return config


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, failing with the variable's name.

    Args:
        overrides: values that win over the environment (used by tests and the CLI).

    Raises:
        SettingsError: naming every ``LEADFLOW_*`` variable whose value is invalid.

    Example:
        >>> load_settings(kafka_port=29092).bootstrap
        '127.0.0.1:29092'
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            problems.append(f"{ENV_PREFIX}{field.upper()}: {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
