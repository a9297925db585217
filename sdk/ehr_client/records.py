"""Client of the record store: FHIR validation, encryption and key wrapping on the client.

    records = RecordsClient(base_url, token=session.token("records"), keys=my_keys,
                            account_id=my_id, directory=IdentityKeyDirectory(identity, token))
    stored = records.upload(resource, patient=patient_recipient, category="labs")
    opened = records.read(stored.record_id, purpose=TREATMENT)   # decrypted + verified

A record version is encrypted with a fresh data key (AES-256-GCM, additional data =
record id, version and patient). The data key is wrapped for the patient, for the record
store's escrow key (break-glass), for every recipient named and for every grantee the
consent service authorises for the category now: the record store lists them (with the
SHA-256 of their registered encryption keys), the client takes the keys from identity
(``KeyDirectory``) and checks them against those hashes. The author signs
the provenance statement (record id, version, patient, category, resource type, SHA-256
of the canonical FHIR JSON, time) with their signing key (EIP-191); a reader verifies
it after decrypting. The server receives ciphertext, hashes and wrapped keys only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from ehr_protocol.records import (
    ESCROW_HOLDER,
    canonical_json,
    provenance_signer,
    provenance_text,
    record_aad,
    wrap_context,
)
from ehr_protocol.vocabulary import CATEGORY_BITS, CATEGORY_NAMES, AccessPurpose, Purpose
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from ehr_client import crypto
from ehr_client.errors import ApiClient
from ehr_client.errors import RecordsClientError as RecordsClientError
from ehr_client.identity import IdentityClient
from ehr_client.keys import UserKeys
from ehr_client.results import (
    BreakGlassAccess,
    FetchedVersion,
    History,
    RecordInfo,
    VersionInfo,
)

CATEGORIES = CATEGORY_NAMES
TREATMENT, PAYMENT, OPERATIONS, RESEARCH, EMERGENCY = (int(p) for p in Purpose)
#: The purpose of a patient reading their own records (no grant needed).
PATIENT_REQUEST = int(AccessPurpose.PATIENT_REQUEST)


class InvalidFhirResource(ValueError):
    """The resource is not an acceptable FHIR R4 resource."""


class KeyHolderMismatch(Exception):
    """A key holder's encryption key from the directory is not the one the record store
    knows (its SHA-256 differs), or a holder cannot be resolved."""


class ProvenanceMismatch(Exception):
    """The decrypted content does not match its signed hash, or the signer is not the author."""


# -- FHIR validation (one port, backed by the FHIR model library) -----------------------


class FhirValidator(Protocol):
    def validate(self, resource: Mapping[str, Any]) -> str:
        """The resource type; raises ``InvalidFhirResource``."""
        ...


ACCEPTED_RESOURCE_TYPES = (
    "Observation",
    "DiagnosticReport",
    "MedicationStatement",
    "DocumentReference",
    "Condition",
)

# The model library checks structure, cardinality and primitive formats but not value
# sets; ``status`` of these types has a *required* binding in FHIR R4, checked here.
REQUIRED_STATUS: dict[str, frozenset[str]] = {
    "Observation": frozenset(
        {
            "registered",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
    "DiagnosticReport": frozenset(
        {
            "registered",
            "partial",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "appended",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
    "MedicationStatement": frozenset(
        {
            "active",
            "completed",
            "entered-in-error",
            "intended",
            "stopped",
            "on-hold",
            "unknown",
            "not-taken",
        }
    ),
    "DocumentReference": frozenset({"current", "superseded", "entered-in-error"}),
}


def _empty_element(value: Any, where: str) -> str | None:
    """The path of the first empty array or object (FHIR JSON never has them), or None."""
    if isinstance(value, Mapping):
        if not value:
            return where
        children: Sequence[tuple[str, Any]] = [(f"{where}.{k}", v) for k, v in value.items()]
    elif isinstance(value, list):
        if not value:
            return where
        children = [(f"{where}.{i}", v) for i, v in enumerate(value)]
    else:
        return None
    for path, child in children:
        found = _empty_element(child, path)
        if found is not None:
            return found
    return None


class FhirResourcesValidator:
    """Validates against the FHIR R4B models of ``fhir.resources`` (R4B is the
    R4-compatible release line): structure, cardinality, primitive formats, no unknown
    elements. On top: FHIR JSON's rule of no empty arrays or objects, the required
    ``status`` bindings and a ``subject`` reference (a record belongs to one patient).
    Accepts the resource types in ``ACCEPTED_RESOURCE_TYPES``."""

    def __init__(self, accepted: Sequence[str] = ACCEPTED_RESOURCE_TYPES) -> None:
        self.accepted = frozenset(accepted)

    def validate(self, resource: Mapping[str, Any]) -> str:
        kind = resource.get("resourceType") if isinstance(resource, Mapping) else None
        if not isinstance(kind, str) or kind not in self.accepted:
            raise InvalidFhirResource(f"resourceType {kind!r} is not accepted")
        empty = _empty_element(resource, kind)
        if empty is not None:
            raise InvalidFhirResource(f"invalid {kind} at {empty}: empty arrays and objects")
        try:
            model = get_fhir_model_class(kind).model_validate(dict(resource))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or kind
            raise InvalidFhirResource(f"invalid {kind} at {where}: {first['msg']}") from exc
        status = getattr(model, "status", None)
        allowed = REQUIRED_STATUS.get(kind)
        if allowed is not None and status not in allowed:
            raise InvalidFhirResource(f"invalid {kind} at status: {status!r} is not a FHIR code")
        subject = getattr(model, "subject", None)
        if subject is None or not getattr(subject, "reference", None):
            raise InvalidFhirResource(f"invalid {kind} at subject: a reference is required")
        return kind


# -- the formats both sides agree on ----------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """An account a data key is wrapped for: its id and X25519 public key (hex)."""

    account_id: str
    encryption_key: str


class KeyDirectory(Protocol):
    """Where the client takes an account's X25519 public encryption key (hex) from."""

    def encryption_key(self, account_id: str) -> str: ...


class IdentityKeyDirectory:
    """Public encryption keys from the identity service (``GET /accounts/{id}``)."""

    def __init__(self, identity: IdentityClient, token: str) -> None:
        self.identity = identity
        self.token = token

    def encryption_key(self, account_id: str) -> str:
        return str(self.identity.account(self.token, account_id)["encryption_key"])


@dataclass(frozen=True)
class StoredVersion:
    """An uploaded or amended version: its id, number and the record store's answer."""

    record_id: str
    version: int
    body: VersionInfo


@dataclass(frozen=True)
class OpenedRecord:
    record_id: str
    version: int
    resource: dict[str, Any]
    author_id: str
    author_address: str
    basis: str


def _key_sha256(encryption_key_hex: str) -> str:
    try:
        return hashlib.sha256(bytes.fromhex(encryption_key_hex)).hexdigest()
    except ValueError:
        return ""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class RecordsClient:
    """Talks to the record store as one user (their ``records`` token and keys)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        keys: UserKeys,
        account_id: str,
        validator: FhirValidator | None = None,
        directory: KeyDirectory | None = None,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.api = ApiClient(base_url, timeout=timeout, http=http, family=RecordsClientError)
        self.http = self.api.http
        self.token = token
        self.keys = keys
        self.account_id = account_id
        self.validator = validator or FhirResourcesValidator()
        self.directory = directory
        self._escrow: str | None = None

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> RecordsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, *, json_body: Any = None, params: Any = None) -> Any:
        """The decoded JSON answer (None when empty); ``RecordsClientError`` otherwise."""
        return self.api.call(method, path, token=self.token, json=json_body, params=params)

    def escrow_key(self) -> str:
        if self._escrow is None:
            self._escrow = str(self.call("GET", "/records/escrow-key")["encryption_key"])
        return self._escrow

    # -- upload and amend -------------------------------------------------------------

    def build_version(
        self,
        resource: Mapping[str, Any],
        *,
        record_id: str,
        version: int,
        patient: Recipient,
        category: str,
        extra_holders: Sequence[Recipient] = (),
    ) -> dict[str, Any]:
        """The request body of one version: validated, encrypted, wrapped and signed."""
        if category not in CATEGORY_BITS:
            raise ValueError(f"unknown category {category!r}")
        resource_type = self.validator.validate(resource)
        plaintext = canonical_json(resource)
        content_sha256 = hashlib.sha256(plaintext).digest()
        data_key = crypto.new_data_key()
        ciphertext = crypto.encrypt_record(
            plaintext, data_key, aad=record_aad(record_id, version, patient.account_id)
        )
        context = wrap_context(record_id, version)
        holders = {patient.account_id: patient.encryption_key, ESCROW_HOLDER: self.escrow_key()}
        holders.update({r.account_id: r.encryption_key for r in extra_holders})
        wrapped = [
            {
                "holder_id": holder,
                "wrapped_key": _b64(crypto.wrap_key(data_key, key, context=context)),
            }
            for holder, key in holders.items()
        ]
        signed_at = datetime.now(UTC).isoformat(timespec="seconds")
        text = provenance_text(
            record_id,
            version,
            patient.account_id,
            category,
            resource_type,
            content_sha256,
            self.account_id,
            signed_at,
        )
        return {
            "record_id": record_id,
            "version": version,
            "patient_id": patient.account_id,
            "category": category,
            "resource_type": resource_type,
            "content_sha256": content_sha256.hex(),
            "ciphertext": _b64(ciphertext),
            "ciphertext_sha256": hashlib.sha256(ciphertext).hexdigest(),
            "plaintext_size": len(plaintext),
            "wrapped_keys": wrapped,
            "provenance": {
                "author_id": self.account_id,
                "author_address": self.keys.address,
                "signed_at": signed_at,
                "signature": "0x" + self.keys.sign_text(text).hex(),
            },
        }

    def authorised_holders(self, patient: Recipient, category: str) -> list[Recipient]:
        """Every grantee consent authorises for ``category`` of the patient now, as the
        record store lists them, with encryption keys from the directory that must match
        the SHA-256 the record store holds (neither side alone can substitute a key). The
        patient's key is checked likewise."""
        answer = self.call(
            "GET",
            "/records/key-holders",
            params={"patient_id": patient.account_id, "category": category},
        )
        if _key_sha256(patient.encryption_key) != answer["patient"]["encryption_key_sha256"]:
            raise KeyHolderMismatch("the patient's key is not the one registered")
        grantees = answer["grantees"]
        if grantees and self.directory is None:
            raise KeyHolderMismatch(
                f"{len(grantees)} grantee(s) are authorised for {category}: "
                "a key directory is needed to wrap the data key for them"
            )
        holders = []
        for grantee in grantees:
            assert self.directory is not None
            key = self.directory.encryption_key(grantee["account_id"])
            if _key_sha256(key) != grantee["encryption_key_sha256"]:
                raise KeyHolderMismatch(
                    f"the directory's key of {grantee['account_id']} is not the registered one"
                )
            holders.append(Recipient(str(grantee["account_id"]), key))
        return holders

    def _holders(
        self, patient: Recipient, category: str, named: Sequence[Recipient], authorised: bool
    ) -> list[Recipient]:
        found = self.authorised_holders(patient, category) if authorised else []
        chosen = {r.account_id: r for r in found}
        chosen.update({r.account_id: r for r in named})
        chosen.pop(patient.account_id, None)
        return list(chosen.values())

    def send_version(self, body: Mapping[str, Any]) -> StoredVersion:
        answer: VersionInfo
        if int(body["version"]) == 1:
            answer = self.call("POST", "/records", json_body=body)
        else:
            answer = self.call("POST", f"/records/{body['record_id']}/versions", json_body=body)
        return StoredVersion(str(body["record_id"]), int(body["version"]), answer)

    def upload(
        self,
        resource: Mapping[str, Any],
        *,
        patient: Recipient,
        category: str,
        extra_holders: Sequence[Recipient] = (),
        record_id: str | None = None,
        wrap_for_authorised: bool = True,
    ) -> StoredVersion:
        """Creates a record (version 1). The data key is wrapped for the patient, the
        escrow key, ``extra_holders`` and, unless ``wrap_for_authorised`` is False, every
        grantee consent authorises for ``category`` now (``authorised_holders``)."""
        body = self.build_version(
            resource,
            record_id=record_id or str(uuid.uuid4()),
            version=1,
            patient=patient,
            category=category,
            extra_holders=self._holders(patient, category, extra_holders, wrap_for_authorised),
        )
        return self.send_version(body)

    def amend(
        self,
        record_id: str,
        resource: Mapping[str, Any],
        *,
        patient: Recipient,
        category: str,
        extra_holders: Sequence[Recipient] = (),
        wrap_for_authorised: bool = True,
    ) -> StoredVersion:
        """Adds the next version of a record (key holders as for ``upload``)."""
        latest = int(self.history(record_id)["record"]["latest_version"])
        body = self.build_version(
            resource,
            record_id=record_id,
            version=latest + 1,
            patient=patient,
            category=category,
            extra_holders=self._holders(patient, category, extra_holders, wrap_for_authorised),
        )
        return self.send_version(body)

    # -- reads ------------------------------------------------------------------------

    def fetch(self, record_id: str, *, purpose: int, version: int | None = None) -> FetchedVersion:
        params: dict[str, Any] = {"purpose": purpose}
        if version is not None:
            params["version"] = version
        answer: FetchedVersion = self.call("GET", f"/records/{record_id}", params=params)
        return answer

    def open(self, answer: Mapping[str, Any]) -> OpenedRecord:
        """Unwraps, decrypts and verifies a fetched version (content hash and signature)."""
        record, version = answer["record"], answer["version"]
        number = int(version["version"])
        data_key = crypto.unwrap_key(
            base64.b64decode(answer["wrapped_key"]),
            self.keys.encryption_private_key,
            context=wrap_context(record["record_id"], number),
        )
        plaintext = crypto.decrypt_record(
            base64.b64decode(answer["ciphertext"]),
            data_key,
            aad=record_aad(record["record_id"], number, record["patient_id"]),
        )
        verify_provenance(record, version, plaintext)
        return OpenedRecord(
            record["record_id"],
            number,
            json.loads(plaintext),
            version["provenance"]["author_id"],
            version["provenance"]["author_address"],
            str(answer["basis"]),
        )

    def read(self, record_id: str, *, purpose: int, version: int | None = None) -> OpenedRecord:
        return self.open(self.fetch(record_id, purpose=purpose, version=version))

    def history(self, record_id: str) -> History:
        answer: History = self.call("GET", f"/records/{record_id}/versions")
        return answer

    def records_of(self, patient_id: str) -> list[RecordInfo]:
        answer: list[RecordInfo] = self.call("GET", "/records", params={"patient_id": patient_id})
        return answer

    # -- the patient's key management ---------------------------------------------------

    def _data_key(self, answer: Mapping[str, Any]) -> bytes:
        record, number = answer["record"], int(answer["version"]["version"])
        return crypto.unwrap_key(
            base64.b64decode(answer["wrapped_key"]),
            self.keys.encryption_private_key,
            context=wrap_context(record["record_id"], number),
        )

    def share(self, grantee: Recipient, *, categories: int) -> int:
        """After a grant: wraps the data key of every own record version in ``categories``
        for the grantee. Returns the number of keys sent."""
        entries = []
        for record in self.records_of(self.account_id):
            if record["shredded"] or not CATEGORY_BITS[record["category"]] & categories:
                continue
            for number in range(1, int(record["latest_version"]) + 1):
                answer = self.fetch(record["record_id"], purpose=PATIENT_REQUEST, version=number)
                data_key = self._data_key(answer)
                wrapped = crypto.wrap_key(
                    data_key,
                    grantee.encryption_key,
                    context=wrap_context(record["record_id"], number),
                )
                entries.append(
                    {
                        "record_id": record["record_id"],
                        "version": number,
                        "holder_id": grantee.account_id,
                        "wrapped_key": _b64(wrapped),
                    }
                )
        if not entries:
            return 0
        self.call("POST", "/records/keys", json_body={"keys": entries})
        return len(entries)

    def unshare(self, grantee_id: str, *, categories: int) -> int:
        """After a revocation: removes the grantee's wrapped keys in ``categories``."""
        answer = self.call(
            "DELETE", f"/records/keys/{grantee_id}", params={"categories": categories}
        )
        return int(answer["deleted"])

    def rotate(self, record_id: str, version: int, *, holders: Sequence[Recipient] = ()) -> int:
        """Re-encrypts a version under a new data key, wrapped for the patient, the escrow
        key and ``holders`` only: every key released before becomes useless."""
        answer = self.fetch(record_id, purpose=PATIENT_REQUEST, version=version)
        plaintext = crypto.decrypt_record(
            base64.b64decode(answer["ciphertext"]),
            self._data_key(answer),
            aad=record_aad(record_id, version, self.account_id),
        )
        data_key = crypto.new_data_key()
        ciphertext = crypto.encrypt_record(
            plaintext, data_key, aad=record_aad(record_id, version, self.account_id)
        )
        context = wrap_context(record_id, version)
        recipients = {
            self.account_id: self.keys.public().encryption_key,
            ESCROW_HOLDER: self.escrow_key(),
        }
        recipients.update({r.account_id: r.encryption_key for r in holders})
        body = {
            "ciphertext": _b64(ciphertext),
            "ciphertext_sha256": hashlib.sha256(ciphertext).hexdigest(),
            "wrapped_keys": [
                {"holder_id": h, "wrapped_key": _b64(crypto.wrap_key(data_key, k, context=context))}
                for h, k in recipients.items()
            ],
        }
        result = self.call(
            "POST", f"/records/{record_id}/versions/{version}/rotation", json_body=body
        )
        return int(result["key_generation"])

    def shred(self, record_id: str) -> None:
        """Right to erasure: every ciphertext and wrapped key of the record is destroyed."""
        self.call("DELETE", f"/records/{record_id}")

    # -- break-glass (providers) ----------------------------------------------------------

    def break_glass(
        self, patient_id: str, justification: str, categories: Sequence[str] = ()
    ) -> BreakGlassAccess:
        answer: BreakGlassAccess = self.call(
            "POST",
            "/records/break-glass",
            json_body={
                "patient_id": patient_id,
                "justification": justification,
                "categories": list(categories),
                "encryption_key": self.keys.public().encryption_key,
            },
        )
        return answer


def verify_provenance(
    record: Mapping[str, Any], version: Mapping[str, Any], plaintext: bytes
) -> None:
    """Raises ``ProvenanceMismatch`` unless the content hash and the author's signature hold."""
    digest = hashlib.sha256(plaintext).digest()
    if digest.hex() != version["content_sha256"]:
        raise ProvenanceMismatch("decrypted content does not match its signed hash")
    prov = version["provenance"]
    text = provenance_text(
        record["record_id"],
        int(version["version"]),
        record["patient_id"],
        record["category"],
        version["resource_type"],
        digest,
        prov["author_id"],
        prov["signed_at"],
    )
    signer = provenance_signer(text, bytes.fromhex(prov["signature"].removeprefix("0x")))
    if signer is None or signer.lower() != str(prov["author_address"]).lower():
        raise ProvenanceMismatch("the provenance signature is not the author's")


LABS_BIT, IMAGING_BIT, MEDICATIONS_BIT, NOTES_BIT, MENTAL_HEALTH_BIT = CATEGORY_BITS.values()
