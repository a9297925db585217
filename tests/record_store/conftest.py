"""Identity, consent and the record store served on loopback by real uvicorn servers,
on the embedded default (SQLite, embedded log, in-process EVM) and on the real stack
(PostgreSQL, Kafka, Geth). Users act through the client SDK."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from devstack.stack import Stack
from ehr.envelope.v1 import envelope_pb2
from ehr_client import consent as consent_sdk
from ehr_client.identity import IdentityClient, Session
from ehr_client.keys import UserKeys
from ehr_client.records import IdentityKeyDirectory, Recipient, RecordsClient
from eth_account import Account

from services.consent.main import ConsentRuntime, ConsentSettings
from services.identity.main import IdentitySettings, build
from services.platform.app.loopback import serve_in_thread
from services.platform.bus.embedded import EmbeddedEventBus
from services.platform.bus.kafka import KafkaEventBus
from services.platform.bus.port import EventBus
from services.platform.chain.geth import GethChain
from services.platform.chain.inprocess import InProcessChain
from services.platform.events import envelope as codec
from services.record_store.main import RecordStoreRuntime, RecordStoreSettings

ISSUER = "ehr-identity"


@dataclass
class User:
    account_id: str
    role: str
    keys: UserKeys
    session: Session
    records: RecordsClient

    @property
    def recipient(self) -> Recipient:
        return Recipient(self.account_id, self.keys.public().encryption_key)


@dataclass
class Deployment:
    backend: str
    identity: IdentityClient
    admin: UserKeys
    admin_session: Session
    consent_url: str
    records_url: str
    records_runtime: RecordStoreRuntime
    consent_runtime: ConsentRuntime
    open_bus: Callable[[], EventBus]
    users: list[User] = field(default_factory=list)

    def user(self, role: str, *, verified: bool = False) -> User:
        keys = UserKeys.generate()
        account = self.identity.register(keys, name=f"{role} {uuid.uuid4().hex[:6]}", role=role)
        account_id = str(account["account_id"])
        if verified:
            self.identity.verify_provider(
                self.admin_session.token("identity"), account_id, "0x" + "ab" * 32
            )
        session = self.identity.login(keys)
        client = RecordsClient(
            self.records_url,
            token=session.token("records"),
            keys=keys,
            account_id=account_id,
            directory=IdentityKeyDirectory(self.identity, session.token("identity")),
        )
        user = User(account_id, role, keys, session, client)
        self.users.append(user)
        self.wait_known(account_id)
        return user

    def wait_known(self, account_id: str) -> None:
        """Polls until the record store and consent consumed the account's event."""
        deadline = time.monotonic() + 60
        while (
            self.records_runtime.repository.account(account_id) is None
            or self.consent_runtime.repository.account(account_id) is None
        ):
            assert time.monotonic() < deadline, "account event not consumed"
            time.sleep(0.05)

    def events(
        self,
        topics: list[str],
        subject: str,
        until: Callable[[list[envelope_pb2.Envelope]], bool],
        timeout_s: float = 60.0,
    ) -> list[envelope_pb2.Envelope]:
        """The decoded events about ``subject`` on ``topics``, read off the bus (a fresh
        consumer group from the start) until ``until(seen)`` or the deadline."""

        async def read() -> list[envelope_pb2.Envelope]:
            bus = self.open_bus()
            await bus.start()
            seen: list[envelope_pb2.Envelope] = []
            try:
                consumer = bus.consumer(f"test-records-{uuid.uuid4().hex[:8]}", topics)
                await consumer.start()
                deadline = time.monotonic() + timeout_s
                try:
                    while time.monotonic() < deadline and not until(seen):
                        for record in await consumer.fetch(timeout_s=0.5):
                            envelope = codec.decode(record.value)
                            if envelope.subject == subject:
                                seen.append(envelope)
                finally:
                    await consumer.close()
            finally:
                await bus.close()
            return seen

        return asyncio.run(read())

    def _chain_time(self) -> int:
        chain = self.consent_runtime.chain
        if isinstance(chain, InProcessChain):
            block = chain._run(lambda w3: w3.eth.get_block("latest"))
            return int(max(time.time(), float(block["timestamp"]) + 1))
        return int(time.time())

    def _consent(self, patient: User, path: str, message: consent_sdk.ConsentMessage) -> Any:
        registry = self.consent_runtime.registry
        encoded = consent_sdk.signable(
            message, chain_id=registry.chain_id, verifying_contract=registry.address
        )
        signature = Account.sign_message(encoded, private_key=patient.keys.account.key).signature
        fields = dict(message.typed_message())
        if "expiresAt" in fields:
            fields["expires_at"] = fields.pop("expiresAt")
        response = httpx.post(
            f"{self.consent_url}/consent/{path}",
            json={"message": fields, "signature": "0x" + bytes(signature).hex()},
            headers={"Authorization": f"Bearer {patient.session.token('consent')}"},
            timeout=120,
        )
        assert response.status_code in (200, 201), response.text
        return response.json()

    def grant(self, patient: User, grantee: User, categories: int, purpose: int = 1) -> Any:
        now = self._chain_time()
        message = consent_sdk.GrantMessage(
            patient=patient.keys.address,
            grantee=grantee.keys.address,
            categories=categories,
            purpose=purpose,
            expires_at=now + 3600,
            nonce=self.consent_runtime.registry.next_nonce(patient.keys.address),
            deadline=now + 3600,
        )
        return self._consent(patient, "grants", message)

    def revoke(self, patient: User, grantee: User, categories: int, purpose: int = 1) -> Any:
        now = self._chain_time()
        message = consent_sdk.RevokeMessage(
            patient=patient.keys.address,
            grantee=grantee.keys.address,
            categories=categories,
            purpose=purpose,
            nonce=self.consent_runtime.registry.next_nonce(patient.keys.address),
            deadline=now + 3600,
        )
        return self._consent(patient, "revocations", message)


def register_service_account(records_url: str, identity_url: str, admin_token: str) -> str:
    """What an administrator does once: submits the record store's signed registration
    (role service) to identity. Returns the service account's id."""
    registration = httpx.get(f"{records_url}/records/service-registration", timeout=30)
    assert registration.status_code == 200, registration.text
    created = httpx.post(
        f"{identity_url}/accounts",
        json=registration.json(),
        headers={"Authorization": f"Bearer {admin_token}"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    assert created.json()["role"] == "service"
    return str(created.json()["account_id"])


def _database(stack: Stack, prefix: str) -> str:
    server = sa.make_url(stack.postgres.dsn().replace("postgresql://", "postgresql+psycopg://", 1))
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(
    scope="module",
    params=[
        "embedded",
        pytest.param("real", marks=[pytest.mark.kafka, pytest.mark.geth, pytest.mark.postgres]),
    ],
)
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    base: Path = tmp_path_factory.mktemp("records")
    admin = UserKeys.generate()
    identity_options: dict[str, Any] = {
        "data_dir": base / "identity",
        "bootstrap_admin_address": admin.address,
    }
    consent_extra: dict[str, Any] = {}
    records_extra: dict[str, Any] = {}
    shared_bus = base / "consent" / "bus"
    if request.param == "real":
        stack: Stack = request.getfixturevalue("test_stack")
        for name in ("kafka_stack", "geth_stack", "postgres_stack"):
            request.getfixturevalue(name)
        geth = stack.geth
        registrar, relay = Account.create(), Account.create()
        with GethChain(list(geth.rpc_urls), geth.chain_id, geth.faucet_private_key()) as faucet:
            faucet.fund(registrar.address, 10**20)
            faucet.fund(relay.address, 10**20)
        key_file = base / "registrar.key"
        key_file.write_text(registrar.key.hex())
        identity_options.update(
            database_url=_database(stack, "identity"),
            kafka_bootstrap_servers=stack.kafka.bootstrap_servers,
            chain_rpc_urls=list(geth.rpc_urls),
            chain_id=geth.chain_id,
            chain_key_file=key_file,
        )
        group = uuid.uuid4().hex[:8]
        chain_settings = {"chain_rpc_urls": list(geth.rpc_urls), "chain_id": geth.chain_id}
        consent_extra = {
            "database_url": _database(stack, "consent"),
            "kafka_bootstrap_servers": stack.kafka.bootstrap_servers,
            "chain_private_key": relay.key.hex(),
            "identity_consumer_group": f"consent-identity-{group}",
            **chain_settings,
        }
        records_extra = {
            "database_url": _database(stack, "records"),
            "kafka_bootstrap_servers": stack.kafka.bootstrap_servers,
            "identity_consumer_group": f"records-identity-{group}",
            **chain_settings,
        }
        identity = build(IdentitySettings(**identity_options))
    else:
        identity = build(
            IdentitySettings(**identity_options),
            bus=EmbeddedEventBus(shared_bus),
        )
    with ExitStack() as stack_ctx:
        identity_url = stack_ctx.enter_context(serve_in_thread(identity.app))
        identity_client = stack_ctx.enter_context(IdentityClient(identity_url))
        identity_client.register(admin, name="Admin", role="admin")
        admin_session = identity_client.login(admin)
        jwks = identity_client.jwks()
        consent_runtime = ConsentRuntime(
            ConsentSettings(
                jwt={
                    "issuer": ISSUER,
                    "audience": "consent",
                    "jwks": jwks,
                },
                data_dir=base / "consent",
                **consent_extra,
            )
        )
        stack_ctx.callback(consent_runtime.close)
        consent_url = stack_ctx.enter_context(serve_in_thread(consent_runtime.app))
        records_runtime = RecordStoreRuntime(
            RecordStoreSettings(
                jwt={"issuer": ISSUER, "audience": "records", "jwks": jwks},
                data_dir=base / "records",
                provider_registry_address=identity.registry.contract.address,
                consent_url=consent_url,
                identity_url=identity_url,
                **records_extra,
            ),
            chain=identity.chain if request.param == "embedded" else None,
            bus=EmbeddedEventBus(shared_bus) if request.param == "embedded" else None,
        )
        stack_ctx.callback(records_runtime.close)
        records_url = stack_ctx.enter_context(serve_in_thread(records_runtime.app))
        register_service_account(records_url, identity_url, admin_session.token("identity"))
        deployment = Deployment(
            request.param,
            identity_client,
            admin,
            admin_session,
            consent_url,
            records_url,
            records_runtime,
            consent_runtime,
            open_bus=(
                (lambda: EmbeddedEventBus(shared_bus))
                if request.param == "embedded"
                else (lambda: KafkaEventBus(records_extra["kafka_bootstrap_servers"]))
            ),
        )
        yield deployment
        for user in deployment.users:
            user.records.close()
    identity.close()
