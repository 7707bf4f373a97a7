"""A real Apache Kafka broker on loopback, installed from Maven Central and run by leadflow.

The release tarball's ``libs/`` folder is the broker's runtime classpath, which Maven can
assemble from ``infra/kafka/pom.xml``: no tarball, no Docker. The broker runs single-node
KRaft (broker and controller in one JVM) with the replication defaults lowered to 1 so
that consumer groups, idempotent producers and transactions all get a coordinator.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from leadflow.processors.errors import LeadflowError
from leadflow.streams.logs import get_logger
from leadflow.streams.private_files import PRIVATE_UMASK, private_dir, tighten, write_private
from leadflow.streams.settings import Settings

log = get_logger(__name__)

LOG4J2_PROPERTIES = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


class KafkaError(LeadflowError):
    """The local broker could not be installed, started or stopped."""


# Ports are picked from here up to the kernel's ephemeral range (below).
LOWEST_PICKED_PORT = 10_000


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux default 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive loopback ports nobody listens on right now.

    Picked below the kernel's ephemeral range. Why: a port from that range (what binding
    port 0 returns) can be handed to any outgoing connection, a client polling a starting
    broker for instance, between the pick and the broker's bind; CI once lost a 3-node
    cluster's controller port so ("Address already in use"). A port below it is taken only
    by a process that binds it explicitly.
    """
    low = _ephemeral_low()
    if low - count <= LOWEST_PICKED_PORT:
        raise KafkaError(f"no ports below the ephemeral range (it starts at {low})")
    pick = secrets.SystemRandom()
    for _ in range(200):
        base = pick.randrange(LOWEST_PICKED_PORT, low - count)
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise KafkaError(f"no run of {count} free ports below {low} in 200 tries")


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback; see :func:`free_port_run`)."""
    return free_port_run(1)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together, so none repeats)."""
    ports: list[int] = []
    with contextlib.ExitStack() as stack:
        while len(ports) < count:
            port = free_port_run(1)
            try:
                stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue  # one of ours (held), or taken since the pick
            ports.append(port)
        return ports


def kafka_uuid() -> str:
    """A Kafka ``Uuid`` string (22 chars of URL-safe base64, never starting with ``-``).

    Kafka's ``Uuid.randomUuid`` does the same; it saves a JVM start for ``random-uuid``.

    Example:
        >>> len(kafka_uuid())
        22
    """
    while True:
        text = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _pom() -> Path:
    return Path(str(resources.files("leadflow.infra") / "kafka" / "pom.xml"))


def install(settings: Settings) -> Path:
    """Fetch the broker's jars from Maven Central into the cache, once; return the libs dir.

    Concurrent callers (parallel test sessions) wait on a file lock instead of racing.
    """
    home = settings.cache_dir / "kafka" / settings.kafka_version
    libs = home / "libs"
    marker = home / ".complete"
    if marker.exists():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaError("Maven (mvn) is needed once to fetch the Kafka broker's jars")
        staging = home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        log.info("kafka.install", version=settings.kafka_version, into=str(libs))
        started = time.monotonic()
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(_pom()),
                f"-Dkafka.version={settings.kafka_version}",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            raise KafkaError(
                f"mvn could not fetch Kafka {settings.kafka_version}: "
                + (result.stdout + result.stderr)[-2000:]
            )
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        marker.write_text(settings.kafka_version)
        log.info("kafka.installed", seconds=round(time.monotonic() - started, 1))
    return libs


# What Kafka's transaction coordinator logs when it drops the commit or abort markers of
# partitions that have no leader, taking them for deleted (TransactionMarkerChannelManager).
# A single node killed -9 and restarted fences its own previous registration ~9 s after the
# start, which leaves every partition without a leader for a moment: a transaction that was
# committing at the kill can lose its markers on some partitions there, and with them its
# atomicity (docs/operations.md, "The single-node broker killed -9").
SKIPPED_MARKERS = "these partitions are likely deleted already and hence can be skipped"


def skipped_markers(lines: Iterable[str]) -> list[str]:
    r"""The lines of a broker log where Kafka skipped transaction markers (line ends cut).

    Example:
        >>> log = ["[t1] INFO started (k)\n", "[t2] INFO Couldn't find leader endpoint for "
        ...        f"partitions HashSet(a-1) ..., {SKIPPED_MARKERS} (k)\n"]
        >>> [line[:4] for line in skipped_markers(log)]
        ['[t2]']
    """
    return [line.rstrip("\n") for line in lines if SKIPPED_MARKERS in line]


# Broker properties over LocalKafka's defaults: ``(property, value)`` pairs, in order.
BrokerProperties = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class LocalKafka:
    """One KRaft node (broker and controller in one JVM) living in ``home``.

    Alone (``voters`` empty) it is a single-node cluster with every replication default
    lowered to 1. In a cluster (:mod:`leadflow.streams.kafka_cluster`) every node is a
    voter of a static controller quorum and the internal topics get the cluster's
    replication.

    Attributes:
        home: folder for the config, the log dirs, the pid file and ``server.log``.
        libs: the classpath folder that :func:`install` produced.
        port: client port on 127.0.0.1.
        controller_port: KRaft controller port on 127.0.0.1.
        heap: JVM ``-Xmx``.
        node_id: this node's id in the cluster.
        voters: ``(node id, controller port)`` of every node of a cluster; empty alone.
        overrides: ``(property, value)`` pairs written after (so over) the defaults below,
            for measuring a broker setting (``bench.txn_floor --broker-config``).
    """

    home: Path
    libs: Path
    port: int
    controller_port: int
    heap: str = "1G"
    node_id: int = 1
    voters: tuple[tuple[int, int], ...] = ()
    overrides: BrokerProperties = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalKafka:
        """The broker the settings describe (installing its jars if needed)."""
        return cls(
            home=(settings.data_dir / "kafka").resolve(),
            libs=install(settings),
            port=settings.kafka_port,
            controller_port=settings.kafka_controller_port,
            heap=settings.kafka_heap,
        )

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers of this broker."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        """The broker's own log (``server.log``)."""
        return self.home / "logs" / "server.log"

    @property
    def formatted(self) -> bool:
        """Whether this node's storage has been formatted (it has a cluster id)."""
        return (self.home / "data" / "meta.properties").exists()

    @property
    def _pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def _config_file(self) -> Path:
        return self.home / "server.properties"

    def _server_properties(self) -> str:
        replication = max(1, min(len(self.voters), 3))
        # With three copies one may be down and writes still need two: min ISR 2.
        min_isr = "2" if replication >= 3 else "1"
        listeners = (
            f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
        )
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "listeners": listeners,
            "advertised.listeners": listeners,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.home / "data"),
            # Every internal topic must fit on the live brokers or coordinators never
            # appear: one copy alone, three (two in sync) in a cluster.
            "offsets.topic.replication.factor": str(replication),
            "offsets.topic.num.partitions": "12",
            "transaction.state.log.replication.factor": str(replication),
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "12",
            "share.coordinator.state.topic.replication.factor": str(replication),
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
            # Two cores: a few threads each is plenty and leaves room for the workers.
            "num.network.threads": "2",
            "num.io.threads": "4" if not self.voters else "2",
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
        }
        if self.voters:
            props["controller.quorum.voters"] = ",".join(
                f"{node}@127.0.0.1:{port}" for node, port in self.voters
            )
            # A node killed with -9 keeps its partitions' leadership and ISR membership
            # until the controller fences it; every acks=all write to them waits that long.
            # The default (9 s) nearly equals the collector's delivery timeout (10 s).
            props["broker.session.timeout.ms"] = "6000"
            props["broker.heartbeat.interval.ms"] = "1000"
            # A returning node gets its preferred leaderships back within ~30 s (default
            # 5 min), so load spreads over all brokers again soon after a restart.
            props["leader.imbalance.check.interval.seconds"] = "30"
        else:
            props["controller.quorum.bootstrap.servers"] = f"127.0.0.1:{self.controller_port}"
        for key, value in self.overrides:
            # A properties file line: a key with no separator or space, a value on one line.
            if not key or any(c in key for c in "=: \t\r\n") or any(c in value for c in "\r\n"):
                raise KafkaError(f"not a broker property: {key!r}={value!r}")
            props[key] = value
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _java(self, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise KafkaError("Java 17+ is needed to run the Kafka broker")
        return [
            java,
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.home / 'logs'}",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
            *args,
        ]

    def write_config(self) -> None:
        """Write ``server.properties`` and the log configuration (each start rewrites them)."""
        # The segments of leadflow.pii-keys hold every person's key bytes: nothing here is
        # for other users. Older homes (segments were 0644) are tightened once per start.
        private_dir(self.home)
        if changed := tighten(self.home):
            log.info("kafka.files_made_private", home=str(self.home), entries=changed)
        private_dir(self.home / "logs")
        write_private(self._config_file, self._server_properties().encode())
        write_private(self.home / "log4j2.properties", LOG4J2_PROPERTIES.encode())

    def format(self, cluster_id: str) -> None:
        """Format this node's storage for ``cluster_id`` unless it is formatted already.

        Raises:
            KafkaError: the storage tool failed (its output is in the message).
        """
        if self.formatted:
            return
        self.write_config()
        # Alone, the node bootstraps a one-voter dynamic quorum; in a cluster the voters
        # are static (controller.quorum.voters), which the storage tool reads itself.
        mode = () if self.voters else ("--standalone",)
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            self._java(
                "kafka.tools.StorageTool",
                "format",
                *mode,
                "-t",
                cluster_id,
                "-c",
                str(self._config_file),
            ),
            capture_output=True,
            text=True,
            check=False,
            umask=PRIVATE_UMASK,
        )
        if result.returncode != 0:
            raise KafkaError(f"formatting Kafka storage failed: {result.stdout}{result.stderr}")

    def pid(self) -> int | None:
        """The broker's process id if it is running, else ``None``."""
        try:
            pid = int(self._pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def ready(self, timeout: float = 1.0) -> bool:
        """Whether the broker answers a metadata request."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        try:
            metadata = admin.list_topics(timeout=timeout)
        except Exception:
            return False
        return bool(metadata.brokers)

    def start(self, timeout: float = 90.0) -> None:
        """Format storage if new, start the JVM detached, and wait until it serves requests.

        Raises:
            KafkaError: with the tail of ``server.log`` when it does not come up in time.
        """
        if self.pid() is not None and self.ready(timeout=5):
            log.info("kafka.already_running", bootstrap=self.bootstrap, pid=self.pid())
            return
        if not self.voters:
            self.format(kafka_uuid())
        self.await_ready(self.launch(), timeout)

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the JVM detached (storage must be formatted) and return its process."""
        if not self.formatted:
            raise KafkaError(f"{self.home}: storage is not formatted")
        self.write_config()
        stdout = os.open(
            self.home / "logs" / "stdout.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
        )
        with os.fdopen(stdout, "ab") as out:
            process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                self._java("kafka.Kafka", str(self._config_file)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI that started it
                umask=PRIVATE_UMASK,  # the JVM's segments, indexes and logs: 0600 / 0700
            )
        write_private(self._pid_file, str(process.pid).encode())
        return process

    def await_ready(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        """Wait until the launched node answers metadata requests.

        Raises:
            KafkaError: the JVM exited, or did not serve within ``timeout`` (then it is
                stopped); the message has the tail of its log.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise KafkaError(f"Kafka exited with {process.returncode}: {self._tail()}")
            if self.ready(timeout=1):
                log.info("kafka.started", bootstrap=self.bootstrap, pid=process.pid)
                self.warn_skipped_markers()
                return
            time.sleep(0.3)
        self.stop()
        raise KafkaError(f"Kafka did not become ready in {timeout:.0f}s: {self._tail()}")

    def skipped_markers(self) -> list[str]:
        """The lines of this node's ``server.log`` where Kafka skipped transaction markers.

        Read line by line: the log is never rotated, and this runs at every start.
        """
        try:
            with self.log_file.open(errors="replace") as log_lines:
                return skipped_markers(log_lines)
        except FileNotFoundError:
            return []

    def warn_skipped_markers(self) -> None:
        """Log loudly if this node's log shows skipped transaction markers (ever)."""
        skipped = self.skipped_markers()
        if skipped:
            log.error(
                "kafka.transaction_markers_skipped",
                node=self.node_id,
                times=len(skipped),
                last=skipped[-1][:160],
                meaning="a transaction committing when this node was killed may be broken",
                see='docs/operations.md, "The single-node broker killed -9"',
            )

    def kill(self) -> None:
        """SIGKILL the JVM (a crash: no controlled shutdown, no flush) and reap it."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        self._pid_file.unlink(missing_ok=True)
        log.warning("kafka.killed", node=self.node_id, pid=pid)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it does not exit in time."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.2)
        if self.pid() is not None:
            log.warning("kafka.kill", pid=pid)
            os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self._pid_file.unlink(missing_ok=True)
        log.info("kafka.stopped", pid=pid)

    def _tail(self, lines: int = 30) -> str:
        for path in (self.log_file, self.home / "logs" / "stdout.log"):
            if path.exists():
                return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


@contextlib.contextmanager
def scratch_broker(
    settings: Settings,
    home: Path,
    heap: str = "512m",
    overrides: BrokerProperties = (),
) -> Iterator[tuple[LocalKafka, Settings]]:
    """A throwaway broker on free loopback ports in ``home``, and settings that point at it.

    For tests and benchmarks that must not share a broker (fault tests stop it; a fresh
    consumer group would otherwise reprocess everyone else's events). ``overrides``: broker
    properties over the defaults (:class:`LocalKafka`).
    """
    broker = LocalKafka(
        home=home,
        libs=install(settings),
        port=free_port(),
        controller_port=free_port(),
        heap=heap,
        overrides=overrides,
    )
    broker.start()
    try:
        yield broker, settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
    finally:
        broker.stop()
