"""A client of the consent service. The patient's key never leaves this process:
grants and revocations are built and signed here (EIP-712, :mod:`ehr_client.consent`)
and only the signed message is sent.

    consent = ConsentClient("http://127.0.0.1:8001")
    token = session.token("consent")
    grant = consent.grant(patient_keys, token, patient_id=session.account_id,
                          grantee=provider_address, categories=LABS, purpose=TREATMENT,
                          expires_in=30 * 86400)
    consent.check(token, patient=session.account_id, grantee=provider_id,
                  category=LABS, purpose=TREATMENT)        # -> True
    consent.revoke(patient_keys, token, patient_id=session.account_id,
                   grantee=provider_address, categories=LABS, purpose=TREATMENT)
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from ehr_protocol.vocabulary import CATEGORY_BITS, Purpose

from ehr_client import consent as eip712
from ehr_client.errors import ApiClient
from ehr_client.errors import ConsentClientError as ConsentClientError
from ehr_client.keys import UserKeys
from ehr_client.results import ConsentCheck, Grant

#: How long a signed message stays valid for the registry (its ``deadline``).
DEFAULT_DEADLINE_SECONDS = 15 * 60

CATEGORY_NAMES: dict[str, int] = dict(CATEGORY_BITS)
PURPOSE_NAMES: dict[str, int] = {p.name.lower(): int(p) for p in Purpose}
_DURATION = re.compile(r"^(?P<amount>[1-9][0-9]*)(?P<unit>[smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class ConsentInputError(ValueError):
    """A category, purpose or duration given by name is not one the registry knows."""


def parse_categories(names: Iterable[str]) -> int:
    """``["labs", "imaging"]`` (or ``"labs,imaging"`` items) -> the contract's bitmask."""
    mask = 0
    for item in names:
        for name in filter(None, (part.strip().lower() for part in item.split(","))):
            if name not in CATEGORY_NAMES:
                raise ConsentInputError(
                    f"unknown category {name!r}; one of: {', '.join(CATEGORY_NAMES)}"
                )
            mask |= CATEGORY_NAMES[name]
    if mask == 0:
        raise ConsentInputError("name at least one category")
    return mask


def parse_purpose(name: str) -> int:
    """``"treatment"`` -> the contract's purpose id."""
    key = name.strip().lower()
    if key not in PURPOSE_NAMES:
        raise ConsentInputError(f"unknown purpose {name!r}; one of: {', '.join(PURPOSE_NAMES)}")
    return PURPOSE_NAMES[key]


def parse_duration(text: str) -> int:
    """``"30d"``, ``"12h"``, ``"15m"``, ``"90s"``, ``"2w"`` -> seconds."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise ConsentInputError(f"not a duration like 30d, 12h, 15m, 90s or 2w: {text!r}")
    return int(match["amount"]) * _UNIT_SECONDS[match["unit"]]


def category_names(mask: int) -> list[str]:
    """The names of the bits set in ``mask`` (in the contract's order)."""
    return [name for name, bit in CATEGORY_NAMES.items() if mask & bit]


def purpose_name(purpose: int) -> str:
    for name, value in PURPOSE_NAMES.items():
        if value == purpose:
            return name
    return str(purpose)


@dataclass(frozen=True)
class Registry:
    """The EIP-712 domain grants and revocations are signed for."""

    chain_id: int
    verifying_contract: str


class ConsentClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 90.0,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = ApiClient(base_url, timeout=timeout, http=http, family=ConsentClientError)
        self.http = self.api.http
        self.clock = clock
        self._registry: Registry | None = None

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> ConsentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        token: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        return self.api.call(method, path, token=token, json=json, params=params)

    # -- what a patient signs for ---------------------------------------------------------
    def registry(self, token: str) -> Registry:
        """The registry's EIP-712 domain (fetched once per client)."""
        if self._registry is None:
            body = self._call("GET", "/consent/registry", token=token)
            self._registry = Registry(int(body["chain_id"]), str(body["verifying_contract"]))
        return self._registry

    def nonce(self, token: str, patient_id: str) -> int:
        """The nonce the patient's next signed message must carry."""
        body = self._call("GET", f"/consent/patients/{patient_id}/nonce", token=token)
        return int(body["nonce"])

    # -- grant and revoke (signed here) ---------------------------------------------------
    def grant(
        self,
        keys: UserKeys,
        token: str,
        *,
        patient_id: str,
        grantee: str,
        categories: int,
        purpose: int,
        expires_at: int | None = None,
        expires_in: int | None = None,
        deadline_in: int = DEFAULT_DEADLINE_SECONDS,
    ) -> Grant:
        """Build the ``Grant`` for ``grantee`` (a signing address), sign it with the
        patient's key, relay it; returns the grant once the chain accepted it."""
        if (expires_at is None) == (expires_in is None):
            raise ConsentInputError("give exactly one of expires_at and expires_in")
        now = int(self.clock())
        registry = self.registry(token)
        message = eip712.build_grant(
            keys.address,
            grantee,
            categories=categories,
            purpose=purpose,
            expires_at=expires_at if expires_at is not None else now + int(expires_in or 0),
            nonce=self.nonce(token, patient_id),
            deadline=now + deadline_in,
        )
        body = self._signed(keys, message, registry)
        result: Grant = self._call("POST", "/consent/grants", token=token, json=body)
        return result

    def revoke(
        self,
        keys: UserKeys,
        token: str,
        *,
        patient_id: str,
        grantee: str,
        categories: int,
        purpose: int,
        deadline_in: int = DEFAULT_DEADLINE_SECONDS,
    ) -> Grant:
        """Build, sign and relay a ``Revoke``; once it returns, every check that starts
        afterwards sees it. Returns the grant after the revocation."""
        registry = self.registry(token)
        message = eip712.build_revoke(
            keys.address,
            grantee,
            categories=categories,
            purpose=purpose,
            nonce=self.nonce(token, patient_id),
            deadline=int(self.clock()) + deadline_in,
        )
        body = self._signed(keys, message, registry)
        result: Grant = self._call("POST", "/consent/revocations", token=token, json=body)
        return result

    @staticmethod
    def _signed(
        keys: UserKeys, message: eip712.ConsentMessage, registry: Registry
    ) -> dict[str, Any]:
        signature = eip712.sign_message(
            keys.account,
            message,
            chain_id=registry.chain_id,
            verifying_contract=registry.verifying_contract,
        )
        fields = dict(message.typed_message())
        if "expiresAt" in fields:
            fields["expires_at"] = fields.pop("expiresAt")
        return {"message": fields, "signature": "0x" + signature.hex()}

    # -- reading --------------------------------------------------------------------------
    def my_grants(self, token: str, patient_id: str) -> list[Grant]:
        """The patient's active grants (the patient's own token)."""
        result: list[Grant] = self._call(
            "GET", f"/consent/patients/{patient_id}/grants", token=token
        )
        return result

    def grants_naming(self, token: str, grantee_id: str) -> list[Grant]:
        """Active grants naming ``grantee_id`` (the grantee's own token)."""
        result: list[Grant] = self._call(
            "GET", f"/consent/grantees/{grantee_id}/grants", token=token
        )
        return result

    def check_detail(
        self, token: str, *, patient: str, grantee: str, category: int, purpose: int
    ) -> ConsentCheck:
        """The full answer of ``check`` (patient/grantee: account ids or addresses)."""
        params = {"patient": patient, "grantee": grantee, "category": category, "purpose": purpose}
        result: ConsentCheck = self._call("GET", "/consent/check", token=token, params=params)
        return result

    def check(self, token: str, *, patient: str, grantee: str, category: int, purpose: int) -> bool:
        """May ``grantee`` read ``patient``'s ``category`` records for ``purpose`` now?"""
        answer = self.check_detail(
            token, patient=patient, grantee=grantee, category=category, purpose=purpose
        )
        return bool(answer["authorised"])
