"""A local single-node Apache Kafka broker (KRaft, combined mode) for development and tests.

Kafka's jars come from Maven Central through `mvn` into a cache directory
once; the broker runs on the machine's JDK in the background with its data
and log under `<data dir>/kafka`. `ensure_broker` is idempotent: a broker
already answering on the bootstrap address is left alone. Its default
`message.max.bytes` is the project's `MESSAGE_BYTES` (the topics the project
creates set it themselves).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from journeys.schemas.codec import MESSAGE_BYTES
from journeys.schemas.errors import BrokerError
from journeys.schemas.settings import Settings

SLF4J_BINDING = ("org.slf4j", "slf4j-reload4j", "1.7.36")

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>journeys</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version></dependency>
    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J = """log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
"""


def _host_port(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host or "127.0.0.1", int(port)


def _home(settings: Settings) -> Path:
    if settings.kafka_home:
        return settings.kafka_home
    return Path.home() / ".cache" / "journeys" / f"kafka-{settings.kafka_version}"


def _data(settings: Settings) -> Path:
    return (settings.data_dir / "kafka").resolve()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def accepting(bootstrap: str, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on the bootstrap address."""
    host, port = _host_port(bootstrap)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def fetch_jars(settings: Settings) -> Path:
    """Kafka's runtime jars in the cache, fetched with Maven once."""
    home = _home(settings)
    libs = home / "libs"
    if libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "`mvn` (Apache Maven) is not on PATH; install it (e.g. `apt-get install maven`) "
            "so the broker's jars can be fetched from Maven Central"
        )
    home.mkdir(parents=True, exist_ok=True)
    g, a, v = SLF4J_BINDING
    (home / "pom.xml").write_text(_POM.format(version=settings.kafka_version, g=g, a=a, v=v))
    _say(f"fetching Apache Kafka {settings.kafka_version} from Maven Central into {home} (once)")
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(home / "pom.xml"),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={libs}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise BrokerError(f"fetching Kafka failed: {' '.join(command)}\n{tail}")
    return libs


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerError(
            "`java` is not on PATH; install a JDK 17 "
            "(e.g. `apt-get install openjdk-17-jdk-headless`)"
        )
    return java


def _write_config(settings: Settings, data: Path) -> Path:
    host, port = _host_port(settings.kafka_bootstrap)
    controller = settings.kafka_controller_port
    properties = data / "server.properties"
    properties.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@{host}:{controller}",
                f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller}",
                f"advertised.listeners=PLAINTEXT://{host}:{port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
                f"log.dirs={data / 'logs'}",
                f"num.partitions={settings.topic_partitions}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=10",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "log.cleaner.dedupe.buffer.size=33554432",
                "auto.create.topics.enable=true",
                f"message.max.bytes={MESSAGE_BYTES}",
                "",
            ]
        )
    )
    (data / "log4j.properties").write_text(_LOG4J.format(log=data / "broker.log"))
    return properties


def _format(java: str, libs: Path, data: Path, properties: Path) -> None:
    if (data / "logs" / "meta.properties").exists():
        return
    classpath = f"{libs}/*"
    log4j = f"-Dlog4j.configuration=file:{data / 'log4j.properties'}"
    uuid = (
        subprocess.run(
            [java, log4j, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
            capture_output=True,
            text=True,
            check=False,
        )
        .stdout.strip()
        .splitlines()
    )
    if not uuid:
        raise BrokerError("kafka StorageTool random-uuid printed nothing; is the JDK working?")
    result = subprocess.run(
        [
            java,
            log4j,
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            uuid[-1],
            "-c",
            str(properties),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BrokerError(
            f"formatting the broker's storage failed:\n{result.stdout}{result.stderr}"
        )


def _pid(data: Path) -> int | None:
    try:
        pid = int((data / "broker.pid").read_text().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def broker_running(settings: Settings) -> bool:
    """Whether a broker answers on the configured bootstrap address."""
    return accepting(settings.kafka_bootstrap)


def ensure_broker(settings: Settings, timeout: float = 90.0) -> str:
    """Start the local broker unless one answers already; the bootstrap address."""
    if broker_running(settings):
        return settings.kafka_bootstrap
    java = _java()
    libs = fetch_jars(settings)
    data = _data(settings)
    data.mkdir(parents=True, exist_ok=True)
    properties = _write_config(settings, data)
    _format(java, libs, data, properties)
    command = [
        java,
        f"-Xmx{settings.kafka_heap}",
        f"-Xms{settings.kafka_heap}",
        "-XX:+UseG1GC",
        f"-Dlog4j.configuration=file:{data / 'log4j.properties'}",
        "-cp",
        f"{libs}/*",
        "kafka.Kafka",
        str(properties),
    ]
    pid = _spawn(command, data / "broker.out")
    (data / "broker.pid").write_text(str(pid))
    _say(
        f"starting Kafka {settings.kafka_version} on {settings.kafka_bootstrap} "
        f"(pid {pid}, log {data / 'broker.log'})"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            tail = "\n".join((data / "broker.out").read_text(errors="replace").splitlines()[-15:])
            raise BrokerError(f"the broker exited with status {status}:\n{tail}")
        if accepting(settings.kafka_bootstrap) and _metadata_ready(settings):
            _say("Kafka is up")
            return settings.kafka_bootstrap
        time.sleep(0.5)
    raise BrokerError(
        f"the broker did not accept connections within {timeout:.0f}s; see {data / 'broker.log'}"
    )


def _spawn(command: list[str], log: Path) -> int:
    """Start the broker in a session of its own, outliving this process; its pid."""
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return os.posix_spawn(
            command[0],
            command,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out, 1),
                (os.POSIX_SPAWN_DUP2, out, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(out)


def _metadata_ready(settings: Settings) -> bool:
    from journeys.producers.kafka import kafka_errors, new_admin

    try:
        admin = new_admin(settings, timeout=3.0)
        try:
            with kafka_errors(settings.kafka_bootstrap, "listing topics"):
                admin.list_topics()
        finally:
            admin.close()
        return True
    except BrokerError:
        return False


def stop_broker(settings: Settings, timeout: float = 30.0) -> bool:
    """Stop the broker this data dir started; True if one was running."""
    data = _data(settings)
    pid = _pid(data)
    if pid is None:
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid(data) is not None:
        _reap(pid)
        time.sleep(0.2)
    if _pid(data) is not None:
        os.killpg(pid, signal.SIGKILL)
        time.sleep(0.5)
    (data / "broker.pid").unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    """Collect the broker's exit status if this process started it (`journeys demo`):
    until then it stays a zombie, which still answers `kill(pid, 0)`."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # started by another process: init reaps it
        pass


def broker_status(settings: Settings) -> tuple[bool, int | None]:
    """(answering on the bootstrap address, pid of the broker this data dir started)."""
    return broker_running(settings), _pid(_data(settings))
