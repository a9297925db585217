"""Request and response bodies of the identity API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from services.identity.domain.model import Account, ProviderStatus, Role


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(Strict):
    name: str = Field(min_length=1, max_length=200)
    role: Role
    signing_address: str = Field(min_length=42, max_length=42)
    encryption_key: str = Field(min_length=64, max_length=64, description="X25519, hex")
    signature: str = Field(description="EIP-191 signature of the registration text, hex")


class ChallengeRequest(Strict):
    signing_address: str = Field(min_length=42, max_length=42)


class ChallengeResponse(BaseModel):
    nonce: str
    message: str
    issued_at: datetime
    expires_at: datetime


class LoginRequest(Strict):
    nonce: str = Field(min_length=1, max_length=64)
    signature: str = Field(min_length=130, max_length=132)
    audiences: list[str] | None = Field(default=None, max_length=16)


class TokenBody(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    audience: str
    expires_at: datetime


class LoginResponse(BaseModel):
    account_id: str
    role: Role
    session_id: str
    tokens: dict[str, TokenBody]


class AccountBody(BaseModel):
    account_id: str
    name: str
    role: Role
    signing_address: str
    encryption_key: str
    provider_status: ProviderStatus | None
    created_at: datetime

    @classmethod
    def of(cls, account: Account) -> AccountBody:
        return cls(
            account_id=account.account_id,
            name=account.name,
            role=account.role,
            signing_address=account.signing_address,
            encryption_key=account.encryption_key,
            provider_status=account.provider_status,
            created_at=account.created_at,
        )


class VerifyProviderRequest(Strict):
    licence_hash: str = Field(description="0x + 64 hex: hash of the licence document")
    metadata_hash: str | None = None


class SuspendProviderRequest(Strict):
    reason_code: str = Field(min_length=1, max_length=64)


class RotateResponse(BaseModel):
    active_kid: str
    kids: list[str]
