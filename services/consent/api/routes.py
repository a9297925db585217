"""The consent HTTP API (thin: validation, role and ownership, then a use case).

Every route runs its use case in a worker thread (the chain and the database are
synchronous). Role rules: grants and revocations only by the patient who signed them;
``check`` by a service (record-store) or by the patient concerned; a patient's grants by
that patient; grants naming a grantee by that grantee; the grantees authorised for a
patient's category by a service only (the record store, to wrap keys at upload); the
quarantined registry logs by an admin only.

Each route declares the errors of its own use case (``documented``); the factory adds the
shared ones.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from services.consent.api.errors import BODY_ERRORS, documented
from services.consent.api.schemas import (
    CheckView,
    GrantView,
    NonceView,
    QuarantinedLogView,
    RegistryView,
    SignedGrantRequest,
    SignedRevokeRequest,
)
from services.consent.domain.errors import (
    BadSignature,
    ChangeQuarantined,
    ExpiryTooFar,
    InvalidMessage,
    MessageExpired,
    NonceMismatch,
    NotOwnConsent,
    RegistryUnavailable,
    RejectedByChain,
    UnknownAccount,
)
from services.consent.domain.events import Actor
from services.consent.domain.model import (
    ALL_CATEGORIES,
    MAX_PURPOSE,
    GrantMessage,
    RevokeMessage,
    Role,
    Signed,
)
from services.consent.domain.service import ConsentService
from services.platform.app.auth import Principal, require_role

PREFIX = "/consent"
router = APIRouter(prefix=PREFIX, tags=["consent"])

Patient = Annotated[Principal, Depends(require_role(Role.PATIENT))]
AnyParty = Annotated[Principal, Depends(require_role(Role.PATIENT, Role.PROVIDER, Role.SERVICE))]
Checker = Annotated[Principal, Depends(require_role(Role.SERVICE, Role.PATIENT))]
ServiceAccount = Annotated[Principal, Depends(require_role(Role.SERVICE))]
Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]

CategoryBits = Annotated[int, Query(ge=1, le=ALL_CATEGORIES, description="category bitmask")]
PurposeQuery = Annotated[int, Query(ge=1, le=MAX_PURPOSE, description="purpose-of-use id")]
AccountRef = Annotated[
    str, Query(min_length=1, max_length=200, description="account id or 0x address")
]

# What relaying a signed message can answer, besides the shared errors.
RELAY_ERRORS = documented(
    *BODY_ERRORS,
    InvalidMessage,
    MessageExpired,
    ExpiryTooFar,
    BadSignature,
    NonceMismatch,
    RejectedByChain,
    ChangeQuarantined,
    UnknownAccount,
    NotOwnConsent,
    RegistryUnavailable,
)


def consent_service(request: Request) -> ConsentService:
    service: ConsentService = request.app.state.consent_service
    return service


Service = Annotated[ConsentService, Depends(consent_service)]


def _actor(principal: Principal, request: Request) -> Actor:
    return Actor(
        account_id=principal.account_id,
        role=principal.role,
        token_id=principal.token_id or "",
        correlation_id=getattr(request.state, "request_id", "") or "",
    )


@router.get("/registry", response_model=RegistryView)
async def registry(service: Service, principal: AnyParty) -> RegistryView:
    """The EIP-712 domain of the registry that grants and revocations are signed for."""
    return RegistryView(
        chain_id=service.registry.chain_id, verifying_contract=service.registry.address
    )


@router.get(
    "/patients/{patient_id}/nonce",
    response_model=NonceView,
    responses=documented(NotOwnConsent, UnknownAccount, RegistryUnavailable),
)
async def next_nonce(patient_id: str, service: Service, principal: Patient) -> NonceView:
    """The nonce the patient's next signed message must carry (the patient only)."""
    if principal.account_id != patient_id:
        raise NotOwnConsent("a patient sees only their own nonce")
    account = await run_in_threadpool(service.account_of, patient_id)
    nonce = await run_in_threadpool(service.registry.next_nonce, account.address)
    return NonceView(patient=account.address, nonce=nonce)


@router.post("/grants", response_model=GrantView, status_code=201, responses=RELAY_ERRORS)
async def grant(
    body: SignedGrantRequest, request: Request, service: Service, principal: Patient
) -> GrantView:
    """Relay a patient-signed grant; answers once the chain accepted it and the
    projection holds it."""
    m = body.message
    signed = Signed(
        GrantMessage(
            m.patient, m.grantee, m.categories, m.purpose, m.expires_at, m.nonce, m.deadline
        ),
        bytes.fromhex(body.signature[2:]),
    )
    stored = await run_in_threadpool(service.grant, signed, _actor(principal, request))
    return GrantView.of(stored, service.clock())


@router.post("/revocations", response_model=GrantView, responses=RELAY_ERRORS)
async def revoke(
    body: SignedRevokeRequest, request: Request, service: Service, principal: Patient
) -> GrantView:
    """Relay a patient-signed revocation; once this returns, every check that starts
    afterwards sees it."""
    m = body.message
    signed = Signed(
        RevokeMessage(m.patient, m.grantee, m.categories, m.purpose, m.nonce, m.deadline),
        bytes.fromhex(body.signature[2:]),
    )
    stored = await run_in_threadpool(service.revoke, signed, _actor(principal, request))
    return GrantView.of(stored, service.clock())


@router.get(
    "/check",
    response_model=CheckView,
    responses=documented(NotOwnConsent, UnknownAccount),
)
async def check(
    service: Service,
    principal: Checker,
    patient: AccountRef,
    grantee: AccountRef,
    category: CategoryBits,
    purpose: PurposeQuery,
) -> CheckView:
    """May ``grantee`` read ``patient``'s ``category`` records for ``purpose`` now, and
    why (``reason``: granted, no_grant, revoked, expired)?

    ``patient`` and ``grantee`` are account ids or ``0x`` addresses."""
    patient_account = await run_in_threadpool(service.resolve, patient)
    if principal.role == Role.PATIENT and principal.account_id != patient_account.account_id:
        raise NotOwnConsent("a patient may check only their own grants")
    grantee_account = await run_in_threadpool(service.resolve, grantee)

    def answer() -> CheckView:
        now = service.clock()
        reason, grant = service.check_reason(
            patient_account.address, grantee_account.address, category, purpose
        )
        return CheckView(
            patient=patient_account.account_id,
            grantee=grantee_account.account_id,
            category=category,
            purpose=purpose,
            authorised=reason == "granted",
            reason=reason,
            grant_id=grant.grant_id if grant is not None else None,
            checked_at=now,
        )

    return await run_in_threadpool(answer)


@router.get(
    "/patients/{patient_id}/grants",
    response_model=list[GrantView],
    responses=documented(NotOwnConsent, UnknownAccount),
)
async def patient_grants(patient_id: str, service: Service, principal: Patient) -> list[GrantView]:
    """The patient's active grants (the patient only)."""
    if principal.account_id != patient_id:
        raise NotOwnConsent("a patient sees only their own grants")
    account = await run_in_threadpool(service.account_of, patient_id)
    found = await run_in_threadpool(service.active_grants_of_patient, account.address)
    now = service.clock()
    return [GrantView.of(g, now) for g in found]


@router.get(
    "/patients/{patient_id}/grantees",
    response_model=list[GrantView],
    responses=documented(UnknownAccount),
)
async def authorised_grantees(
    patient_id: str,
    service: Service,
    principal: ServiceAccount,
    category: CategoryBits,
    purpose: Annotated[int | None, Query(ge=1, le=MAX_PURPOSE)] = None,
) -> list[GrantView]:
    """The grants authorising ``category`` of the patient's records now (for ``purpose``,
    else any): who the record store lists as key holders at upload (role service only)."""
    account = await run_in_threadpool(service.account_of, patient_id)
    found = await run_in_threadpool(service.authorised_grantees, account.address, category, purpose)
    now = service.clock()
    return [GrantView.of(g, now) for g in found]


@router.get(
    "/grantees/{grantee_id}/grants",
    response_model=list[GrantView],
    responses=documented(NotOwnConsent, UnknownAccount),
)
async def grantee_grants(grantee_id: str, service: Service, principal: AnyParty) -> list[GrantView]:
    """Active grants naming the grantee (the grantee only)."""
    if principal.account_id != grantee_id:
        raise NotOwnConsent("only the grantee sees the grants naming it")
    account = await run_in_threadpool(service.account_of, grantee_id)
    found = await run_in_threadpool(service.active_grants_of_grantee, account.address)
    now = service.clock()
    return [GrantView.of(g, now) for g in found]


@router.get("/quarantine", response_model=list[QuarantinedLogView])
async def quarantined_logs(
    service: Service,
    principal: Admin,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many")] = 100,
) -> list[QuarantinedLogView]:
    """Registry logs the projection could not apply, in chain order (admin only): each
    was set aside so the chain sync could go on; ``/consent/readyz`` is ``degraded``
    while any is listed."""
    found = await run_in_threadpool(service.repository.quarantined, limit)
    return [QuarantinedLogView.of(log) for log in found]
