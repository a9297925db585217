"""HTTP routes of the identity service (thin: parse, check role, call the use case)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from services.identity.adapters.signing_keys import SigningKeyRing
from services.identity.api.schemas import (
    ADDRESS_PATTERN,
    UUID_PATTERN,
    AccountBody,
    ChallengeRequest,
    ChallengeResponse,
    Jwks,
    LoginRequest,
    LoginResponse,
    RegisterRequest,
    RotateResponse,
    SuspendProviderRequest,
    TokenBody,
    VerifyProviderRequest,
)
from services.identity.domain.errors import (
    AccountExists,
    AccountNotFound,
    BadSignature,
    ChallengeRejected,
    IdentityError,
    InvalidInput,
    NotAProvider,
    ProviderStateConflict,
    RegistryUnavailable,
    RoleNotPermitted,
)
from services.identity.domain.service import Caller, IdentityService
from services.platform.app.auth import AuthenticatedPrincipal, Principal, require_role
from services.platform.app.errors import (
    BadRequest,
    Conflict,
    ErrorMap,
    Forbidden,
    NotFound,
    ServiceError,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
)
from services.platform.app.openapi import ResponsesDoc, error_responses

ERROR_MAP: ErrorMap = {
    InvalidInput: ValidationFailed,
    BadSignature: Unauthorized,
    ChallengeRejected: Unauthorized,
    AccountNotFound: NotFound,
    AccountExists: Conflict,
    RoleNotPermitted: Forbidden,
    NotAProvider: Conflict,
    ProviderStateConflict: Conflict,
    RegistryUnavailable: ServiceUnavailable,
}
_ = BadRequest  # 400 for malformed JSON comes from the shared error handlers

Raised = type[IdentityError] | tuple[type[IdentityError], str] | type[ServiceError]
"""An error a route can raise: a domain error (optionally with the specific ``code`` its
raise site gives) or an HTTP error raised by the route itself."""


class _RoleNotAllowed(Forbidden):
    code = "role_not_allowed"


class _SigningKeysUnavailable(ServiceUnavailable):
    code = "signing_keys_unavailable"


class _BodyInvalid(ValidationFailed):
    code = "validation_failed"


class _TokenRefused(Unauthorized):
    code = "invalid_token"


class _TokenExpired(Unauthorized):
    code = "token_expired"


# A route that declares 401, 403, 422 or 503 itself replaces the shared entry, so it
# names the token check's and the schema's codes of those statuses too.
_SHARED_CODES: tuple[type[ServiceError], ...] = (
    _RoleNotAllowed,
    _SigningKeysUnavailable,
    _BodyInvalid,
)


def _http_error(raised: Raised) -> type[ServiceError]:
    if isinstance(raised, type) and issubclass(raised, ServiceError):
        return raised
    error, code = raised if isinstance(raised, tuple) else (raised, raised.code)
    for kind in error.__mro__:
        target = ERROR_MAP.get(kind)
        if target is not None:
            return type(error.__name__, (target,), {"code": code})
    raise KeyError(f"{error.__name__} is not in identity's error map")


def documented(*raised: Raised) -> ResponsesDoc:
    """``responses=`` of a route that can raise ``raised`` (see ``ERROR_MAP``), with the
    shared codes of the same statuses."""
    http = [_http_error(r) for r in raised]
    statuses = {int(e.status) for e in http}
    shared = [e for e in _SHARED_CODES if int(e.status) in statuses]
    return error_responses(*http, *shared)


AccountIdPath = Annotated[
    str, Path(pattern=UUID_PATTERN, description="an account id (the UUID identity issued)")
]
AddressPath = Annotated[str, Path(pattern=ADDRESS_PATTERN, description="0x + 40 ASCII hex")]
KidPath = Annotated[str, Path(pattern=UUID_PATTERN, description="a signing key's id")]


class _SigningKeyNotFound(NotFound):
    code = "signing_key_not_found"


class _SigningKeyActive(Conflict):
    code = "signing_key_active"


_PROVIDER = (
    (RoleNotPermitted, "role_not_permitted"),
    AccountNotFound,
    NotAProvider,
    ProviderStateConflict,
    RegistryUnavailable,
)


def _caller(principal: Principal) -> Caller:
    return Caller(principal.account_id, principal.role, principal.token_id)


def _request_id(request: Request) -> str | None:
    value = request.headers.get("x-request-id")
    return value if value else None


async def _optional_principal(request: Request) -> Principal | None:
    if "authorization" not in request.headers:
        return None
    verifier = request.app.state.token_verifier
    header = request.headers["authorization"]
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("bearer token expected", code="invalid_token")
    principal: Principal = await verifier.verify(token)
    return principal


AdminPrincipal = Annotated[Principal, Depends(require_role("admin"))]
OptionalPrincipal = Annotated[Principal | None, Depends(_optional_principal)]


def build_router(service: IdentityService, keys: SigningKeyRing) -> APIRouter:
    router = APIRouter()

    @router.get("/.well-known/jwks.json", tags=["tokens"], response_model=Jwks)
    def jwks() -> Jwks:
        """Public keys that verify identity's access tokens (ES256)."""
        return Jwks.model_validate(keys.jwks())

    @router.post(
        "/accounts",
        status_code=201,
        tags=["accounts"],
        response_model=AccountBody,
        responses=documented(
            (InvalidInput, "invalid_address"),
            (InvalidInput, "invalid_name"),
            (InvalidInput, "invalid_encryption_key"),
            (InvalidInput, "malformed_signature"),
            BadSignature,
            _TokenRefused,
            _TokenExpired,
            _SigningKeysUnavailable,
            RoleNotPermitted,
            _RoleNotAllowed,
            AccountExists,
        ),
    )
    def register(
        body: RegisterRequest,
        request: Request,
        principal: OptionalPrincipal,
    ) -> AccountBody:
        """Register an account. Patients and providers register themselves; an admin
        or auditor is registered by an admin's token (the first admin: the bootstrap
        address)."""
        account = service.register(
            name=body.name,
            role=body.role,
            signing_address=body.signing_address,
            encryption_key=body.encryption_key,
            signature=body.signature,
            caller=_caller(principal) if principal else None,
            correlation_id=_request_id(request),
        )
        return AccountBody.of(account)

    @router.post(
        "/auth/challenge",
        status_code=201,
        tags=["auth"],
        response_model=ChallengeResponse,
        responses=documented((InvalidInput, "invalid_address"), AccountNotFound),
    )
    def challenge(body: ChallengeRequest) -> ChallengeResponse:
        """A one-time EIP-4361 login message for the account to sign."""
        issued = service.challenge(body.signing_address)
        return ChallengeResponse(
            nonce=issued.nonce,
            message=issued.message,
            issued_at=issued.issued_at,
            expires_at=issued.expires_at,
        )

    @router.post(
        "/auth/login",
        tags=["auth"],
        response_model=LoginResponse,
        responses=documented(
            (InvalidInput, "malformed_signature"),
            (InvalidInput, "unknown_audience"),
            (ChallengeRejected, "unknown_challenge"),
            (ChallengeRejected, "expired_challenge"),
            (ChallengeRejected, "replayed_challenge"),
            BadSignature,
        ),
    )
    def login(body: LoginRequest, request: Request) -> LoginResponse:
        """Exchange a signed challenge for access tokens, one per audience."""
        result = service.login(
            nonce=body.nonce,
            signature=body.signature,
            audiences=body.audiences,
            correlation_id=_request_id(request),
        )
        return LoginResponse(
            account_id=result.account.account_id,
            role=result.account.role,
            session_id=result.session.session_id,
            tokens={
                aud: TokenBody(access_token=t.token, audience=aud, expires_at=t.expires_at)
                for aud, t in result.tokens.items()
            },
        )

    @router.get(
        "/me", tags=["accounts"], response_model=AccountBody, responses=documented(AccountNotFound)
    )
    def me(principal: AuthenticatedPrincipal) -> AccountBody:
        return AccountBody.of(service.get_account(principal.account_id))

    @router.get(
        "/accounts/{account_id}",
        tags=["accounts"],
        response_model=AccountBody,
        responses=documented(AccountNotFound),
    )
    def account(account_id: AccountIdPath, principal: AuthenticatedPrincipal) -> AccountBody:
        """Public keys and role of any account (any authenticated caller)."""
        return AccountBody.of(service.get_account(account_id))

    @router.get(
        "/accounts/by-address/{address}",
        tags=["accounts"],
        response_model=AccountBody,
        responses=documented(AccountNotFound),
    )
    def account_by_address(address: AddressPath, principal: AuthenticatedPrincipal) -> AccountBody:
        return AccountBody.of(service.get_account_by_address(address))

    @router.post(
        "/providers/{account_id}/verify",
        tags=["providers"],
        response_model=AccountBody,
        responses=documented(
            *_PROVIDER,
            (InvalidInput, "invalid_licence_hash"),
            (InvalidInput, "invalid_metadata_hash"),
            _RoleNotAllowed,
        ),
    )
    def verify(
        account_id: AccountIdPath,
        body: VerifyProviderRequest,
        request: Request,
        principal: AdminPrincipal,
    ) -> AccountBody:
        """Admin only: register the provider in ProviderRegistry on chain."""
        return AccountBody.of(
            service.verify_provider(
                _caller(principal),
                account_id,
                licence_hash=body.licence_hash,
                metadata_hash=body.metadata_hash,
                correlation_id=_request_id(request),
            )
        )

    @router.post(
        "/providers/{account_id}/suspend",
        tags=["providers"],
        response_model=AccountBody,
        responses=documented(*_PROVIDER, (InvalidInput, "invalid_reason_code"), _RoleNotAllowed),
    )
    def suspend(
        account_id: AccountIdPath,
        body: SuspendProviderRequest,
        request: Request,
        principal: AdminPrincipal,
    ) -> AccountBody:
        return AccountBody.of(
            service.suspend_provider(
                _caller(principal),
                account_id,
                reason_code=body.reason_code,
                correlation_id=_request_id(request),
            )
        )

    @router.post(
        "/providers/{account_id}/reinstate",
        tags=["providers"],
        response_model=AccountBody,
        responses=documented(*_PROVIDER, _RoleNotAllowed),
    )
    def reinstate(
        account_id: AccountIdPath, request: Request, principal: AdminPrincipal
    ) -> AccountBody:
        return AccountBody.of(
            service.reinstate_provider(
                _caller(principal), account_id, correlation_id=_request_id(request)
            )
        )

    @router.post("/admin/signing-keys/rotate", tags=["tokens"], response_model=RotateResponse)
    def rotate(principal: AdminPrincipal) -> RotateResponse:
        """Admin only: start signing with a new key; old keys stay in the JWKS."""
        keys.rotate()
        return RotateResponse(active_kid=keys.active_kid, kids=keys.kids())

    @router.delete(
        "/admin/signing-keys/{kid}",
        tags=["tokens"],
        response_model=RotateResponse,
        responses=documented(_SigningKeyNotFound, _SigningKeyActive),
    )
    def retire(kid: KidPath, principal: AdminPrincipal) -> RotateResponse:
        """Admin only: withdraw a non-active key from the JWKS."""
        try:
            keys.retire(kid)
        except KeyError as exc:
            raise NotFound("no such signing key", code="signing_key_not_found") from exc
        except ValueError as exc:
            raise Conflict(str(exc), code="signing_key_active") from exc
        return RotateResponse(active_kid=keys.active_kid, kids=keys.kids())

    return router
