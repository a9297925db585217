"""HTTP routes of the identity service (thin: parse, check role, call the use case)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from services.identity.adapters.signing_keys import SigningKeyRing
from services.identity.api.schemas import (
    AccountBody,
    ChallengeRequest,
    ChallengeResponse,
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
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
)

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

    @router.get("/.well-known/jwks.json", tags=["tokens"])
    def jwks() -> dict[str, Any]:
        """Public keys that verify identity's access tokens (ES256)."""
        return keys.jwks()

    @router.post("/accounts", status_code=201, tags=["accounts"])
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

    @router.post("/auth/challenge", status_code=201, tags=["auth"])
    def challenge(body: ChallengeRequest) -> ChallengeResponse:
        """A one-time EIP-4361 login message for the account to sign."""
        issued = service.challenge(body.signing_address)
        return ChallengeResponse(
            nonce=issued.nonce,
            message=issued.message,
            issued_at=issued.issued_at,
            expires_at=issued.expires_at,
        )

    @router.post("/auth/login", tags=["auth"])
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

    @router.get("/me", tags=["accounts"])
    def me(principal: AuthenticatedPrincipal) -> AccountBody:
        return AccountBody.of(service.get_account(principal.account_id))

    @router.get("/accounts/{account_id}", tags=["accounts"])
    def account(account_id: str, principal: AuthenticatedPrincipal) -> AccountBody:
        """Public keys and role of any account (any authenticated caller)."""
        return AccountBody.of(service.get_account(account_id))

    @router.get("/accounts/by-address/{address}", tags=["accounts"])
    def account_by_address(address: str, principal: AuthenticatedPrincipal) -> AccountBody:
        return AccountBody.of(service.get_account_by_address(address))

    @router.post("/providers/{account_id}/verify", tags=["providers"])
    def verify(
        account_id: str,
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

    @router.post("/providers/{account_id}/suspend", tags=["providers"])
    def suspend(
        account_id: str,
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

    @router.post("/providers/{account_id}/reinstate", tags=["providers"])
    def reinstate(account_id: str, request: Request, principal: AdminPrincipal) -> AccountBody:
        return AccountBody.of(
            service.reinstate_provider(
                _caller(principal), account_id, correlation_id=_request_id(request)
            )
        )

    @router.post("/admin/signing-keys/rotate", tags=["tokens"])
    def rotate(principal: AdminPrincipal) -> RotateResponse:
        """Admin only: start signing with a new key; old keys stay in the JWKS."""
        keys.rotate()
        return RotateResponse(active_kid=keys.active_kid, kids=keys.kids())

    @router.delete("/admin/signing-keys/{kid}", tags=["tokens"])
    def retire(kid: str, principal: AdminPrincipal) -> RotateResponse:
        """Admin only: withdraw a non-active key from the JWKS."""
        try:
            keys.retire(kid)
        except KeyError as exc:
            raise NotFound("no such signing key", code="signing_key_not_found") from exc
        except ValueError as exc:
            raise Conflict(str(exc), code="signing_key_active") from exc
        return RotateResponse(active_kid=keys.active_kid, kids=keys.kids())

    return router
