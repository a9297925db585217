"""Use cases of the record store: upload and amend, reads with consent enforced,
key management by the patient, break-glass and crypto-shredding.

Every rule about who may do what lives here; the API only authenticates and translates.
A refused request raises before anything is written, except a refused read, which writes
exactly its denied-read event.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ehr_protocol.vocabulary import ALL_CATEGORIES

from services.record_store.domain.errors import (
    AccessDenied,
    InvalidUpload,
    KeyNotAvailable,
    NotAllowed,
    PayloadTooLarge,
    ProviderNotVerified,
    ProviderVerificationPending,
    RecordExists,
    RecordNotFound,
    RecordShredded,
    UnknownAccount,
)
from services.record_store.domain.events import (
    Actor,
    BreakGlassDeclared,
    KeysRemoved,
    KeysShared,
    ReadWasDenied,
    RecordWasRead,
    RecordWasShredded,
    VersionRotated,
    VersionStored,
)
from services.record_store.domain.model import (
    ESCROW_HOLDER,
    WRAPPED_KEY_BYTES,
    Account,
    Basis,
    BreakGlass,
    Category,
    ConsentDecision,
    Denial,
    KeyHolder,
    Purpose,
    ReadResult,
    RecordMeta,
    Role,
    VersionMeta,
    VersionUpload,
    WrappedKey,
)
from services.record_store.domain.ports import (
    AccountDirectory,
    Clock,
    ConsentCheck,
    EscrowKey,
    ProvenanceVerifier,
    ProviderVerification,
    RecordRepository,
)

RESOURCE_TYPES = frozenset(
    {
        "Observation",
        "DiagnosticReport",
        "MedicationStatement",
        "MedicationRequest",
        "DocumentReference",
        "Condition",
        "ImagingStudy",
        "AllergyIntolerance",
        "Procedure",
        "Immunization",
    }
)
"""FHIR R4 resource types the record store accepts (validated in full by the client)."""


@dataclass(frozen=True, slots=True)
class RecordPolicy:
    max_ciphertext_bytes: int = 1_048_576 + 64
    break_glass_seconds: float = 3600.0
    min_justification: int = 20
    max_justification: int = 1000
    max_keys_per_request: int = 1000


def _check_key(key: WrappedKey) -> None:
    if len(key.wrapped) != WRAPPED_KEY_BYTES or key.wrapped[0] != 1:
        raise InvalidUpload(
            f"the key wrapped for {key.holder_id!r} is not a {WRAPPED_KEY_BYTES}-byte wrapped key",
            code="malformed_wrapped_key",
        )


DENIALS: dict[str, tuple[Denial, str, str]] = {
    "no_grant": (Denial.NO_GRANT, "no_grant", "no grant covers this category and purpose"),
    "revoked": (
        Denial.GRANT_REVOKED,
        "grant_revoked",
        "the patient revoked the grant for this category and purpose",
    ),
    "expired": (
        Denial.GRANT_EXPIRED,
        "grant_expired",
        "the grant for this category and purpose has expired",
    ),
}
"""Consent's refusal reason -> the recorded denial, the error code and its message (an
unknown reason counts as ``no_grant``)."""


class RecordService:
    def __init__(
        self,
        repository: RecordRepository,
        consent: ConsentCheck,
        providers: ProviderVerification,
        provenance: ProvenanceVerifier,
        escrow: EscrowKey,
        clock: Clock,
        policy: RecordPolicy | None = None,
        directory: AccountDirectory | None = None,
    ) -> None:
        self.repository = repository
        self.consent = consent
        self.providers = providers
        self.provenance = provenance
        self.escrow = escrow
        self.clock = clock
        self.policy = policy or RecordPolicy()
        self.directory = directory

    # -- helpers ----------------------------------------------------------------------

    def _verified_provider(self, actor: Actor) -> Account:
        """The caller's account when it is a provider verified in ``ProviderRegistry``.

        The record store learns accounts from identity's ``account_registered`` events
        and verification from the chain. A provider verified a moment ago may call before
        the record store has read its registration: then identity is asked directly, and
        a provider identity or the chain holds verified gets the retryable
        ``ProviderVerificationPending`` instead of "not verified"."""
        if actor.role != Role.PROVIDER:
            raise NotAllowed("only a provider may do this", code="role_not_allowed")
        account = self.repository.account(actor.account_id)
        if account is None:
            self._unseen_provider(actor.account_id)
        if account is None or account.role != Role.PROVIDER:
            raise ProviderNotVerified("the caller is not a known provider account")
        if not self.providers.is_verified(account.address):
            raise ProviderNotVerified("the provider is not verified in ProviderRegistry")
        return account

    def _unseen_provider(self, account_id: str) -> None:
        """Raises why an account missing from the projection may not act as a provider:
        pending (verified, not yet read here) or not verified."""
        if self.directory is None:
            return
        entry = self.directory.entry(account_id)
        if entry is None or entry.role != Role.PROVIDER:
            raise ProviderNotVerified(f"identity knows no provider account {account_id}")
        if entry.provider_status == "verified" or self.providers.is_verified(entry.address):
            raise ProviderVerificationPending(
                "the provider is verified, but the record store has not yet read the "
                "account's registration from identity's events; retry in a moment"
            )
        raise ProviderNotVerified(
            f"the provider is not verified (identity: {entry.provider_status or 'unknown'})"
        )

    def _consented(self, record: RecordMeta, reader_id: str, purpose: int) -> ConsentDecision:
        return self.consent.decision(record.patient_id, reader_id, record.category.bit, purpose)

    def _record(self, record_id: str) -> RecordMeta:
        record = self.repository.record(record_id)
        if record is None:
            raise RecordNotFound(f"no record {record_id}")
        return record

    def _owned(self, actor: Actor, record_id: str) -> RecordMeta:
        if actor.role != Role.PATIENT:
            raise NotAllowed("only the patient may do this", code="role_not_allowed")
        record = self._record(record_id)
        if record.patient_id != actor.account_id:
            raise NotAllowed("a patient acts only on their own records", code="not_own_record")
        if record.shredded_at is not None:
            raise RecordShredded(f"record {record_id} was shredded")
        return record

    def _holder(self, holder_id: str) -> None:
        if holder_id == ESCROW_HOLDER:
            return
        if self.repository.account(holder_id) is None:
            raise UnknownAccount(f"no account {holder_id!r} to hold a key", code="unknown_holder")

    def _check_version(self, upload: VersionUpload, author: Account) -> None:
        limit = self.policy.max_ciphertext_bytes
        if len(upload.ciphertext) > limit:
            raise PayloadTooLarge(f"ciphertext has {len(upload.ciphertext)} bytes, limit {limit}")
        if len(upload.ciphertext) < 28:
            raise InvalidUpload(
                "ciphertext is shorter than nonce and tag", code="malformed_ciphertext"
            )
        if hashlib.sha256(upload.ciphertext).digest() != upload.ciphertext_sha256:
            raise InvalidUpload(
                "ciphertext does not match its SHA-256 (altered in transit?)",
                code="ciphertext_hash_mismatch",
            )
        if len(upload.content_sha256) != 32:
            raise InvalidUpload("content_sha256 must have 32 bytes", code="invalid_content_hash")
        if upload.resource_type not in RESOURCE_TYPES:
            raise InvalidUpload(
                f"resource type {upload.resource_type!r} is not accepted",
                code="unsupported_resource_type",
            )
        if not 0 <= upload.plaintext_size <= limit:
            raise InvalidUpload("plaintext_size is out of range", code="invalid_size")
        patient = self.repository.account(upload.patient_id)
        if patient is None or patient.role != Role.PATIENT:
            raise UnknownAccount(f"no patient {upload.patient_id!r}", code="unknown_patient")
        self._check_keys(upload.record_id, upload.version, upload.patient_id, upload.wrapped_keys)
        prov = upload.provenance
        if prov.author_id != author.account_id or prov.author_address != author.address:
            raise InvalidUpload("provenance must name the uploader", code="bad_provenance")
        if self.provenance.signer(upload) != author.address:
            raise InvalidUpload(
                "provenance is not signed by the uploader's key", code="bad_provenance_signature"
            )

    def _check_keys(
        self, record_id: str, version: int, patient_id: str, keys: Sequence[WrappedKey]
    ) -> None:
        holders = [k.holder_id for k in keys]
        if len(set(holders)) != len(holders):
            raise InvalidUpload("a holder appears twice in wrapped_keys", code="duplicate_holder")
        if len(keys) > self.policy.max_keys_per_request:
            raise InvalidUpload("too many wrapped keys", code="too_many_keys")
        if patient_id not in holders:
            raise InvalidUpload(
                "the data key must be wrapped for the patient", code="patient_key_missing"
            )
        if ESCROW_HOLDER not in holders:
            raise InvalidUpload(
                "the data key must be wrapped for the escrow key", code="escrow_key_missing"
            )
        for key in keys:
            _check_key(key)
            self._holder(key.holder_id)
        escrow = next(k for k in keys if k.holder_id == ESCROW_HOLDER)
        if not self.escrow.opens(escrow.wrapped, record_id, version):
            raise InvalidUpload(
                "the escrow copy does not open with the escrow key for this version",
                code="wrong_wrapped_key",
            )

    # -- upload and amend -------------------------------------------------------------

    def upload(self, actor: Actor, upload: VersionUpload) -> VersionMeta:
        """Creates a record (version 1) or amends one (version n + 1)."""
        author = self._verified_provider(actor)
        if upload.version < 1:
            raise InvalidUpload("versions start at 1", code="invalid_version")
        existing = self.repository.record(upload.record_id)
        if upload.version == 1:
            if existing is not None:
                raise RecordExists(f"record {upload.record_id} exists (replayed upload?)")
        else:
            if existing is None:
                raise RecordNotFound(f"no record {upload.record_id} to amend")
            if existing.shredded_at is not None:
                raise RecordShredded(f"record {upload.record_id} was shredded")
            if upload.version <= existing.latest_version:
                raise RecordExists(
                    f"version {upload.version} exists (replayed upload?)", code="version_exists"
                )
            if upload.version != existing.latest_version + 1:
                raise InvalidUpload(
                    f"the next version is {existing.latest_version + 1}", code="invalid_version"
                )
            if (existing.patient_id, existing.category) != (upload.patient_id, upload.category):
                raise InvalidUpload("an amendment keeps patient and category", code="scope_changed")
            if (
                existing.created_by != author.account_id
                and not self._consented(existing, author.account_id, Purpose.TREATMENT).authorised
            ):
                raise NotAllowed("no active treatment consent to amend", code="no_consent")
        self._check_version(upload, author)
        event = VersionStored(
            actor=actor,
            record_id=upload.record_id,
            version=upload.version,
            patient_id=upload.patient_id,
            provider_id=author.account_id,
            provider_address=author.address,
            category=upload.category,
            ciphertext_sha256=upload.ciphertext_sha256,
            ciphertext_size=len(upload.ciphertext),
            key_holder_ids=tuple(k.holder_id for k in upload.wrapped_keys),
        )
        self.repository.add_version(upload, self.clock(), [event])
        stored = self.repository.version(upload.record_id, upload.version)
        assert stored is not None
        return stored

    # -- reads ------------------------------------------------------------------------

    def _deny(
        self,
        actor: Actor,
        record: RecordMeta,
        purpose: int,
        reason: Denial,
        message: str,
        code: str = AccessDenied.code,
    ) -> AccessDenied:
        self.repository.record_events(
            [
                ReadWasDenied(
                    actor, record.record_id, record.patient_id, record.category, purpose, reason
                )
            ]
        )
        return AccessDenied(message, code=code)

    def read(self, actor: Actor, record_id: str, version: int | None, purpose: int) -> ReadResult:
        """Ciphertext and the reader's own wrapped key, when the reader may read now."""
        record = self._record(record_id)
        number = version or record.latest_version
        meta = self.repository.version(record_id, number)
        if meta is None:
            raise RecordNotFound(f"record {record_id} has no version {number}")
        now = self.clock()
        break_glass_id = grant_id = ""
        if actor.role == Role.PATIENT:
            if record.patient_id != actor.account_id:
                raise self._deny(
                    actor,
                    record,
                    purpose,
                    Denial.ROLE_NOT_ALLOWED,
                    "a patient reads only their own records",
                    "not_own_record",
                )
            basis = Basis.OWNER
        elif actor.role == Role.PROVIDER:
            try:
                self._verified_provider(actor)
            except ProviderNotVerified as refused:
                raise self._deny(
                    actor,
                    record,
                    purpose,
                    Denial.PROVIDER_NOT_VERIFIED,
                    refused.message,
                    ProviderNotVerified.code,
                ) from None
            if purpose == Purpose.EMERGENCY:
                grant = self.repository.active_break_glass(actor.account_id, record.patient_id, now)
                if grant is None or record.category not in grant.categories:
                    raise self._deny(
                        actor,
                        record,
                        purpose,
                        Denial.NO_GRANT,
                        "no active break-glass covers this category",
                        "no_break_glass",
                    )
                basis, break_glass_id = Basis.BREAK_GLASS, grant.break_glass_id
            else:
                decision = (
                    self._consented(record, actor.account_id, purpose)
                    if purpose in (1, 2, 3, 4)
                    else ConsentDecision(None, "no_grant")
                )
                if decision.grant_id is None:
                    denial, code, message = DENIALS.get(decision.reason, DENIALS["no_grant"])
                    raise self._deny(actor, record, purpose, denial, message, code)
                basis, grant_id = Basis.CONSENT, decision.grant_id
        else:
            raise self._deny(
                actor,
                record,
                purpose,
                Denial.ROLE_NOT_ALLOWED,
                "this role never receives records",
                "role_not_allowed",
            )
        if record.shredded_at is not None:
            self._deny(actor, record, purpose, Denial.RECORD_SHREDDED, "shredded")
            raise RecordShredded(f"record {record_id} was shredded")
        key = self.repository.wrapped_key(record_id, number, actor.account_id, now)
        ciphertext = self.repository.ciphertext(record_id, number)
        if key is None or ciphertext is None:
            self._deny(actor, record, purpose, Denial.KEY_NOT_WRAPPED, "no key")
            raise KeyNotAvailable(
                "authorised, but no data key is wrapped for the reader yet: the patient's "
                "client shares the keys after a grant"
            )
        self.repository.record_events(
            [
                RecordWasRead(
                    actor,
                    record_id,
                    number,
                    record.patient_id,
                    record.category,
                    purpose,
                    basis,
                    break_glass_id,
                    grant_id,
                )
            ]
        )
        return ReadResult(record, meta, ciphertext, key.wrapped, basis)

    def _may_see_metadata(self, actor: Actor, record: RecordMeta) -> bool:
        if actor.role == Role.AUDITOR:
            return True
        if actor.role == Role.PATIENT:
            return record.patient_id == actor.account_id
        if actor.role == Role.PROVIDER:
            self._verified_provider(actor)
            return (
                record.created_by == actor.account_id
                or self._consented(record, actor.account_id, Purpose.TREATMENT).authorised
            )
        return False

    def history(self, actor: Actor, record_id: str) -> tuple[RecordMeta, list[VersionMeta]]:
        """Metadata and provenance of every version (never ciphertext or keys)."""
        record = self._record(record_id)
        if not self._may_see_metadata(actor, record):
            raise NotAllowed("may not see this record's history", code="not_own_record")
        return record, self.repository.versions(record_id)

    def records_of(self, actor: Actor, patient_id: str) -> list[RecordMeta]:
        if actor.role == Role.AUDITOR or (
            actor.role == Role.PATIENT and actor.account_id == patient_id
        ):
            return self.repository.records_of_patient(patient_id)
        raise NotAllowed(
            "only the patient and auditors list a patient's records", code="not_own_record"
        )

    def key_holders(
        self, actor: Actor, patient_id: str, category: Category
    ) -> tuple[KeyHolder, list[KeyHolder]]:
        """For an upload: the patient and every grantee consent authorises for ``category``
        now (any purpose), with the SHA-256 of their registered encryption keys, so the
        uploading provider's client wraps the data key for each of them."""
        self._verified_provider(actor)
        patient = self.repository.account(patient_id)
        if patient is None or patient.role != Role.PATIENT:
            raise UnknownAccount(f"no patient {patient_id!r}", code="unknown_patient")
        grants: dict[str, list[tuple[str, int]]] = {}
        for found in self.consent.authorised_grantees(patient_id, category.bit):
            grants.setdefault(found.grantee_id, []).append((found.grant_id, found.purpose))
        holders = []
        for grantee_id, scoped in grants.items():
            account = self.repository.account(grantee_id)
            if account is None:  # not (yet) known here: it could not hold a key
                continue
            holders.append(
                KeyHolder(
                    grantee_id,
                    account.encryption_key_sha256,
                    tuple(g for g, _ in scoped),
                    tuple(sorted({p for _, p in scoped})),
                )
            )
        return KeyHolder(patient_id, patient.encryption_key_sha256), holders

    # -- keys: grants after upload, revocation, rotation, shredding -------------------

    def wrap_for(self, actor: Actor, keys: Sequence[tuple[str, int, WrappedKey]]) -> int:
        """The patient adds data keys wrapped for a grantee (after a grant)."""
        if not keys:
            raise InvalidUpload("no keys", code="no_keys")
        if len(keys) > self.policy.max_keys_per_request:
            raise InvalidUpload("too many wrapped keys", code="too_many_keys")
        shared: dict[str, dict[str, None]] = {}
        for record_id, version, key in keys:
            self._owned(actor, record_id)
            if self.repository.version(record_id, version) is None:
                raise RecordNotFound(f"record {record_id} has no version {version}")
            if key.holder_id in (ESCROW_HOLDER, actor.account_id):
                raise InvalidUpload(
                    "use rotation to replace own or escrow keys", code="reserved_holder"
                )
            _check_key(key)
            self._holder(key.holder_id)
            shared.setdefault(key.holder_id, {})[record_id] = None
        events = [
            KeysShared(
                actor,
                actor.account_id,
                holder,
                tuple(record_ids),
                sum(1 for _, _, k in keys if k.holder_id == holder),
            )
            for holder, record_ids in shared.items()
        ]
        return self.repository.put_keys(keys, events)

    def drop_keys(self, actor: Actor, holder_id: str, categories: int) -> int:
        """The patient removes a grantee's wrapped keys (after a revocation)."""
        if actor.role != Role.PATIENT:
            raise NotAllowed("only the patient may do this", code="role_not_allowed")
        if holder_id in (ESCROW_HOLDER, actor.account_id):
            raise InvalidUpload(
                "own and escrow keys go only with shredding", code="reserved_holder"
            )
        if not 0 < categories <= ALL_CATEGORIES:
            raise InvalidUpload("categories mask out of range", code="invalid_categories")
        scope = tuple(c for c in Category if c.bit & categories)
        return self.repository.delete_keys(
            actor.account_id,
            holder_id,
            categories,
            lambda deleted: [KeysRemoved(actor, actor.account_id, holder_id, scope, deleted)],
        )

    def rotate(
        self,
        actor: Actor,
        record_id: str,
        version: int,
        ciphertext: bytes,
        ciphertext_sha256: bytes,
        keys: Sequence[WrappedKey],
    ) -> int:
        """Re-encryption under a new data key: keys released before become useless."""
        record = self._owned(actor, record_id)
        if self.repository.version(record_id, version) is None:
            raise RecordNotFound(f"record {record_id} has no version {version}")
        if len(ciphertext) > self.policy.max_ciphertext_bytes:
            raise PayloadTooLarge("ciphertext too large")
        if hashlib.sha256(ciphertext).digest() != ciphertext_sha256:
            raise InvalidUpload(
                "ciphertext does not match its SHA-256", code="ciphertext_hash_mismatch"
            )
        self._check_keys(record_id, version, record.patient_id, keys)
        holders = tuple(k.holder_id for k in keys)
        return self.repository.rotate(
            record_id,
            version,
            ciphertext,
            ciphertext_sha256,
            keys,
            lambda generation: [
                VersionRotated(
                    actor,
                    record_id,
                    version,
                    record.patient_id,
                    generation,
                    ciphertext_sha256,
                    len(ciphertext),
                    holders,
                )
            ],
        )

    def shred(self, actor: Actor, record_id: str) -> None:
        """Right to erasure: every ciphertext and wrapped key destroyed; hashes stay."""
        record = self._owned(actor, record_id)
        self.repository.shred(
            record_id,
            self.clock(),
            lambda destroyed, deleted: [
                RecordWasShredded(
                    actor, record_id, record.patient_id, record.category, destroyed, deleted
                )
            ],
        )

    # -- break-glass ------------------------------------------------------------------

    def break_glass(
        self,
        actor: Actor,
        patient_id: str,
        justification: str,
        categories: Sequence[Category],
        recipient_key_hex: str,
    ) -> BreakGlass:
        """Emergency access through the escrow key, limited in time, always announced."""
        provider = self._verified_provider(actor)
        text = justification.strip()
        if not self.policy.min_justification <= len(text) <= self.policy.max_justification:
            raise InvalidUpload(
                f"a justification has {self.policy.min_justification} to "
                f"{self.policy.max_justification} characters",
                code="invalid_justification",
            )
        patient = self.repository.account(patient_id)
        if patient is None or patient.role != Role.PATIENT:
            raise UnknownAccount(f"no patient {patient_id!r}", code="unknown_patient")
        try:
            raw = bytes.fromhex(recipient_key_hex)
        except ValueError:
            raw = b""
        if len(raw) != 32 or hashlib.sha256(raw).digest() != provider.encryption_key_sha256:
            raise InvalidUpload(
                "encryption_key is not the provider's registered key", code="wrong_encryption_key"
            )
        scope = tuple(dict.fromkeys(categories or list(Category)))
        now = self.clock()
        grant = BreakGlass(
            break_glass_id=str(uuid.uuid4()),
            provider_id=provider.account_id,
            patient_id=patient_id,
            justification=text,
            categories=scope,
            created_at=now,
            expires_at=now + self.policy.break_glass_seconds,
            keys_released=0,
        )
        released = [
            (
                record_id,
                version,
                WrappedKey(
                    provider.account_id,
                    self.escrow.rewrap(wrapped, record_id, version, recipient_key_hex),
                    grant.expires_at,
                ),
            )
            for record_id, version, wrapped in self.repository.escrow_keys(patient_id, scope)
        ]
        grant = replace(grant, keys_released=len(released))
        event = BreakGlassDeclared(
            actor, grant.break_glass_id, patient_id, scope, text, grant.expires_at
        )
        self.repository.open_break_glass(grant, released, [event])
        return grant
