"""Apache Kafka: one combined KRaft broker/controller on loopback."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from .component import Component, ServerStatus, server_status
from .processes import ManagedProcess, StackError, port_open, wait_until
from .settings import StackSettings

_LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.org.apache.kafka.clients=WARN
log4j.logger.kafka.request.logger=WARN
"""


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in unpadded URL-safe base64, never starting
    with "-" (the storage tool would read such an id as an option; Kafka's own ids
    skip those too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class Kafka(Component):
    name = "kafka"

    def __init__(self, settings: StackSettings) -> None:
        self._settings = settings
        self._kafka = settings.kafka
        self.state_dir = settings.run_dir / "kafka"
        self._data_dir = self.state_dir / "data"
        self._properties = self.state_dir / "server.properties"
        self._log4j = self.state_dir / "log4j.properties"
        self.process = ManagedProcess(
            name="kafka",
            argv=[
                self._kafka.java,
                f"-Xms{self._kafka.heap_mb}m",
                f"-Xmx{self._kafka.heap_mb}m",
                "-XX:+UseG1GC",
                "-Djava.awt.headless=true",
                f"-Dlog4j.configuration=file:{self._log4j}",
                "-cp",
                self._classpath,
                "kafka.Kafka",
                str(self._properties),
            ],
            pid_file=self.state_dir / "kafka.pid",
            log_file=settings.logs_dir / "kafka.log",
        )

    @property
    def bootstrap_servers(self) -> str:
        return f"{self._settings.host}:{self._kafka.port}"

    @property
    def _classpath(self) -> str:
        return f"{self._kafka.libs_dir}/*"

    def _write_config(self) -> None:
        host, port, cport = self._settings.host, self._kafka.port, self._kafka.controller_port
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@{host}:{cport}",
                    f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
                    f"advertised.listeners=PLAINTEXT://{host}:{port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={self._data_dir}",
                    "num.partitions=3",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=10",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "",
                ]
            )
        )
        self._log4j.write_text(_LOG4J)

    def _format_storage(self) -> None:
        if (self._data_dir / "meta.properties").exists():
            return
        cluster_id = new_cluster_id()
        result = subprocess.run(
            [
                self._kafka.java,
                f"-Dlog4j.configuration=file:{self._log4j}",
                "-cp",
                self._classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self._properties),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"kafka storage format failed:\n{result.stdout}{result.stderr}")

    def ready(self) -> bool:
        if not port_open(self._settings.host, self._kafka.port):
            return False
        # A thread of its own, so the probe also works when called from a running event loop
        # (e.g. an async test that is the first to ask for Kafka).
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, _cluster_answers(self.bootstrap_servers)).result()

    def up(self, timeout_s: float) -> None:
        if not list(Path(self._kafka.libs_dir).glob("kafka_2.13-*.jar")):
            raise StackError(f"no Kafka jars in {self._kafka.libs_dir}: run `make install`")
        if self.process.pid() is None:
            self._write_config()
            self._format_storage()
            self.process.start()

        def healthy() -> bool:
            self.process.raise_if_exited()
            return self.ready()

        wait_until(healthy, timeout_s, f"kafka on {self.bootstrap_servers}")

    def down(self, timeout_s: float) -> None:
        self.process.stop(timeout_s)

    def servers(self) -> list[ServerStatus]:
        pid = self.process.pid()
        healthy = pid is not None and self.ready()
        return [server_status("kafka", "kafka", self.bootstrap_servers, pid, healthy)]


async def _cluster_answers(bootstrap: str) -> bool:
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await client.start()
        cluster = await client.describe_cluster()
        return bool(cluster.get("brokers"))
    except Exception:
        return False
    finally:
        await client.close()
