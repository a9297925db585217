"""The six-step scenario: what a newcomer runs to see the system do its job.

Every action goes through the SDK over HTTP, the way a person does it with the ``ehr``
CLI: keys are generated and used on this side only, records are encrypted here,
consent is signed here. The scenario talks to one gateway URL (``/identity``,
``/consent``, ``/records``, ``/ledger``, ``/audit``) and, to check anchoring
independently, to the chain (a ``CheckpointReader``: JSON-RPC on the real stack, the
in-process chain when everything runs in one process).

Steps: 1 data entry, 2 encryption, 3 access control, 4 auditor, 5 compliance reporting,
6 data sharing (every action in the log, anchored and verifiable). Any failed step or
verification raises ``ScenarioFailed``; ``Scenario.run`` returns a ``ScenarioResult``.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpx
from ehr_protocol.verify import CheckpointReader, verify_event
from rich.console import Console

from ehr_client.audit import ApiError, AuditClient, LedgerClient
from ehr_client.consent_client import ConsentClient, ConsentClientError
from ehr_client.identity import IdentityClient, IdentityClientError, Session
from ehr_client.keys import UserKeys
from ehr_client.records import (
    LABS_BIT,
    IdentityKeyDirectory,
    Recipient,
    RecordsClient,
    RecordsClientError,
)
from ehr_client.results import AuditEvent, InclusionProof, Verification

T = TypeVar("T")


class _Closeable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closeable)

TREATMENT, EMERGENCY, OWN = 1, 5, 6
# Refusals that only mean a service has not yet read identity's account events (the
# record store answers unknown_patient / unknown_holder for an account it has not seen,
# provider_verification_pending for a provider verified before it read the registration).
TRANSIENT_CODES = frozenset(
    {
        "unknown_account",
        "unknown_patient",
        "unknown_holder",
        "dependency_unavailable",
        "provider_verification_pending",
    }
)
# What the scenario's actions must have left in the log (event type suffixes).
EXPECTED_EVENTS = (
    "identity.account_registered",
    "identity.provider_verified",
    "identity.login_succeeded",
    "records.record_created",
    "records.keys_shared",
    "access.read_denied",
    "access.record_read",
    "access.break_glass_used",
    "consent.granted",
    "consent.revoked",
    "audit.anomaly_detected",
    "audit.anomaly_reviewed",
    "audit.break_glass_reviewed",
    "audit.report_generated",
)
ReaderFactory = Callable[[str], CheckpointReader]


class ScenarioFailed(Exception):
    """A step did not do what it must; the message says what and why."""


@dataclass(frozen=True)
class Endpoints:
    """Where each service is, behind one gateway."""

    gateway: str

    def of(self, service: str) -> str:
        return f"{self.gateway.rstrip('/')}/{service}"

    @property
    def root(self) -> str:
        return self.gateway.rstrip("/")


@dataclass
class Person:
    label: str
    role: str
    keys: UserKeys
    account_id: str = ""
    session: Session | None = None
    records: RecordsClient | None = None

    @property
    def recipient(self) -> Recipient:
        return Recipient(self.account_id, self.keys.public().encryption_key)

    def token(self, audience: str) -> str:
        assert self.session is not None, f"{self.label} is not logged in"
        return self.session.token(audience)

    def records_client(self) -> RecordsClient:
        assert self.records is not None, f"{self.label} has no records client"
        return self.records


@dataclass
class StepResult:
    number: int
    title: str
    ok: bool = False
    facts: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class ScenarioResult:
    steps: list[StepResult]
    report_html: Path | None = None
    report_json: Path | None = None
    summary_json: Path | None = None

    @property
    def ok(self) -> bool:
        return len(self.steps) == 6 and all(s.ok for s in self.steps)


def observation(
    patient_id: str, code: str, display: str, value: float, unit: str
) -> dict[str, Any]:
    """A FHIR R4 Observation (validated on the client before encryption)."""
    return {
        "resourceType": "Observation",
        "id": uuid.uuid4().hex[:16],
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "valueQuantity": {"value": value, "unit": unit},
    }


class Scenario:
    """Runs the six steps against ``endpoints`` as ``admin`` (whose address identity
    was configured to accept as its bootstrap administrator)."""

    def __init__(
        self,
        endpoints: Endpoints,
        admin_keys: UserKeys,
        reader_for: ReaderFactory,
        out_dir: Path,
        *,
        console: Console | None = None,
        timeout_s: float = 180.0,
    ) -> None:
        self.endpoints = endpoints
        self.reader_for = reader_for
        self.out_dir = out_dir
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.timeout_s = timeout_s
        self.started_at = datetime.now(UTC) - timedelta(seconds=5)
        self.admin = Person("Admin", "admin", admin_keys)
        suffix = uuid.uuid4().hex[:6]
        self.author = Person(f"Dr. Ada Grey ({suffix})", "provider", UserKeys.generate())
        self.other = Person(f"Dr. Ben Stone ({suffix})", "provider", UserKeys.generate())
        self.patient = Person(f"Pat Doe ({suffix})", "patient", UserKeys.generate())
        self.auditor = Person(f"Ida Audit ({suffix})", "auditor", UserKeys.generate())
        self.people = [self.admin, self.author, self.other, self.patient, self.auditor]
        self.record_ids: list[str] = []
        self.break_glass_event = ""
        self._stack = ExitStack()

    # -- plumbing ---------------------------------------------------------------------

    def say(self, text: str) -> None:
        self.console.print(f"  [green]✓[/green] {text}")

    def note(self, text: str) -> None:
        self.console.print(f"    [dim]{text}[/dim]")

    def wait_for(
        self, what: str, probe: Callable[[], tuple[bool, str]], timeout_s: float | None = None
    ) -> None:
        """Polls ``probe`` (done, progress text) until done; shows progress meanwhile."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        started = time.monotonic()
        last_print = started
        with self.console.status(f"{what}…") as status:
            while True:
                done, progress = probe()
                if done:
                    return
                now = time.monotonic()
                if now > deadline:
                    raise ScenarioFailed(f"timed out waiting for {what} ({progress})")
                status.update(f"{what}… {progress}")
                if not self.console.is_terminal and now - last_print >= 5:
                    self.console.print(f"    … {what}: {progress} ({now - started:.0f} s)")
                    last_print = now
                time.sleep(0.25)

    def retry_transient(self, what: str, call: Callable[[], T]) -> T:
        """Calls ``call`` until the services have caught up with identity's events
        (errors with a transient code), within the deadline."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return call()
            except (RecordsClientError, ConsentClientError, ApiError) as error:
                if error.code not in TRANSIENT_CODES or time.monotonic() > deadline:
                    raise ScenarioFailed(f"{what}: {error}") from error
            time.sleep(0.2)

    def client(self, factory: Callable[[], C]) -> C:
        created = factory()
        self._stack.callback(created.close)
        return created

    # -- the run ----------------------------------------------------------------------

    def run(self) -> ScenarioResult:
        steps = [
            (1, "Data entry: a verified provider uploads records", self.step_data_entry),
            (2, "Encryption: the servers only hold ciphertext", self.step_encryption),
            (3, "Access control: the patient grants and revokes", self.step_access_control),
            (4, "Auditor: search the log, verify against the chain", self.step_auditor),
            (5, "Compliance reporting, with anomalies", self.step_compliance),
            (6, "Data sharing: every action anchored and verifiable", self.step_anchored),
        ]
        results: list[StepResult] = []
        self.out_dir.mkdir(parents=True, exist_ok=True)
        result = ScenarioResult(results)
        with self._stack:
            self.identity = self.client(lambda: IdentityClient(self.endpoints.of("identity")))
            self.consent = self.client(lambda: ConsentClient(self.endpoints.root))
            for number, title, action in steps:
                step = StepResult(number, title)
                results.append(step)
                self.console.rule(f"[bold]Step {number}/6 · {title}")
                try:
                    step.facts = action()
                    step.ok = True
                except (ScenarioFailed, httpx.HTTPError, AssertionError) as error:
                    step.error = str(error) or type(error).__name__
                except (IdentityClientError, RecordsClientError, ConsentClientError) as error:
                    step.error = f"unexpected answer: {error}"
                except ApiError as error:
                    step.error = f"unexpected answer: {error}"
                if not step.ok:
                    self.console.print(f"  [red]✗ step {number} failed:[/red] {step.error}")
                    break
            result.report_html = self.out_dir / "compliance-report.html"
            result.report_json = self.out_dir / "compliance-report.json"
            if not result.report_html.exists():
                result.report_html = result.report_json = None
            result.summary_json = self.out_dir / "scenario.json"
            result.summary_json.write_text(
                json.dumps(
                    {
                        "ok": result.ok,
                        "gateway": self.endpoints.root,
                        "steps": [s.__dict__ for s in results],
                    },
                    indent=2,
                    default=str,
                )
            )
        self.console.rule()
        if result.ok:
            self.console.print("[bold green]All six steps passed.[/bold green]")
        else:
            self.console.print("[bold red]The scenario failed.[/bold red]")
        if result.report_html is not None:
            self.console.print(f"Compliance report (HTML): {result.report_html}")
        self.console.print(f"Scenario summary (JSON): {result.summary_json}")
        return result

    # -- step 1 -----------------------------------------------------------------------

    def _register(self, person: Person, admin_token: str | None) -> None:
        try:
            account = self.identity.register(
                person.keys, name=person.label, role=person.role, admin_token=admin_token
            )
            person.account_id = str(account["account_id"])
        except IdentityClientError as error:
            if error.code != "account_exists" or person is not self.admin:
                raise ScenarioFailed(f"registering {person.label}: {error}") from error
        person.session = self.identity.login(person.keys)
        person.account_id = person.session.account_id
        if person.session.role != person.role:
            raise ScenarioFailed(f"{person.label} logged in as {person.session.role}")

    def _records_client(self, person: Person) -> RecordsClient:
        return self.client(
            lambda: RecordsClient(
                self.endpoints.root,
                token=person.token("records"),
                keys=person.keys,
                account_id=person.account_id,
                directory=IdentityKeyDirectory(self.identity, person.token("identity")),
            )
        )

    def _register_service_account(self, admin_token: str) -> str:
        """Once per deployment: the admin registers the record store's service account
        from the signed registration the record store publishes."""
        registration = httpx.get(f"{self.endpoints.root}/records/service-registration", timeout=30)
        registration.raise_for_status()
        body = registration.json()
        try:
            created = self.identity.http.post(
                "/accounts", json=body, headers={"Authorization": f"Bearer {admin_token}"}
            )
        except httpx.HTTPError as error:
            raise ScenarioFailed(f"registering the record store's account: {error}") from error
        if created.status_code == 201:
            return "registered now"
        if created.status_code == 409:
            return "already registered"
        raise ScenarioFailed(f"registering the record store's account: {created.text[:300]}")

    def step_data_entry(self) -> dict[str, Any]:
        self._register(self.admin, None)
        admin_token = self.admin.token("identity")
        self.say(f"administrator logged in with a signed challenge ({self.admin.keys.address})")
        service = self._register_service_account(admin_token)
        self.say(f"record store's service account: {service}")
        for person in (self.author, self.other, self.patient):
            self._register(person, None)
            self.say(f"{person.role} {person.label} registered and logged in")
        self._register(self.auditor, admin_token)
        self.say(f"auditor {self.auditor.label} registered by the admin")
        verified = {}
        for provider in (self.author, self.other):
            answer = self.identity.verify_provider(
                admin_token, provider.account_id, "0x" + uuid.uuid4().hex * 2
            )
            status = answer.get("provider_status")
            if status != "verified":
                raise ScenarioFailed(f"{provider.label} is {status} after verification")
            verified[provider.account_id] = status
            self.say(f"admin verified {provider.label} in ProviderRegistry on chain")
        for person in (self.author, self.other, self.patient):
            person.records = self._records_client(person)
        uploads = [
            observation(self.patient.account_id, "2345-7", "Glucose", 5.4, "mmol/L"),
            observation(self.patient.account_id, "4548-4", "Hemoglobin A1c", 6.1, "%"),
        ]
        for resource in uploads:
            stored = self.retry_transient(
                "upload",
                lambda r=resource: self.author.records_client().upload(  # type: ignore[misc]
                    r, patient=self.patient.recipient, category="labs"
                ),
            )
            self.record_ids.append(stored.record_id)
            display = resource["code"]["coding"][0]["display"]
            self.say(f"{self.author.label} uploaded {display} as record {stored.record_id}")
        return {
            "accounts": {p.label: p.account_id for p in self.people},
            "records": list(self.record_ids),
            "provider_verification": verified,
        }

    # -- step 2 -----------------------------------------------------------------------

    def step_encryption(self) -> dict[str, Any]:
        patient = self.patient.records_client()
        answer = patient.fetch(self.record_ids[0], purpose=OWN)
        ciphertext = base64.b64decode(answer["ciphertext"])
        wrapped = base64.b64decode(answer["wrapped_key"])
        for marker in (b"Glucose", b"2345-7", b"mmol/L", self.patient.account_id.encode()):
            if marker in ciphertext:
                raise ScenarioFailed(f"the stored record contains {marker!r} in the clear")
        self.say(
            f"stored version is {len(ciphertext)} bytes of AES-256-GCM ciphertext: "
            f"{ciphertext[:16].hex()}…"
        )
        self.say(f"its data key is wrapped for the patient's X25519 key ({len(wrapped)} bytes)")
        opened = patient.open(answer)
        quantity = opened.resource["valueQuantity"]
        display = opened.resource["code"]["coding"][0]["display"]
        self.say(
            f"decrypted on the patient's client: {display} = "
            f"{quantity['value']} {quantity['unit']} "
            f"(provenance signed by {opened.author_address[:10]}…)"
        )
        return {"ciphertext_bytes": len(ciphertext), "wrapped_key_bytes": len(wrapped)}

    # -- step 3 -----------------------------------------------------------------------

    def _denied(self, person: Person, record_id: str, purpose: int) -> str:
        try:
            person.records_client().read(record_id, purpose=purpose)
        except RecordsClientError as error:
            if error.status != 403:
                raise ScenarioFailed(f"expected 403 for {person.label}, got {error}") from error
            return error.code
        raise ScenarioFailed(f"{person.label} could read record {record_id} without consent")

    def step_access_control(self) -> dict[str, Any]:
        record = self.record_ids[0]
        code = self._denied(self.other, record, TREATMENT)
        self.say(f"{self.other.label} asked for the record without consent: 403 {code}")

        grant = self.retry_transient(
            "grant",
            lambda: self.consent.grant(
                self.patient.keys,
                self.patient.token("consent"),
                patient_id=self.patient.account_id,
                grantee=self.other.keys.address,
                categories=LABS_BIT,
                purpose=TREATMENT,
                expires_in=7 * 24 * 3600,
            ),
        )
        self.say(
            f"{self.patient.label} signed an EIP-712 grant (labs, treatment) with their own key; "
            f"ConsentRegistry accepted it (grant {grant['grant_id']})"
        )
        shared = self.patient.records_client().share(self.other.recipient, categories=LABS_BIT)
        self.say(f"the patient's client wrapped {shared} data keys for {self.other.label}")
        opened = self.other.records_client().read(record, purpose=TREATMENT)
        value = opened.resource["valueQuantity"]["value"]
        if value != 5.4 or opened.basis != "consent":
            raise ScenarioFailed(f"unexpected read result {opened.resource} ({opened.basis})")
        self.say(f"{self.other.label} read and decrypted it: glucose {value} (basis: consent)")

        self.consent.revoke(
            self.patient.keys,
            self.patient.token("consent"),
            patient_id=self.patient.account_id,
            grantee=self.other.keys.address,
            categories=LABS_BIT,
            purpose=TREATMENT,
        )
        self.say(f"{self.patient.label} revoked the grant with another signature")
        code = self._denied(self.other, record, TREATMENT)
        self.say(f"{self.other.label} is refused again at once: 403 {code}")
        # the suspicious part: repeated attempts without consent after the revocation
        for other_record in self.record_ids:
            self._denied(self.other, other_record, TREATMENT)
        self.say(f"{self.other.label} kept trying both records without consent (refused)")

        declared = self.other.records_client().break_glass(
            self.patient.account_id,
            "Patient unconscious in the emergency department, suspected hypoglycaemia",
            ["labs"],
        )
        emergency = self.other.records_client().read(record, purpose=EMERGENCY)
        if emergency.basis != "break_glass":
            raise ScenarioFailed(f"break-glass read had basis {emergency.basis}")
        self.say(
            f"{self.other.label} used break-glass with a justification: "
            f"{declared['keys_released']} keys released from escrow, record read (emergency)"
        )
        return {
            "grant_id": grant["grant_id"],
            "keys_shared": shared,
            "break_glass": {k: v for k, v in declared.items() if k != "keys"},
        }

    # -- step 4 -----------------------------------------------------------------------

    def _events_of_scenario(self) -> list[AuditEvent]:
        audit = self.audit
        seen: dict[str, AuditEvent] = {}
        for event in audit.search(patient_id=self.patient.account_id, since=self.started_at):
            seen[event["id"]] = event
        for person in self.people:
            for event in audit.search(actor_id=person.account_id, since=self.started_at):
                seen[event["id"]] = event
        return sorted(seen.values(), key=lambda e: (e["recorded"], e["id"]))

    def _missing_types(self, events: list[AuditEvent], expected: tuple[str, ...]) -> list[str]:
        types = {e["type"] for e in events}
        return [t for t in expected if not any(f".{t}." in f".{x}" for x in types)]

    def _wait_logged(self, what: str, expected: tuple[str, ...]) -> list[AuditEvent]:
        """Waits until the scenario's events in the audit log include each ``expected``
        type; returns them."""
        events: list[AuditEvent] = []

        def logged() -> tuple[bool, str]:
            events[:] = self._events_of_scenario()
            missing = self._missing_types(events, expected)
            return not missing, f"{len(events)} events so far, waiting for {', '.join(missing)}"

        self.wait_for(what, logged)
        return events

    def step_auditor(self) -> dict[str, Any]:
        self.audit = self.client(
            lambda: AuditClient(self.endpoints.of("audit"), token=self.auditor.token("audit"))
        )
        self.ledger = self.client(
            lambda: LedgerClient(self.endpoints.of("ledger"), token=self.auditor.token("ledger"))
        )
        before_reports = tuple(t for t in EXPECTED_EVENTS if not t.startswith("audit."))
        events = self._wait_logged("the audit log to hold every action so far", before_reports)
        counts = Counter(e["type"] for e in events)
        self.say(f"the auditor found {len(events)} events of this scenario in the log:")
        for event_type, count in sorted(counts.items()):
            self.note(f"{count:3d} x {event_type}")
        denied = [e for e in events if e["type"].endswith("read_denied.v1")]
        self.say(
            f"{len(denied)} refused reads, each with outcome '{denied[0]['outcome']}' "
            f"and reason '{denied[0]['reason']}'"
        )
        if any("ciphertext" in json.dumps(e) for e in events):
            raise ScenarioFailed("an audit event carries record content")

        to_verify = [denied[0], next(e for e in events if e["type"].endswith("record_read.v1"))]
        verified: list[Verification] = []

        def anchored() -> tuple[bool, str]:
            verified.clear()
            for e in to_verify:
                try:
                    verified.append(self.audit.verify(e["id"]))
                except ApiError as error:
                    if error.code not in ("not_yet_anchored", "proofs_unavailable"):
                        raise ScenarioFailed(f"verifying {e['id']}: {error}") from error
            return len(verified) == len(to_verify), f"{len(verified)}/{len(to_verify)} anchored"

        self.wait_for("the ledger relay to anchor them", anchored)
        for v, e in zip(verified, to_verify, strict=True):
            if not v["verified"]:
                raise ScenarioFailed(f"verification failed for {e['id']}: {v}")
            self.say(
                f"verified {e['type']} against the root on chain "
                f"(leaf {v.get('leaf_index')}, checkpoint {v.get('checkpoint_index')}, "
                f"tx {str(v.get('tx_hash', ''))[:18]}…)"
            )
        reconciliation = self.audit.reconcile()
        if not reconciliation["ok"]:
            problems = {k: v for k, v in reconciliation["counts"].items() if v}
            raise ScenarioFailed(
                f"reconciliation found problems: {problems} {reconciliation['discrepancies'][:3]}"
            )
        self.say(
            f"reconciliation of {reconciliation['events']} stored events: "
            f"{reconciliation['anchored']} anchored with matching hashes, "
            f"{reconciliation['pending']} awaiting their checkpoint, "
            f"{reconciliation.get('not_logged', 0)} not yet in the relay's log; "
            "nothing missing, altered, "
            "reordered, inserted or duplicated"
        )
        return {
            "events": len(events),
            "by_type": dict(counts),
            "verified": verified,
            "reconciliation": {
                k: v for k, v in reconciliation.items() if not isinstance(v, list | dict)
            },
        }

    # -- step 5 -----------------------------------------------------------------------

    def step_compliance(self) -> dict[str, Any]:
        self.audit.detect()
        findings = [
            f
            for f in self.audit.anomalies()
            if f["account_id"] == self.other.account_id
            or f["patient_id"] == self.patient.account_id
        ]
        rules = sorted({f["rule"] for f in findings})
        if "access_without_consent" not in rules:
            raise ScenarioFailed(f"the refused attempts raised no finding (found: {rules})")
        self.say(f"anomaly detection flagged {len(findings)} findings: {', '.join(rules)}")
        suspicious = next(f for f in findings if f["rule"] == "access_without_consent")
        self.note(
            f"{suspicious['rule']}: {suspicious['explanation']} "
            f"(evidence: {len(suspicious['event_ids'])} events)"
        )
        self.audit.review(
            suspicious["finding_id"], "violation_confirmed", "attempts after the revocation"
        )
        self.say("the auditor reviewed the finding (disposition: violation_confirmed)")
        episodes = [
            e
            for e in self._events_of_scenario()
            if e["type"].endswith("break_glass_used.v1")
            and e["patient_id"] == self.patient.account_id
        ]
        if not episodes:
            raise ScenarioFailed("the break-glass episode is not in the log")
        self.break_glass_event = episodes[0]["id"]
        self.audit.review_break_glass(self.break_glass_event, "justified", "emergency admission")
        self.say("the auditor reviewed the break-glass episode (disposition: justified)")

        self._wait_anchored(self._events_of_scenario())
        until = datetime.now(UTC) + timedelta(minutes=1)
        report = self.audit.compliance_report(self.started_at, until, "json").json()
        html = self.audit.compliance_report(self.started_at, until, "html").text
        disclosures = report["disclosures"].get(self.patient.account_id, [])
        recipients = {d["recipient"] for d in disclosures}
        if self.other.account_id not in recipients:
            raise ScenarioFailed("the accounting of disclosures misses the consented read")
        episode = next(
            (b for b in report["break_glass"] if b["event_id"] == self.break_glass_event), None
        )
        if episode is None or episode["review_status"] != "reviewed":
            raise ScenarioFailed(f"break-glass episode not reported as reviewed: {episode}")
        attestation = report["attestation"]
        if attestation["events_failed"] or not attestation["checkpoint_matches_chain"]:
            raise ScenarioFailed(f"the report's attestation failed: {attestation}")
        (self.out_dir / "compliance-report.json").write_text(json.dumps(report, indent=2))
        (self.out_dir / "compliance-report.html").write_text(html)
        self.say(
            f"compliance report {report['report_id']}: {report['events_covered']} events, "
            f"{len(disclosures)} disclosure lines for the patient, "
            f"{len(report['break_glass'])} break-glass episodes, "
            f"{len(report['anomalies'])} anomalies"
        )
        self.note(
            f"attestation: checkpoint of {attestation.get('checkpoint_tree_size')} leaves, "
            f"anchor tx {str(attestation.get('anchor_transaction', ''))[:18]}…, "
            f"{attestation['events_verified']} events verified, "
            f"{attestation['events_pending']} awaiting their checkpoint, "
            f"{attestation['events_failed']} failed"
        )
        patient_audit = self.client(
            lambda: AuditClient(self.endpoints.of("audit"), token=self.patient.token("audit"))
        )
        own = patient_audit.my_access_report()
        actions = Counter(a["action"] for a in own["accesses"])
        involved = {self.other.account_id, self.author.account_id, self.patient.account_id}
        strangers = {a["who"] for a in own["accesses"]} - involved
        if strangers:
            raise ScenarioFailed(f"the patient's access report names other accounts: {strangers}")
        self.say(
            f"the patient's own access report: {actions['read']} reads, "
            f"{actions['denied']} refusals, {actions['break_glass']} break-glass"
        )
        return {
            "findings": [{"rule": f["rule"], "finding_id": f["finding_id"]} for f in findings],
            "report_id": report["report_id"],
            "attestation": attestation,
            "patient_access_report": dict(actions),
        }

    # -- step 6 -----------------------------------------------------------------------

    def _wait_anchored(self, events: list[AuditEvent]) -> dict[str, InclusionProof]:
        """Waits until the relay has an inclusion proof for each event; returns them."""
        proofs: dict[str, InclusionProof] = {}

        def all_anchored() -> tuple[bool, str]:
            for e in events:
                if e["id"] not in proofs:
                    proof = self.ledger.inclusion_proof(e["id"])
                    if proof is not None:
                        proofs[e["id"]] = proof
            return len(proofs) == len(events), f"{len(proofs)}/{len(events)} anchored"

        self.wait_for("the ledger relay to anchor every event", all_anchored)
        return proofs

    def step_anchored(self) -> dict[str, Any]:
        events = self._wait_logged("every action of the scenario in the log", EXPECTED_EVENTS)
        proofs = self._wait_anchored(events)
        contracts = {p["contract"]["address"] for p in proofs.values()}
        if len(contracts) != 1:
            raise ScenarioFailed(f"proofs name several anchor contracts: {contracts}")
        contract = contracts.pop()
        reader = self.reader_for(contract)
        checkpoints: set[tuple[int, str]] = set()
        for e in events:
            raw = self.audit.event(e["id"])["raw"]
            try:
                result = verify_event(raw, dict(proofs[e["id"]]), reader)
            except Exception as error:
                raise ScenarioFailed(f"event {e['id']} ({e['type']}) failed: {error}") from error
            checkpoints.add((result.checkpoint_index, result.tx_hash))
        self.say(
            f"all {len(events)} events of this scenario verified independently: their exact "
            f"bytes, inclusion proofs from the relay, and the roots read from the chain"
        )
        for index, tx in sorted(checkpoints):
            self.note(f"checkpoint {index} anchored by tx {tx}")
        return {
            "events_verified": len(events),
            "checkpoints": sorted(checkpoints),
            "anchor_contract": contract,
        }
