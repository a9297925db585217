"""Use cases: relay grants and revocations, answer checks, list grants, expire, reconcile.

How a revocation becomes effective for every read that starts after it returned:
``revoke`` relays the message, waits for the receipt (status 1), then, in ONE database
transaction, updates the projection row and appends the ``revoked`` event to the outbox;
only after that commit does it return. ``check`` reads the projection in a fresh
transaction, so every check that starts after the revoke returned sees the revocation.
Grants and revocations relayed by anyone else reach the projection through
:meth:`ConsentService.reconcile`, which reads the registry's logs; the relay path records
the log it applied, so the reconciler never applies a change twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Literal

from services.consent.domain.errors import (
    BadSignature,
    ChangeQuarantined,
    ConsentError,
    ExpiryTooFar,
    InvalidMessage,
    MessageExpired,
    NonceMismatch,
    NotOwnConsent,
    RejectedByChain,
    UnknownAccount,
    UnrepresentableChange,
)
from services.consent.domain.events import (
    SERVICE_ACTOR,
    Actor,
    ConsentExpired,
    ConsentGranted,
    ConsentRejected,
    ConsentRevoked,
    DomainEvent,
)
from services.consent.domain.model import (
    MAX_GRANT_HORIZON_SECONDS,
    NONCE_MAX,
    UNIX_TIME_MAX,
    ZERO_ADDRESS,
    Account,
    ChainPosition,
    CheckReason,
    ConsentMessage,
    Grant,
    GrantMessage,
    RevokeMessage,
    Role,
    Signed,
    change_problem,
    grant_id_of,
)
from services.consent.domain.ports import (
    ChainChange,
    Clock,
    ConsentRegistryClient,
    ConsentRepository,
    QuarantinedLog,
    SignatureVerifier,
    UnreadableLog,
)

CURSOR_STATE = "reconciled_through_block"


def out_of_range(message: ConsentMessage) -> str | None:
    """The first number of ``message`` outside what the registry, the database and the
    events all hold (the API's schema refuses the same; this guards every other caller)."""
    bounds: list[tuple[str, int, int, int]] = [
        ("nonce", message.nonce, 0, NONCE_MAX),
        ("deadline", message.deadline, 0, UNIX_TIME_MAX),
    ]
    if isinstance(message, GrantMessage):
        bounds.append(("expires_at", message.expires_at, 0, UNIX_TIME_MAX))
    for name, value, low, high in bounds:
        if not low <= value <= high:
            return f"{name} {value} is outside {low}..{high}"
    return None


class ConsentService:
    """The consent use cases over the repository, the registry and a clock."""

    def __init__(
        self,
        repository: ConsentRepository,
        registry: ConsentRegistryClient,
        verifier: SignatureVerifier,
        clock: Clock,
        on_quarantine: Callable[[QuarantinedLog], None] | None = None,
    ) -> None:
        """``on_quarantine`` is told of each log newly quarantined (metrics, logs)."""
        self.repository = repository
        self.registry = registry
        self.verifier = verifier
        self.clock = clock
        self.on_quarantine = on_quarantine or (lambda log: None)

    # -- who is who -------------------------------------------------------------------

    def account_of(self, account_id: str) -> Account:
        account = self.repository.account(account_id)
        if account is None:
            raise UnknownAccount(f"account {account_id!r} is not registered")
        return account

    def resolve(self, reference: str) -> Account:
        """An account by id or by ``0x`` address."""
        if reference.lower().startswith("0x") and len(reference) == 42:
            account = self.repository.account_by_address(reference)
            if account is None:
                raise UnknownAccount(f"address {reference} is not registered")
            return account
        return self.account_of(reference)

    # -- commands ---------------------------------------------------------------------

    def grant(self, signed: Signed, actor: Actor) -> Grant:
        """Relay a patient-signed grant; returns the projection row once it is stored."""
        message = signed.message
        assert isinstance(message, GrantMessage)
        _check_range(message)
        patient, grantee = self._parties(message.patient, message.grantee, actor)
        refusal = _Refusal(self, signed, "grant", actor, patient, grantee)
        now = self.clock()
        if message.expires_at <= now:
            raise refusal(
                "ConsentRegistry__InvalidExpiry",
                MessageExpired("the grant's expiry time has already passed"),
            )
        if message.expires_at > now + MAX_GRANT_HORIZON_SECONDS:
            raise refusal(
                "ConsentRegistry__ExpiryTooFar",
                ExpiryTooFar(
                    f"the grant's expiry is more than {MAX_GRANT_HORIZON_SECONDS} s "
                    "(ten years) from now"
                ),
            )
        digest = self._precheck(refusal)
        change = self._relay(refusal)
        return self._apply(change, digest, actor, patient.account_id, grantee.account_id)

    def revoke(self, signed: Signed, actor: Actor) -> Grant:
        """Relay a patient-signed revocation; returns once the projection shows it."""
        message = signed.message
        assert isinstance(message, RevokeMessage)
        _check_range(message)
        patient, grantee = self._parties(message.patient, message.grantee, actor)
        refusal = _Refusal(self, signed, "revoke", actor, patient, grantee)
        digest = self._precheck(refusal)
        change = self._relay(refusal)
        return self._apply(change, digest, actor, patient.account_id, grantee.account_id)

    def _parties(
        self, patient_address: str, grantee_address: str, actor: Actor
    ) -> tuple[Account, Account]:
        if actor.role != Role.PATIENT:
            raise NotOwnConsent("only the patient may sign grants and revocations")
        patient = self.account_of(actor.account_id)
        if patient.address.lower() != patient_address.lower():
            raise NotOwnConsent("the message names another patient than the caller")
        if grantee_address.lower() == ZERO_ADDRESS:
            raise InvalidMessage("the grantee is the zero address")
        grantee = self.repository.account_by_address(grantee_address)
        if grantee is None:
            raise UnknownAccount(f"grantee {grantee_address} is not registered")
        if grantee.address.lower() == patient.address.lower():
            raise InvalidMessage("a patient does not grant access to themselves")
        return patient, grantee

    def _precheck(self, refusal: _Refusal) -> bytes:
        """The checks the registry makes, done first so a refusal costs no transaction.

        Each refusal here is announced (``ConsentRejected``) with the registry's error
        name for the same rule, like a refusal by the registry itself.
        """
        signed = refusal.signed
        message = signed.message
        chain_id, contract = self.registry.chain_id, self.registry.address
        if message.deadline < self.clock():
            raise refusal(
                "ConsentRegistry__SignatureExpired",
                MessageExpired("the signed message's deadline has passed"),
            )
        expected = self.registry.next_nonce(message.patient)
        if message.nonce != expected:
            raise refusal(
                "ConsentRegistry__InvalidNonce",
                NonceMismatch(
                    f"nonce {message.nonce} is not the patient's next nonce ({expected})"
                ),
            )
        signer = self.verifier.signer(signed, chain_id, contract)
        if signer is None:
            raise refusal(
                "ConsentRegistry__MalformedSignature", BadSignature("the signature is malformed")
            )
        if signer.lower() != message.patient.lower():
            raise refusal(
                "ConsentRegistry__WrongSigner",
                BadSignature("the signature was not made by the patient for this message"),
            )
        return self.verifier.digest(signed, chain_id, contract)

    def _relay(self, refusal: _Refusal) -> ChainChange:
        try:
            return self.registry.relay(refusal.signed)
        except RejectedByChain as refused:
            raise refusal(refused.error_name or "unknown", refused, by="registry") from None

    def _apply(
        self, change: ChainChange, digest: bytes, actor: Actor, patient_id: str, grantee_id: str
    ) -> Grant:
        """Projects a change this service relayed. The chain has accepted it, so a change
        the projection cannot hold is quarantined (never a 500, never a wedged sync)."""
        now = self.clock()

        def project(current: Grant | None) -> tuple[Grant, list[DomainEvent]]:
            return project_change(current, change, digest, actor, patient_id, grantee_id, now)

        problem = _problem_of(change)
        if problem is None:
            try:
                self.repository.apply(
                    change.patient, change.grantee, change.purpose, change.position, project
                )
            except UnrepresentableChange as unrepresentable:
                problem = str(unrepresentable)
        if problem is not None:
            self._quarantine(change.position, change.kind, problem)
            raise ChangeQuarantined(
                f"the registry recorded the {change.kind} change in transaction "
                f"{change.position.tx_hash}, but it cannot be projected: {problem}"
            )
        stored = self.repository.grant(change.patient, change.grantee, change.purpose)
        assert stored is not None
        return stored

    def _quarantine(self, position: ChainPosition, kind: str, reason: str) -> None:
        entry = QuarantinedLog(
            chain_id=position.chain_id,
            contract_address=position.contract_address,
            block_number=position.block_number,
            tx_hash=position.tx_hash,
            log_index=position.log_index,
            kind=kind,
            reason=reason[:500],
            quarantined_at=self.clock(),
        )
        if self.repository.quarantine(entry):
            self.on_quarantine(entry)

    # -- queries ----------------------------------------------------------------------

    def check(self, patient: str, grantee: str, category: int, purpose: int) -> bool:
        """Whether ``grantee`` may read ``patient``'s ``category`` for ``purpose`` now."""
        return self.authorising_grant(patient, grantee, category, purpose) is not None

    def authorising_grant(
        self, patient: str, grantee: str, category: int, purpose: int
    ) -> Grant | None:
        """The grant that lets ``grantee`` read ``patient``'s ``category`` for ``purpose``
        now, or None."""
        row = self.repository.grant(patient, grantee, purpose)
        return row if row is not None and row.authorises(category, self.clock()) else None

    def check_reason(
        self, patient: str, grantee: str, category: int, purpose: int
    ) -> tuple[CheckReason, Grant | None]:
        """Why ``grantee`` may or may not read ``patient``'s ``category`` for ``purpose``
        now, with the grant that authorises (when ``granted``)."""
        row = self.repository.grant(patient, grantee, purpose)
        if row is None:
            return "no_grant", None
        reason = row.refusal(category, self.clock())
        return reason, row if reason == "granted" else None

    def authorised_grantees(
        self, patient: str, category: int, purpose: int | None = None
    ) -> list[Grant]:
        """The patient's grants that authorise ``category`` now (for ``purpose``, or any)."""
        now = self.clock()
        return [
            g
            for g in self.repository.grants_of_patient(patient)
            if g.authorises(category, now) and (purpose is None or g.purpose == purpose)
        ]

    def active_grants_of_patient(self, patient: str) -> list[Grant]:
        now = self.clock()
        return [g for g in self.repository.grants_of_patient(patient) if g.active(now)]

    def active_grants_of_grantee(self, grantee: str) -> list[Grant]:
        now = self.clock()
        return [g for g in self.repository.grants_of_grantee(grantee) if g.active(now)]

    # -- background work --------------------------------------------------------------

    def sweep_expired(self, limit: int = 500) -> int:
        """Announce every grant whose expiry passed (one ``expired`` event each)."""
        count = 0
        for grant in self.repository.unexpired_due(self.clock(), limit):
            if self.repository.mark_expired(grant, [ConsentExpired(grant, SERVICE_ACTOR)]):
                count += 1
        return count

    def reconcile(self, max_blocks: int = 5_000) -> int:
        """Apply registry logs not yet in the projection; returns how many were new.

        A log that cannot be decoded, or whose values the projection cannot hold, is
        quarantined and the sync goes on past it: one bad log never wedges the
        projection. Failures of the chain or the database themselves propagate (the
        next run retries from the cursor)."""
        done = int(self.repository.get_state(CURSOR_STATE) or "-1")
        latest = self.registry.latest_block()
        applied = 0
        while done < latest:
            upto = min(latest, done + max_blocks)
            for change in self.registry.changes(done + 1, upto):
                if isinstance(change, UnreadableLog):
                    self._quarantine(change.position, "unreadable", change.reason)
                    continue
                problem = _problem_of(change)
                if problem is None:
                    try:
                        applied += self._apply_foreign(change)
                    except UnrepresentableChange as unrepresentable:
                        problem = str(unrepresentable)
                if problem is not None:
                    self._quarantine(change.position, change.kind, problem)
            self.repository.set_state(CURSOR_STATE, str(upto))
            done = upto
        return applied

    def _apply_foreign(self, change: ChainChange) -> int:
        patient = self.repository.account_by_address(change.patient)
        grantee = self.repository.account_by_address(change.grantee)
        patient_id = patient.account_id if patient else change.patient
        grantee_id = grantee.account_id if grantee else change.grantee
        now = self.clock()

        def project(current: Grant | None) -> tuple[Grant, list[DomainEvent]]:
            return project_change(current, change, b"", SERVICE_ACTOR, patient_id, grantee_id, now)

        new = self.repository.apply(
            change.patient, change.grantee, change.purpose, change.position, project
        )
        return 1 if new else 0


def _check_range(message: ConsentMessage) -> None:
    problem = out_of_range(message)
    if problem is not None:
        raise InvalidMessage(problem)


def _problem_of(change: ChainChange) -> str | None:
    return change_problem(
        change.kind,
        change.purpose,
        change.categories | change.remaining,
        change.nonce,
        change.expires_at,
        change.position.block_number,
    )


class _Refusal:
    """Records a refused signed message as a ``ConsentRejected`` event (table and outbox,
    one transaction) and hands back the error to raise."""

    def __init__(
        self,
        service: ConsentService,
        signed: Signed,
        kind: Literal["grant", "revoke"],
        actor: Actor,
        patient: Account,
        grantee: Account,
    ) -> None:
        self.service = service
        self.signed = signed
        self.kind: Literal["grant", "revoke"] = kind
        self.actor = actor
        self.patient = patient
        self.grantee = grantee

    def __call__(
        self,
        error_name: str,
        error: ConsentError,
        by: Literal["service", "registry"] = "service",
    ) -> ConsentError:
        message = self.signed.message
        service = self.service
        registry = service.registry
        digest = service.verifier.digest(self.signed, registry.chain_id, registry.address)
        service.repository.record_rejection(
            ConsentRejected(
                kind=self.kind,
                patient=message.patient,
                patient_id=self.patient.account_id,
                grantee=message.grantee,
                grantee_id=self.grantee.account_id,
                categories=message.categories,
                purpose=message.purpose,
                expires_at=message.expires_at if isinstance(message, GrantMessage) else 0,
                nonce=message.nonce,
                message_digest=digest,
                refused_by=by,
                error_name=error_name,
                refusal_code=error.code,
                detail=str(error),
                actor=self.actor,
                at=service.clock(),
            )
        )
        return error


def project_change(
    current: Grant | None,
    change: ChainChange,
    digest: bytes,
    actor: Actor,
    patient_id: str,
    grantee_id: str,
    now: float,
) -> tuple[Grant, list[DomainEvent]]:
    """The projection row after ``change`` and the events announcing it."""
    if change.kind == "granted":
        grant = Grant(
            grant_id=grant_id_of(change.patient, change.grantee, change.purpose, change.nonce),
            patient=change.patient,
            grantee=change.grantee,
            purpose=change.purpose,
            categories=change.categories,
            expires_at=change.expires_at,
            nonce=change.nonce,
            position=change.position,
            patient_id=patient_id,
            grantee_id=grantee_id,
            updated_at=now,
            revoked_categories=(
                (current.revoked_categories | current.categories) & ~change.categories
                if current is not None
                else 0
            ),
        )
        return grant, [ConsentGranted(grant, digest, actor)]
    if current is None:
        current = Grant(
            grant_id=grant_id_of(change.patient, change.grantee, change.purpose, change.nonce),
            patient=change.patient,
            grantee=change.grantee,
            purpose=change.purpose,
            categories=0,
            expires_at=0,
            nonce=change.nonce,
            position=change.position,
            patient_id=patient_id,
            grantee_id=grantee_id,
            updated_at=now,
        )
    revoked = current.categories & change.categories
    grant = replace(
        current,
        categories=change.remaining,
        position=change.position,
        nonce=change.nonce,
        updated_at=now,
        revoked_categories=current.revoked_categories | revoked,
    )
    events: list[DomainEvent] = []
    if revoked:
        # The scope is the grant's as it was; the receipt is the revocation's own.
        announced = replace(current, position=change.position)
        events.append(ConsentRevoked(announced, revoked, change.nonce, digest, now, actor))
    return grant, events
