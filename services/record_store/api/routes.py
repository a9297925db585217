"""The record store HTTP API (thin: authentication, body decoding, then a use case).

Who may call what (the use cases enforce role and ownership):

- upload and amend, and the key holders of a new version: a verified provider;
- read (ciphertext + own wrapped key): the patient (own records), a provider with active
  consent or break-glass; auditors never;
- history and listing (metadata only): the patient, auditors, a provider (author/consent);
- wrapping for a grantee, dropping a grantee's keys, rotation, shredding: the patient;
- break-glass: a verified provider; the escrow public key: any authenticated caller.
"""

from __future__ import annotations

import base64
from typing import Annotated

from ehr_protocol.vocabulary import ALL_CATEGORIES
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from services.platform.app.auth import AuthenticatedPrincipal, Principal, require_role
from services.record_store.api.errors import documented
from services.record_store.api.schemas import (
    ACCOUNT_ID_PATTERN,
    MAX_VERSION,
    RECORD_ID_PATTERN,
    BreakGlassIn,
    BreakGlassView,
    EscrowKeyView,
    GranteeView,
    HistoryView,
    KeyHoldersView,
    KeyHolderView,
    KeysDeletedView,
    KeysIn,
    KeysStoredView,
    ReadView,
    RecordView,
    RotationIn,
    RotationView,
    ServiceRegistrationView,
    ShreddedView,
    VersionIn,
    VersionView,
    decode_b64,
    record_view,
    version_view,
)
from services.record_store.domain import errors
from services.record_store.domain.errors import InvalidUpload
from services.record_store.domain.events import Actor
from services.record_store.domain.model import (
    ESCROW_HOLDER,
    Category,
    Provenance,
    Role,
    VersionUpload,
    WrappedKey,
)
from services.record_store.domain.service import RecordService

PREFIX = "/records"
router = APIRouter(prefix=PREFIX, tags=["records"])

Provider = Annotated[Principal, Depends(require_role(Role.PROVIDER))]
Patient = Annotated[Principal, Depends(require_role(Role.PATIENT))]
Reader = Annotated[
    Principal, Depends(require_role(Role.PATIENT, Role.PROVIDER, Role.AUDITOR, Role.ADMIN))
]


def record_service(request: Request) -> RecordService:
    service: RecordService = request.app.state.record_service
    return service


Service = Annotated[RecordService, Depends(record_service)]
RecordPath = Annotated[str, Path(pattern=RECORD_ID_PATTERN, description="a record id")]
VersionPath = Annotated[int, Path(ge=1, le=MAX_VERSION, description="a version number")]
HolderPath = Annotated[str, Path(pattern=ACCOUNT_ID_PATTERN, description="the key holder's id")]
PatientQuery = Annotated[str, Query(pattern=ACCOUNT_ID_PATTERN, description="the patient's id")]

# What the use cases raise, by route (the shared errors are added by the app factory).
_PROVIDER = (
    (errors.NotAllowed, "role_not_allowed"),
    errors.ProviderNotVerified,
    errors.ProviderVerificationPending,
    errors.DependencyUnavailable,
)
_UPLOAD = (
    *_PROVIDER,
    errors.InvalidUpload,
    (errors.InvalidUpload, "invalid_version"),
    (errors.InvalidUpload, "invalid_base64"),
    (errors.InvalidUpload, "malformed_ciphertext"),
    (errors.InvalidUpload, "ciphertext_hash_mismatch"),
    (errors.InvalidUpload, "unsupported_resource_type"),
    (errors.InvalidUpload, "invalid_size"),
    (errors.InvalidUpload, "duplicate_holder"),
    (errors.InvalidUpload, "patient_key_missing"),
    (errors.InvalidUpload, "escrow_key_missing"),
    (errors.InvalidUpload, "malformed_wrapped_key"),
    (errors.InvalidUpload, "wrong_wrapped_key"),
    (errors.InvalidUpload, "bad_provenance"),
    (errors.InvalidUpload, "bad_provenance_signature"),
    (errors.UnknownAccount, "unknown_patient"),
    (errors.UnknownAccount, "unknown_holder"),
    errors.PayloadTooLarge,
    errors.RecordExists,
)
_AMEND = (
    *_UPLOAD,
    (errors.RecordExists, "version_exists"),
    (errors.InvalidUpload, "scope_changed"),
    (errors.NotAllowed, "no_consent"),
    errors.RecordNotFound,
    errors.RecordShredded,
)
_OWNER = (
    (errors.NotAllowed, "role_not_allowed"),
    (errors.NotAllowed, "not_own_record"),
    errors.RecordNotFound,
    errors.RecordShredded,
)


def _actor(principal: Principal, request: Request) -> Actor:
    return Actor(
        account_id=principal.account_id,
        role=principal.role,
        token_id=principal.token_id or "",
        correlation_id=getattr(request.state, "request_id", "") or "",
    )


def _upload(body: VersionIn) -> VersionUpload:
    p = body.provenance
    return VersionUpload(
        record_id=body.record_id,
        version=body.version,
        patient_id=body.patient_id,
        category=body.category,
        resource_type=body.resource_type,
        content_sha256=bytes.fromhex(body.content_sha256),
        ciphertext=decode_b64(body.ciphertext, "ciphertext"),
        ciphertext_sha256=bytes.fromhex(body.ciphertext_sha256),
        plaintext_size=body.plaintext_size,
        wrapped_keys=tuple(k.domain() for k in body.wrapped_keys),
        provenance=Provenance(
            p.author_id, p.author_address, p.signed_at, bytes.fromhex(p.signature[2:])
        ),
    )


@router.get("/service-registration", response_model=ServiceRegistrationView)
async def service_registration(request: Request) -> ServiceRegistrationView:
    """The service account's signed registration (public data only), for an
    administrator to submit to identity's ``POST /accounts`` once."""
    return ServiceRegistrationView.model_validate(request.app.state.service_registration())


@router.get("/escrow-key", response_model=EscrowKeyView)
async def escrow_key(service: Service, principal: AuthenticatedPrincipal) -> EscrowKeyView:
    """The X25519 public key every data key is also wrapped for (break-glass escrow)."""
    return EscrowKeyView(holder_id=ESCROW_HOLDER, encryption_key=service.escrow.public_key_hex)


@router.get(
    "/key-holders",
    response_model=KeyHoldersView,
    responses=documented(*_PROVIDER, (errors.UnknownAccount, "unknown_patient")),
)
async def key_holders(
    service: Service,
    request: Request,
    principal: Provider,
    patient_id: PatientQuery,
    category: Annotated[Category, Query()],
) -> KeyHoldersView:
    """Who a new version's data key is wrapped for: the patient, the escrow key and every
    grantee consent authorises for ``category`` now (verified provider). Encryption keys
    are given by their SHA-256: the client takes the keys from identity and checks them."""
    patient, grantees = await run_in_threadpool(
        service.key_holders, _actor(principal, request), patient_id, category
    )
    return KeyHoldersView(
        patient=KeyHolderView(
            account_id=patient.account_id,
            encryption_key_sha256=patient.encryption_key_sha256.hex(),
        ),
        escrow=EscrowKeyView(holder_id=ESCROW_HOLDER, encryption_key=service.escrow.public_key_hex),
        grantees=[
            GranteeView(
                account_id=g.account_id,
                encryption_key_sha256=g.encryption_key_sha256.hex(),
                grant_ids=list(g.grant_ids),
                purposes=list(g.purposes),
            )
            for g in grantees
        ],
    )


@router.post("", status_code=201, response_model=VersionView, responses=documented(*_UPLOAD))
async def create(
    body: VersionIn, request: Request, service: Service, principal: Provider
) -> VersionView:
    """Upload a new record (version 1): ciphertext, wrapped keys, signed provenance."""
    if body.version != 1:
        raise InvalidUpload("a new record starts at version 1", code="invalid_version")
    stored = await run_in_threadpool(service.upload, _actor(principal, request), _upload(body))
    return version_view(stored)


@router.post(
    "/{record_id}/versions",
    status_code=201,
    response_model=VersionView,
    responses=documented(*_AMEND),
)
async def amend(
    record_id: RecordPath,
    body: VersionIn,
    request: Request,
    service: Service,
    principal: Provider,
) -> VersionView:
    """Upload the next version of a record (an amendment)."""
    if body.record_id != record_id or body.version < 2:
        raise InvalidUpload(
            "an amendment names this record and a version above 1", code="invalid_version"
        )
    stored = await run_in_threadpool(service.upload, _actor(principal, request), _upload(body))
    return version_view(stored)


@router.get(
    "",
    response_model=list[RecordView],
    responses=documented((errors.NotAllowed, "not_own_record")),
)
async def list_records(
    service: Service,
    principal: Reader,
    request: Request,
    patient_id: PatientQuery,
) -> list[RecordView]:
    """A patient's records (metadata only)."""
    found = await run_in_threadpool(service.records_of, _actor(principal, request), patient_id)
    return [record_view(r) for r in found]


@router.get(
    "/{record_id}",
    response_model=ReadView,
    responses=documented(
        *_PROVIDER,
        (errors.AccessDenied, "no_grant"),
        (errors.AccessDenied, "grant_revoked"),
        (errors.AccessDenied, "grant_expired"),
        (errors.AccessDenied, "no_break_glass"),
        (errors.AccessDenied, "not_own_record"),
        errors.RecordNotFound,
        errors.RecordShredded,
        errors.KeyNotAvailable,
    ),
)
async def read(
    record_id: RecordPath,
    request: Request,
    service: Service,
    principal: Reader,
    purpose: Annotated[
        int,
        Query(
            ge=1,
            le=6,
            description="purpose of use: 1 treatment, 2 payment, 3 operations, 4 research, "
            "5 emergency (break-glass), 6 the patient's own request",
        ),
    ],
    version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None,
) -> ReadView:
    """Ciphertext and the caller's own wrapped key, if the caller may read now.

    A refused read is recorded as a denied read and answered 403 with its reason as the
    code: ``no_grant``, ``grant_revoked``, ``grant_expired`` (consent's answer),
    ``no_break_glass``, ``provider_not_verified``, ``not_own_record``,
    ``role_not_allowed``."""
    result = await run_in_threadpool(
        service.read, _actor(principal, request), record_id, version, purpose
    )
    return ReadView(
        record=record_view(result.record),
        version=version_view(result.version),
        ciphertext=base64.b64encode(result.ciphertext).decode(),
        wrapped_key=base64.b64encode(result.wrapped_key).decode(),
        basis=result.basis.name.lower(),
    )


@router.get(
    "/{record_id}/versions",
    response_model=HistoryView,
    responses=documented(*_PROVIDER, (errors.NotAllowed, "not_own_record"), errors.RecordNotFound),
)
async def history(
    record_id: RecordPath, request: Request, service: Service, principal: Reader
) -> HistoryView:
    """Every version's metadata and provenance (never ciphertext or keys)."""
    record, versions = await run_in_threadpool(
        service.history, _actor(principal, request), record_id
    )
    return HistoryView(record=record_view(record), versions=[version_view(v) for v in versions])


@router.post(
    "/keys",
    status_code=201,
    response_model=KeysStoredView,
    responses=documented(
        *_OWNER,
        (errors.InvalidUpload, "invalid_base64"),
        (errors.InvalidUpload, "reserved_holder"),
        (errors.InvalidUpload, "malformed_wrapped_key"),
        (errors.InvalidUpload, "too_many_keys"),
        (errors.UnknownAccount, "unknown_holder"),
    ),
)
async def add_keys(
    body: KeysIn, request: Request, service: Service, principal: Patient
) -> KeysStoredView:
    """The patient wraps data keys for a grantee (after a grant)."""
    entries = [
        (k.record_id, k.version, WrappedKey(k.holder_id, decode_b64(k.wrapped_key, "wrapped_key")))
        for k in body.keys
    ]
    count = await run_in_threadpool(service.wrap_for, _actor(principal, request), entries)
    return KeysStoredView(stored=count)


@router.delete(
    "/keys/{holder_id}",
    response_model=KeysDeletedView,
    responses=documented(
        (errors.NotAllowed, "role_not_allowed"), (errors.InvalidUpload, "reserved_holder")
    ),
)
async def drop_keys(
    holder_id: HolderPath,
    request: Request,
    service: Service,
    principal: Patient,
    categories: Annotated[
        int, Query(ge=1, le=ALL_CATEGORIES, description="ConsentRegistry category mask")
    ] = ALL_CATEGORIES,
) -> KeysDeletedView:
    """The patient removes every key wrapped for ``holder_id`` (after a revocation)."""
    count = await run_in_threadpool(
        service.drop_keys, _actor(principal, request), holder_id, categories
    )
    return KeysDeletedView(deleted=count)


@router.post(
    "/{record_id}/versions/{version}/rotation",
    response_model=RotationView,
    responses=documented(
        *_OWNER,
        (errors.InvalidUpload, "invalid_base64"),
        (errors.InvalidUpload, "ciphertext_hash_mismatch"),
        (errors.InvalidUpload, "duplicate_holder"),
        (errors.InvalidUpload, "patient_key_missing"),
        (errors.InvalidUpload, "escrow_key_missing"),
        (errors.InvalidUpload, "malformed_wrapped_key"),
        (errors.InvalidUpload, "wrong_wrapped_key"),
        (errors.UnknownAccount, "unknown_holder"),
        errors.PayloadTooLarge,
    ),
)
async def rotate(
    record_id: RecordPath,
    version: VersionPath,
    body: RotationIn,
    request: Request,
    service: Service,
    principal: Patient,
) -> RotationView:
    """The patient re-encrypts a version under a new data key."""
    generation = await run_in_threadpool(
        service.rotate,
        _actor(principal, request),
        record_id,
        version,
        decode_b64(body.ciphertext, "ciphertext"),
        bytes.fromhex(body.ciphertext_sha256),
        [k.domain() for k in body.wrapped_keys],
    )
    return RotationView(key_generation=generation)


@router.delete("/{record_id}", response_model=ShreddedView, responses=documented(*_OWNER))
async def shred(
    record_id: RecordPath, request: Request, service: Service, principal: Patient
) -> ShreddedView:
    """Crypto-shredding: ciphertext and every wrapped key destroyed; hashes remain."""
    await run_in_threadpool(service.shred, _actor(principal, request), record_id)
    return ShreddedView(record_id=record_id, shredded=True)


@router.post(
    "/break-glass",
    status_code=201,
    response_model=BreakGlassView,
    responses=documented(
        *_PROVIDER,
        (errors.InvalidUpload, "invalid_justification"),
        (errors.InvalidUpload, "wrong_encryption_key"),
        (errors.UnknownAccount, "unknown_patient"),
    ),
)
async def break_glass(
    body: BreakGlassIn, request: Request, service: Service, principal: Provider
) -> BreakGlassView:
    """Emergency access for a verified provider, with a written justification."""
    grant = await run_in_threadpool(
        service.break_glass,
        _actor(principal, request),
        body.patient_id,
        body.justification,
        body.categories,
        body.encryption_key,
    )
    return BreakGlassView(
        break_glass_id=grant.break_glass_id,
        patient_id=grant.patient_id,
        categories=list(grant.categories),
        expires_at=grant.expires_at,
        keys_released=grant.keys_released,
    )
