"""The relay as a separate process on the real stack (Kafka, Geth, PostgreSQL), configured
through ``EHR_`` variables as in production, and what tests read back (log and chain)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from devstack.stack import Stack
from eth_account import Account
from eth_account.signers.local import LocalAccount
from ledger_relay.tokens import TokenKey

from services.ledger_relay.adapters.anchor import AuditAnchorLedger
from services.ledger_relay.adapters.sql import SqlLogRepository, leaves_table
from services.ledger_relay.domain.merkle import root_of
from services.ledger_relay.domain.model import CheckpointStatus
from services.ledger_relay.main import ANCHOR_ADDRESS_STATE
from services.platform.bus.outbox import outbox_table
from services.platform.chain.geth import GethChain

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CRASHING_ENTRY = Path(__file__).resolve().parent / "crashing_relay.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RelayDeployment:
    """One relay's database, key, topics and consumer group on the real stack."""

    stack: Stack
    work_dir: Path
    rpc_urls: list[str] | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.topics = [f"test.killa{suffix}.v1", f"test.killb{suffix}.v1"]
        self.group = f"ledger-relay-{suffix}"
        server = sa.make_url(
            self.stack.postgres.dsn().replace("postgresql://", "postgresql+psycopg://", 1)
        )
        self.database = f"ledger_{suffix}"
        self._admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with self._admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.database}"'))
        self.url = server.set(database=self.database)
        self.engine = sa.create_engine(self.url)
        geth = self.stack.geth
        self.chain = GethChain(list(geth.rpc_urls), geth.chain_id, geth.faucet_private_key())
        self.account: LocalAccount = Account.create()
        self.chain.fund(self.account.address, 10**20)
        self.key_file = self.work_dir / "relay.key"
        descriptor = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(self.account.key.hex())
        self.port = free_port()
        self.runs = 0

    def env(self) -> dict[str, str]:
        geth = self.stack.geth
        env = {
            **os.environ,
            "PYTHONPATH": str(PROJECT_ROOT),
            "EHR_JWT__ISSUER": "ehr-identity-test",
            "EHR_JWT__AUDIENCE": "ledger-relay",
            "EHR_JWT__JWKS": json.dumps(TokenKey().jwks()),
            "EHR_PORT": str(self.port),
            "EHR_DATA_DIR": str(self.work_dir / "data"),
            "EHR_DATABASE_URL": self.url.render_as_string(hide_password=False),
            "EHR_KAFKA_BOOTSTRAP_SERVERS": self.stack.kafka.bootstrap_servers,
            "EHR_CHAIN_RPC_URLS": json.dumps(self.rpc_urls or list(geth.rpc_urls)),
            "EHR_CHAIN_ID": str(geth.chain_id),
            "EHR_CHAIN_KEY_FILE": str(self.key_file),
            "EHR_TOPICS": json.dumps(self.topics),
            "EHR_CONSUMER_GROUP": self.group,
            "EHR_CHECKPOINT_EVENTS": "100",
            "EHR_CHECKPOINT_INTERVAL_MS": "300",
            "EHR_FETCH_MAX_RECORDS": "50",
            "EHR_MAX_WRITE_RECORDS": "100",  # many writes and checkpoints: many crash passages
            "EHR_LOG_LEVEL": "INFO",
        }
        env.update(self.extra_env)
        return env

    def start(self, crash_point: str | None = None, crash_at: int = 1) -> subprocess.Popen[bytes]:
        self.runs += 1
        env = self.env()
        if crash_point is None:
            argv = [sys.executable, "-m", "services.ledger_relay"]
        else:
            argv = [sys.executable, str(CRASHING_ENTRY)]
            env["LEDGER_TEST_CRASH_POINT"] = crash_point
            env["LEDGER_TEST_CRASH_AT"] = str(crash_at)
        output = open(self.work_dir / f"relay-{self.runs}.log", "wb")  # noqa: SIM115
        return subprocess.Popen(
            argv, cwd=PROJECT_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return "\n".join(
            (self.work_dir / f"relay-{n}.log").read_text(errors="replace")[-4000:]
            for n in range(1, self.runs + 1)
        )

    def wait_exit(self, process: subprocess.Popen[bytes], timeout_s: float) -> int:
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"the relay did not exit in time:\n{self.output()}") from None

    def stop(self, process: subprocess.Popen[bytes]) -> int:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return self.wait_exit(process, 60)

    def repository(self) -> SqlLogRepository:
        return SqlLogRepository(self.engine)

    def leaf_positions(self) -> dict[bytes, int]:
        """Event hash -> leaf index of every leaf; asserts one leaf per event hash."""
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("ledger_leaves"):
                return {}
            rows = conn.execute(
                sa.select(leaves_table.c.event_hash, leaves_table.c.leaf_index)
            ).all()
        positions = {bytes(h): int(i) for h, i in rows}
        assert len(positions) == len(rows), "an event has two leaves"
        return positions

    def anchor(self) -> AuditAnchorLedger:
        address = self.repository().get_state(ANCHOR_ADDRESS_STATE)
        assert address is not None, "the relay recorded no anchor contract"
        return AuditAnchorLedger(self.chain, address, self.account)

    def has_schema(self) -> bool:
        with self.engine.connect() as conn:
            return sa.inspect(conn).has_table("ledger_checkpoints")

    def tree_size(self) -> int:
        return self.repository().tree_size() if self.has_schema() else 0

    def anchored_size(self) -> int:
        if not self.has_schema():
            return 0
        latest = self.repository().latest_anchored()
        return 0 if latest is None else latest.tree_size

    def state(self) -> str:
        repo = self.repository()
        local = [(c.index, c.tree_size, c.status.value) for c in repo.checkpoints()]
        return f"tree size {repo.tree_size()}, checkpoints {local}, chain {self.anchor().count()}"

    def wait_until(self, what: str, predicate: object, timeout_s: float, process: object) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():  # type: ignore[operator]
            if process is not None and process.poll() is not None:  # type: ignore[attr-defined]
                raise AssertionError(f"the relay exited while waiting for {what}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what} ({self.state()}):\n{self.output()}"
                )
            time.sleep(0.1)

    def check_against_chain(self, events: list[bytes]) -> None:
        """Every event has exactly one leaf; the chain's checkpoints are the local ones,
        strictly increasing, each anchored once, each a prefix of the log."""
        from services.platform.events.envelope import event_hash

        positions = self.leaf_positions()
        assert set(positions) == {event_hash(raw) for raw in events}
        assert sorted(positions.values()) == list(range(len(events)))
        repo = self.repository()
        assert repo.checkpoints(CheckpointStatus.PENDING) == []
        local = repo.checkpoints(CheckpointStatus.ANCHORED)
        anchor = self.anchor()
        assert anchor.count() == len(local) >= 1
        sizes = []
        tx_hashes = set()
        for checkpoint in local:
            on_chain = anchor.checkpoint_at(checkpoint.index)
            assert (on_chain.tree_size, on_chain.root) == (checkpoint.tree_size, checkpoint.root)
            assert root_of(checkpoint.tree_size, repo.nodes) == checkpoint.root
            found = anchor.find_anchor(checkpoint.index)
            assert checkpoint.anchor is not None and found.tx_hash == checkpoint.anchor.tx_hash
            tx_hashes.add(found.tx_hash)
            sizes.append(checkpoint.tree_size)
        assert all(a < b for a, b in itertools.pairwise(sizes)), sizes
        assert len(tx_hashes) == len(local), "two checkpoints share a transaction"
        assert sizes[-1] == len(events)
        with self.engine.connect() as conn:
            queued = conn.execute(sa.select(sa.func.count()).select_from(outbox_table)).scalar()
        assert queued == len(local), "one checkpoint-anchored event per checkpoint"

    def close(self) -> None:
        self.engine.dispose()
        self.chain.close()
        with self._admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{self.database}" WITH (FORCE)'))
        self._admin.dispose()
