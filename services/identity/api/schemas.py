"""Request and response bodies of the identity API.

Every field's domain is stated here, so a value outside it is refused with 422 before a
use case runs: addresses, keys, hashes, signatures and nonces are ASCII hex of their exact
length (a Cyrillic letter or a full-width digit that looks like hex is refused, never
normalised), ids are the UUIDs identity issues, names are bounded.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.identity.domain.model import Account, ProviderStatus, Role
from services.platform.app.bounds import Instant

ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
HASH32_PATTERN = r"^0x[0-9a-fA-F]{64}$"

Address = Annotated[
    str,
    Field(
        pattern=ADDRESS_PATTERN,
        description="Ethereum address: 0x + 40 ASCII hex characters (any case)",
        examples=["0x" + "ab" * 20],
    ),
]
Signature = Annotated[
    str,
    Field(
        pattern=r"^(0x)?[0-9a-fA-F]{130}$",
        description="EIP-191 signature: 65 bytes as 130 ASCII hex characters, 0x optional",
    ),
]
Hash32 = Annotated[
    str, Field(pattern=HASH32_PATTERN, description="32 bytes: 0x + 64 ASCII hex characters")
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(Strict):
    name: str = Field(
        min_length=1,
        max_length=200,
        description="1 to 200 characters once trimmed; no control or format characters",
    )
    role: Role
    signing_address: Address
    encryption_key: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="X25519 public key, 64 lowercase hex"
    )
    signature: Signature = Field(description="EIP-191 signature of the registration text")


class ChallengeRequest(Strict):
    signing_address: Address


class ChallengeResponse(Strict):
    nonce: str
    message: str = Field(description="the EIP-4361 text to sign")
    issued_at: Instant
    expires_at: Instant


class LoginRequest(Strict):
    nonce: str = Field(
        pattern=r"^[0-9a-f]{32}$", description="the challenge's nonce (32 lowercase hex)"
    )
    signature: Signature
    audiences: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")]] | None = Field(
        default=None, min_length=1, max_length=16, description="default: every audience"
    )


class TokenBody(Strict):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    audience: str
    expires_at: Instant


class LoginResponse(Strict):
    account_id: str
    role: Role
    session_id: str
    tokens: dict[str, TokenBody] = Field(description="one access token per audience")


class AccountBody(Strict):
    account_id: str
    name: str
    role: Role
    signing_address: str = Field(description="checksummed address")
    encryption_key: str = Field(description="X25519 public key, 64 hex")
    provider_status: ProviderStatus | None = Field(description="null unless role is provider")
    created_at: Instant

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
    licence_hash: Hash32 = Field(description="hash of the licence document, not zero")
    metadata_hash: Hash32 | None = None


class SuspendProviderRequest(Strict):
    reason_code: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="snake_case")


class RotateResponse(Strict):
    active_kid: str
    kids: list[str]


class Jwk(Strict):
    """A P-256 public key that verifies identity's ES256 access tokens."""

    kty: Literal["EC"]
    crv: Literal["P-256"]
    x: str
    y: str
    kid: str
    alg: Literal["ES256"]
    use: Literal["sig"]


class Jwks(Strict):
    keys: list[Jwk]
