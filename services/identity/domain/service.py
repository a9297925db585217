"""Use cases of the identity service."""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import uuid6

from services.identity.domain.errors import (
    AccountExists,
    AccountNotFound,
    BadSignature,
    ChallengeRejected,
    InvalidInput,
    NotAProvider,
    ProviderStateConflict,
    RoleNotPermitted,
)
from services.identity.domain.events import (
    AccountRegistered,
    Actor,
    LoginFailed,
    LoginFailure,
    LoginSucceeded,
    ProviderReinstated,
    ProviderSuspended,
    ProviderVerified,
    Recorded,
)
from services.identity.domain.messages import (
    checksum_address,
    login_text,
    parse_signature,
    registration_text,
    signer_of,
)
from services.identity.domain.model import (
    SELF_SERVICE_ROLES,
    Account,
    Challenge,
    IssuedToken,
    ProviderStatus,
    Role,
    Session,
)
from services.identity.domain.ports import IdentityStore, ProviderRegistry, TokenIssuer

_ENCRYPTION_KEY = re.compile(r"^[0-9a-f]{64}$")
_HASH32 = re.compile(r"^0x[0-9a-fA-F]{64}$")
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""Unicode categories a name may not contain: controls (a newline would forge a line of
the signed registration text), format characters (bidi overrides, zero-width), surrogates,
private-use and unassigned code points, line and paragraph separators."""


def _printable(text: str) -> bool:
    return not any(unicodedata.category(c) in _UNPRINTABLE for c in text)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller (from a verified access token)."""

    account_id: str
    role: str
    token_id: str | None = None


@dataclass(frozen=True)
class IdentityPolicy:
    login_domain: str
    login_uri: str
    chain_id: int
    audiences: tuple[str, ...]
    challenge_ttl: timedelta = timedelta(minutes=5)
    token_ttl: timedelta = timedelta(minutes=15)
    bootstrap_admin_address: str | None = None


@dataclass(frozen=True)
class LoginResult:
    account: Account
    session: Session
    tokens: dict[str, IssuedToken]


def _hash32(value: str, field: str) -> bytes:
    if not _HASH32.match(value):
        raise InvalidInput(f"{field} must be 0x + 64 hex characters", code=f"invalid_{field}")
    return bytes.fromhex(value[2:])


class IdentityService:
    def __init__(
        self,
        store: IdentityStore,
        registry: ProviderRegistry,
        issuer: TokenIssuer,
        policy: IdentityPolicy,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.registry = registry
        self.issuer = issuer
        self.policy = policy
        self.clock = clock

    # -- accounts ---------------------------------------------------------------------
    def register(
        self,
        *,
        name: str,
        role: Role,
        signing_address: str,
        encryption_key: str,
        signature: str,
        caller: Caller | None,
        correlation_id: str | None = None,
    ) -> Account:
        """Registers an account whose key signed :func:`registration_text`.

        Patients and providers register themselves. An admin, auditor or service account is
        registered only by an admin (``caller``), except the bootstrap admin address,
        which may register itself as admin.
        """
        address = checksum_address(signing_address)
        name = name.strip()
        if not 1 <= len(name) <= 200 or not _printable(name):
            raise InvalidInput("name must have 1 to 200 printable characters", code="invalid_name")
        if not _ENCRYPTION_KEY.match(encryption_key):
            raise InvalidInput(
                "encryption_key must be 64 lowercase hex characters (X25519)",
                code="invalid_encryption_key",
            )
        raw = parse_signature(signature)
        if signer_of(registration_text(name, role.value, address, encryption_key), raw) != address:
            raise BadSignature("registration is not signed by the signing address")
        if role not in SELF_SERVICE_ROLES:
            bootstrap = self.policy.bootstrap_admin_address
            is_bootstrap = (
                role is Role.ADMIN
                and bootstrap is not None
                and checksum_address(bootstrap) == address
            )
            if not is_bootstrap and (caller is None or caller.role != Role.ADMIN):
                raise RoleNotPermitted(f"only an admin may register an account with role {role}")
        if self.store.account_by_address(address) is not None:
            raise AccountExists(f"an account with address {address} exists")
        account = Account(
            account_id=str(uuid6.uuid7()),
            name=name,
            role=role,
            signing_address=address,
            encryption_key=encryption_key,
            created_at=self.clock(),
            provider_status=ProviderStatus.UNVERIFIED if role is Role.PROVIDER else None,
        )
        actor = (
            Actor(caller.account_id, Role(caller.role), caller.token_id, correlation_id)
            if caller is not None
            else Actor(account.account_id, role, None, correlation_id)
        )
        event = AccountRegistered(
            account.account_id,
            role,
            address,
            encryption_key,
            registered_by=caller.account_id if caller is not None else None,
        )
        self.store.add_account(account, [Recorded(event, actor)])
        return account

    def get_account(self, account_id: str) -> Account:
        account = self.store.account(account_id)
        if account is None:
            raise AccountNotFound(f"no account {account_id}")
        return account

    def get_account_by_address(self, address: str) -> Account:
        account = self.store.account_by_address(checksum_address(address))
        if account is None:
            raise AccountNotFound(f"no account with address {address}")
        return account

    # -- login ------------------------------------------------------------------------
    def challenge(self, signing_address: str) -> Challenge:
        account = self.get_account_by_address(signing_address)
        now = self.clock().replace(microsecond=0)
        nonce = secrets.token_hex(16)
        expires = now + self.policy.challenge_ttl
        challenge = Challenge(
            nonce=nonce,
            account_id=account.account_id,
            message=login_text(
                domain=self.policy.login_domain,
                address=account.signing_address,
                uri=self.policy.login_uri,
                chain_id=self.policy.chain_id,
                nonce=nonce,
                issued_at=now,
                expires_at=expires,
            ),
            issued_at=now,
            expires_at=expires,
        )
        self.store.add_challenge(challenge)
        return challenge

    def _fail(
        self, account: Account, reason: LoginFailure, correlation_id: str | None
    ) -> ChallengeRejected | BadSignature:
        actor = Actor(account.account_id, account.role, None, correlation_id)
        self.store.record([Recorded(LoginFailed(account.account_id, reason), actor)])
        if reason is LoginFailure.BAD_SIGNATURE:
            return BadSignature("the challenge is not signed by the account's key")
        return ChallengeRejected(f"challenge {reason.value.replace('_', ' ')}", code=reason.value)

    def login(
        self,
        *,
        nonce: str,
        signature: str,
        audiences: Sequence[str] | None = None,
        correlation_id: str | None = None,
    ) -> LoginResult:
        raw = parse_signature(signature)
        wanted = tuple(dict.fromkeys(audiences or self.policy.audiences))
        unknown = [a for a in wanted if a not in self.policy.audiences]
        if unknown:
            raise InvalidInput(
                f"unknown audience(s): {', '.join(unknown)}", code="unknown_audience"
            )
        found = self.store.challenge(nonce) if isinstance(nonce, str) and nonce else None
        if found is None:
            raise ChallengeRejected("unknown challenge", code="unknown_challenge")
        challenge, used_at = found
        account = self.store.account(challenge.account_id)
        if account is None:  # challenges are only issued to accounts
            raise ChallengeRejected("unknown challenge", code="unknown_challenge")
        now = self.clock()
        if used_at is not None:
            raise self._fail(account, LoginFailure.REPLAYED_CHALLENGE, correlation_id)
        if now >= challenge.expires_at:
            raise self._fail(account, LoginFailure.EXPIRED_CHALLENGE, correlation_id)
        try:
            signer = signer_of(challenge.message, raw)
        except BadSignature:
            signer = ""
        if signer != account.signing_address:
            raise self._fail(account, LoginFailure.BAD_SIGNATURE, correlation_id)
        session_id = str(uuid6.uuid7())
        tokens = {
            audience: self.issuer.issue(
                subject=account.account_id,
                role=account.role.value,
                audience=audience,
                session_id=session_id,
                now=now,
            )
            for audience in wanted
        }
        first = next(iter(tokens.values()))
        session = Session(
            session_id=session_id,
            account_id=account.account_id,
            token_ids=tuple(t.token_id for t in tokens.values()),
            created_at=now,
            expires_at=first.expires_at,
        )
        event = LoginSucceeded(
            account.account_id, account.role, session_id, first.token_id, first.expires_at
        )
        actor = Actor(account.account_id, account.role, first.token_id, correlation_id)
        if not self.store.complete_login(nonce, now, session, [Recorded(event, actor)]):
            raise self._fail(account, LoginFailure.REPLAYED_CHALLENGE, correlation_id)
        return LoginResult(account, session, tokens)

    # -- providers --------------------------------------------------------------------
    def _provider(self, caller: Caller, account_id: str) -> Account:
        if caller.role != Role.ADMIN:
            raise RoleNotPermitted("only an admin may change a provider's verification")
        account = self.get_account(account_id)
        if account.role is not Role.PROVIDER:
            raise NotAProvider(f"account {account_id} is not a provider")
        return account

    def _actor(self, caller: Caller, correlation_id: str | None) -> Actor:
        return Actor(caller.account_id, Role.ADMIN, caller.token_id, correlation_id)

    def verify_provider(
        self,
        caller: Caller,
        account_id: str,
        *,
        licence_hash: str,
        metadata_hash: str | None = None,
        correlation_id: str | None = None,
    ) -> Account:
        licence = _hash32(licence_hash, "licence_hash")
        if licence == bytes(32):
            raise InvalidInput("licence_hash must not be zero", code="invalid_licence_hash")
        metadata = _hash32(metadata_hash, "metadata_hash") if metadata_hash else bytes(32)
        account = self._provider(caller, account_id)
        if account.provider_status is not ProviderStatus.UNVERIFIED:
            raise ProviderStateConflict(f"provider is {account.provider_status}")
        if self.registry.status(account.signing_address) != "none":
            raise ProviderStateConflict("provider is already in the registry")
        receipt = self.registry.register(account.signing_address, licence, metadata)
        updated = account.with_provider_status(ProviderStatus.VERIFIED, licence_hash.lower())
        event = ProviderVerified(account_id, account.signing_address, licence, receipt)
        self.store.update_account(updated, [Recorded(event, self._actor(caller, correlation_id))])
        return updated

    def suspend_provider(
        self,
        caller: Caller,
        account_id: str,
        *,
        reason_code: str,
        correlation_id: str | None = None,
    ) -> Account:
        if not _REASON.match(reason_code):
            raise InvalidInput("reason_code must be snake_case", code="invalid_reason_code")
        account = self._provider(caller, account_id)
        if account.provider_status is not ProviderStatus.VERIFIED:
            raise ProviderStateConflict(f"provider is {account.provider_status}")
        receipt = self.registry.suspend(account.signing_address)
        updated = account.with_provider_status(ProviderStatus.SUSPENDED)
        event = ProviderSuspended(account_id, account.signing_address, reason_code, receipt)
        self.store.update_account(updated, [Recorded(event, self._actor(caller, correlation_id))])
        return updated

    def reinstate_provider(
        self, caller: Caller, account_id: str, *, correlation_id: str | None = None
    ) -> Account:
        account = self._provider(caller, account_id)
        if account.provider_status is not ProviderStatus.SUSPENDED:
            raise ProviderStateConflict(f"provider is {account.provider_status}")
        receipt = self.registry.reinstate(account.signing_address)
        updated = account.with_provider_status(ProviderStatus.VERIFIED)
        licence = bytes.fromhex(account.licence_hash[2:]) if account.licence_hash else b""
        event = ProviderReinstated(account_id, account.signing_address, licence, receipt)
        self.store.update_account(updated, [Recorded(event, self._actor(caller, correlation_id))])
        return updated
