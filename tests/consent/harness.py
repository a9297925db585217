"""Test harness of the consent service: the service on the embedded default and on the
real stack, access tokens signed by a run-time ES256 key, accounts registered through
identity's ``account_registered`` events on the bus, and patient-signed messages made
with the client SDK.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from ehr.identity.v1 import identity_pb2
from ehr.vocabulary.v1 import vocabulary_pb2
from ehr_client import consent as sdk
from eth_account import Account
from eth_account.signers.local import LocalAccount
from jose import jwt

from services.consent.adapters.sql import grants
from services.consent.main import ConsentRuntime
from services.platform.bus.outbox import outbox_table
from services.platform.bus.port import BusConsumer, Record
from services.platform.chain.inprocess import InProcessChain
from services.platform.events import envelope as codec
from services.platform.events.topics import CONSENT_GRANTS, IDENTITY_ACCOUNTS

ISSUER = "ehr-identity-test"
AUDIENCE = "consent"
HOUR = 3600


def _b64url(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode()


@dataclass
class TokenKey:
    """An ES256 key made for this run; its public half is the service's JWKS."""

    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def jwks(self) -> dict[str, Any]:
        n = self.key.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "x": _b64url(n.x), "y": _b64url(n.y)}
        return {"keys": [{**jwk, "kid": self.kid, "alg": "ES256", "use": "sig"}]}

    def pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def token(self, sub: str, role: str, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "role": role,
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        return str(jwt.encode(claims, self.pem(), algorithm="ES256", headers={"kid": self.kid}))


@dataclass
class Party:
    account_id: str
    role: str
    key: LocalAccount

    @property
    def address(self) -> str:
        return str(self.key.address)


class Harness:
    """The started service, a client for its API and what tests need around it."""

    def __init__(self, name: str, runtime: ConsentRuntime, keys: TokenKey) -> None:
        self.name = name
        self.runtime = runtime
        self.keys = keys
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=runtime.app), base_url="http://consent"
        )
        self._events: BusConsumer | None = None
        self.seen: list[codec.Envelope] = []

    @property
    def registry(self) -> str:
        return self.runtime.registry.address

    @property
    def chain_id(self) -> int:
        return self.runtime.registry.chain_id

    def headers(self, party: Party | str, role: str | None = None, **claims: Any) -> dict[str, str]:
        sub = party.account_id if isinstance(party, Party) else party
        chosen = role or (party.role if isinstance(party, Party) else "service")
        return {"Authorization": f"Bearer {self.keys.token(sub, chosen, **claims)}"}

    async def register(self, role: str) -> Party:
        """Registers an account as identity does: an ``account_registered`` event."""
        party = Party(f"{role}-{uuid.uuid4().hex[:10]}", role, Account.create())
        codes = {"patient": vocabulary_pb2.ROLE_PATIENT, "provider": vocabulary_pb2.ROLE_PROVIDER}
        payload = identity_pb2.AccountRegistered(
            account_id=party.account_id, role=codes[role], signing_address=party.address
        )
        actor = codec.Actor(id="identity", role=vocabulary_pb2.ROLE_SERVICE)
        envelope = codec.new_envelope(payload, source="identity", actor=actor)
        await self.runtime.bus.publish(
            IDENTITY_ACCOUNTS.name, party.account_id, codec.encode(envelope)
        )
        deadline = time.monotonic() + 30
        while self.runtime.repository.account(party.account_id) is None:
            assert time.monotonic() < deadline, "the identity event was not consumed"
            await _pause()
        return party

    def nonce(self, patient: Party) -> int:
        return self.runtime.registry.next_nonce(patient.address)

    def chain_time(self) -> float:
        """The time the next block will carry at least (the in-process chain runs ahead)."""
        chain = self.runtime.chain
        if isinstance(chain, InProcessChain):
            block = chain._run(lambda w3: w3.eth.get_block("latest"))
            return max(time.time(), float(block["timestamp"]) + 1)
        return time.time()

    def grant_body(
        self,
        patient: Party,
        grantee: str,
        *,
        categories: int = sdk.LABS,
        purpose: int = sdk.TREATMENT,
        expires_at: int | None = None,
        nonce: int | None = None,
        deadline: int | None = None,
        signer: LocalAccount | None = None,
    ) -> dict[str, Any]:
        now = int(self.chain_time())
        message = sdk.GrantMessage(
            patient=patient.address,
            grantee=grantee,
            categories=categories,
            purpose=purpose,
            expires_at=expires_at if expires_at is not None else now + HOUR,
            nonce=self.nonce(patient) if nonce is None else nonce,
            deadline=deadline if deadline is not None else now + HOUR,
        )
        signature = self._sign(signer or patient.key, message)
        return {"message": _body(message), "signature": "0x" + signature.hex()}

    def revoke_body(
        self,
        patient: Party,
        grantee: str,
        *,
        categories: int = sdk.LABS,
        purpose: int = sdk.TREATMENT,
        nonce: int | None = None,
        deadline: int | None = None,
    ) -> dict[str, Any]:
        now = int(self.chain_time())
        message = sdk.RevokeMessage(
            patient=patient.address,
            grantee=grantee,
            categories=categories,
            purpose=purpose,
            nonce=self.nonce(patient) if nonce is None else nonce,
            deadline=deadline if deadline is not None else now + HOUR,
        )
        signature = self._sign(patient.key, message)
        return {"message": _body(message), "signature": "0x" + signature.hex()}

    def _sign(self, signer: LocalAccount, message: sdk.ConsentMessage) -> bytes:
        encoded = sdk.signable(message, chain_id=self.chain_id, verifying_contract=self.registry)
        return bytes(Account.sign_message(encoded, private_key=signer.key).signature)

    # -- what was written ---------------------------------------------------------------

    def written(self) -> tuple[int, int]:
        """(projection rows, outbox rows)."""
        with self.runtime.engine.connect() as connection:
            rows = connection.execute(sa.select(sa.func.count()).select_from(grants)).scalar()
            out = connection.execute(sa.select(sa.func.count()).select_from(outbox_table)).scalar()
        return int(rows or 0), int(out or 0)

    # -- events on the bus ----------------------------------------------------------------

    async def wait_event(self, event_type: str, grant_id: str, timeout_s: float = 30) -> Any:
        """The payload of the first ``event_type`` event about ``grant_id`` on the bus."""
        return await self.wait_matching(
            event_type, lambda p: getattr(p, "grant_id", None) == grant_id, timeout_s
        )

    async def wait_matching(
        self, event_type: str, match: Callable[[Any], bool], timeout_s: float = 30
    ) -> Any:
        """The payload of the first ``event_type`` event on the bus for which ``match`` holds."""
        if self._events is None:
            group = f"consent-test-{uuid.uuid4().hex[:8]}"
            self._events = self.runtime.bus.consumer(group, [CONSENT_GRANTS.name])
            await self._events.start()
        deadline = time.monotonic() + timeout_s
        while True:
            for envelope in self.seen:
                if envelope.type == event_type:
                    payload = codec.unpack_payload(envelope)
                    if match(payload):
                        return payload
            assert time.monotonic() < deadline, f"no matching {event_type} event"
            records: list[Record] = await self._events.fetch(timeout_s=0.5)
            self.seen.extend(codec.decode(r.value) for r in records)

    def payloads_seen(self, event_type: str, match: Callable[[Any], bool]) -> list[Any]:
        """Payloads of the ``event_type`` events read so far for which ``match`` holds."""
        found = (codec.unpack_payload(e) for e in self.seen if e.type == event_type)
        return [p for p in found if match(p)]

    async def close(self) -> None:
        if self._events is not None:
            await self._events.close()
        await self.client.aclose()


def _body(message: sdk.ConsentMessage) -> dict[str, Any]:
    fields = dict(message.typed_message())
    if "expiresAt" in fields:
        fields["expires_at"] = fields.pop("expiresAt")
    return fields


async def _pause() -> None:
    await asyncio.sleep(0.05)  # yields to the service's workers between polls
