"""A labelled synthetic workload: ordinary clinical work plus injected violations of every rule,
including evasive ones (just past a threshold, near a boundary, disguised text).

Events are real envelopes (exact bytes), decoded by the same code as the audit store.
Results on synthetic data do not transfer to real hospitals: the ordinary behaviour here is
a model, and real work has explanations (care relationships, encounters) it lacks.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ehr.access.v1 import access_pb2
from ehr.consent.v1 import consent_pb2
from ehr.identity.v1 import identity_pb2
from ehr.vocabulary.v1 import vocabulary_pb2 as v
from google.protobuf.message import Message

from services.audit_analytics.domain.anomalies import RULES, Candidate, Person
from services.audit_analytics.domain.model import BusPosition
from services.audit_analytics.domain.records import audit_record_of
from services.platform.events.envelope import Actor, encode, new_envelope

START = datetime(2026, 2, 2, tzinfo=UTC)
LAB, MEDS = v.RECORD_CATEGORY_LABORATORY, v.RECORD_CATEGORY_MEDICATION


@dataclass
class Workload:
    raws: list[bytes] = field(default_factory=list)
    labels: dict[str, list[frozenset[str]]] = field(default_factory=lambda: defaultdict(list))
    directory: dict[str, Person] = field(default_factory=dict)
    reviewed_break_glass: set[str] = field(default_factory=set)
    now: datetime = START
    accesses: int = 0


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.w = Workload()

    def _emit(self, payload: Message, actor: str, role: v.Role.ValueType, at: datetime) -> str:
        envelope = new_envelope(
            payload, source="synthetic", actor=Actor(id=actor, role=role), time=at
        )
        raw = encode(envelope)
        self.w.raws.append(raw)
        return envelope.id

    def grant(self, patient: str, provider: str, grant: str, at: datetime) -> str:
        scope = consent_pb2.GrantScope(
            grantee_id=provider, categories=[LAB], purpose=v.PURPOSE_OF_USE_TREATMENT
        )
        payload = consent_pb2.ConsentGranted(grant_id=grant, patient_id=patient, scope=scope)
        return self._emit(payload, patient, v.ROLE_PATIENT, at)

    def revoke(self, patient: str, provider: str, grant: str, at: datetime) -> str:
        scope = consent_pb2.GrantScope(
            grantee_id=provider, categories=[LAB], purpose=v.PURPOSE_OF_USE_TREATMENT
        )
        payload = consent_pb2.ConsentRevoked(grant_id=grant, patient_id=patient, scope=scope)
        return self._emit(payload, patient, v.ROLE_PATIENT, at)

    def read(
        self,
        patient: str,
        provider: str,
        at: datetime,
        category: v.RecordCategory.ValueType = LAB,
        purpose: v.PurposeOfUse.ValueType = v.PURPOSE_OF_USE_TREATMENT,
    ) -> str:
        self.w.accesses += 1
        payload = access_pb2.RecordRead(
            record_id=f"rec-{patient}-{category}",
            version=1,
            patient_id=patient,
            reader_id=provider,
            reader_role=v.ROLE_PROVIDER,
            category=category,
            purpose=purpose,
            basis=access_pb2.ACCESS_BASIS_CONSENT,
            grant_id=f"g-{patient}-{provider}",
        )
        return self._emit(payload, provider, v.ROLE_PROVIDER, at)

    def denied(self, patient: str, provider: str, at: datetime) -> str:
        self.w.accesses += 1
        payload = access_pb2.ReadDenied(
            record_id=f"rec-{patient}-1",
            patient_id=patient,
            reader_id=provider,
            reader_role=v.ROLE_PROVIDER,
            category=LAB,
            purpose=v.PURPOSE_OF_USE_TREATMENT,
            reason=access_pb2.DENIAL_REASON_NO_GRANT,
            outcome=v.OUTCOME_MINOR_FAILURE,
        )
        return self._emit(payload, provider, v.ROLE_PROVIDER, at)

    def break_glass(self, patient: str, provider: str, at: datetime, text: str) -> tuple[str, str]:
        self.w.accesses += 1
        bg = f"bg-{self.rng.getrandbits(48):012x}"
        payload = access_pb2.BreakGlassUsed(
            break_glass_id=bg,
            patient_id=patient,
            reader_id=provider,
            reader_role=v.ROLE_PROVIDER,
            categories=[LAB],
            justification=text,
        )
        return self._emit(payload, provider, v.ROLE_PROVIDER, at), bg

    def login(self, account: str, at: datetime, ok: bool = True) -> str:
        payload: Message
        if ok:
            payload = identity_pb2.LoginSucceeded(account_id=account, role=v.ROLE_PROVIDER)
        else:
            payload = identity_pb2.LoginFailed(
                account_id=account,
                reason=identity_pb2.LOGIN_FAILURE_REASON_BAD_SIGNATURE,
                outcome=v.OUTCOME_MINOR_FAILURE,
            )
        return self._emit(payload, account, v.ROLE_PROVIDER, at)

    def label(self, rule: str, *event_ids: str) -> None:
        self.w.labels[rule].append(frozenset(event_ids))


GOOD_REASONS = (
    "unconscious patient arrived by ambulance, no consent possible",
    "cardiac arrest in ward 4, allergy list needed immediately",
    "patient in theatre, anaesthetist needs current medication",
)


def generate(
    seed: int = 7,
    providers: int = 30,
    patients_per_provider: int = 12,
    days: int = 10,
    reads_per_day: int = 14,
) -> Workload:
    """Ordinary work for ``days`` days plus injected violations (labels) of every rule."""
    b = _Builder(seed)
    rng = b.rng
    names = [f"surname{i:04d}" for i in range(5000)]
    staff = [f"prov-{i:03d}" for i in range(providers)]
    panel: dict[str, list[str]] = {}
    for p_index, provider in enumerate(staff):
        b.w.directory[provider] = Person(rng.choice(names), f"{p_index} staff road")
        panel[provider] = []
        for j in range(patients_per_provider):
            patient = f"pat-{p_index:03d}-{j:02d}"
            b.w.directory[patient] = Person(rng.choice(names), f"{p_index * 100 + j} patient lane")
            panel[provider].append(patient)
            b.grant(patient, provider, f"g-{patient}-{provider}", START - timedelta(days=1))

    def shift_time(day: int) -> datetime:
        return START + timedelta(days=day, hours=rng.uniform(7.2, 18.8))

    # Ordinary work.
    for day in range(days):
        for provider in staff:
            b.login(provider, START + timedelta(days=day, hours=7, minutes=rng.randint(0, 50)))
            if rng.random() < 0.1:  # an ordinary typo: one or two failures, then success
                at = START + timedelta(days=day, hours=12)
                for k in range(rng.randint(1, 2)):
                    b.login(provider, at + timedelta(minutes=k), ok=False)
            for _ in range(max(1, int(rng.gauss(reads_per_day, 3)))):
                b.read(rng.choice(panel[provider]), provider, shift_time(day))
            if rng.random() < 0.05:
                event_id, bg = b.break_glass(
                    rng.choice(panel[provider]), provider, shift_time(day), rng.choice(GOOD_REASONS)
                )
                b.w.reviewed_break_glass.add(bg)

    last = days - 1
    victims = iter(staff)

    def other_patient(provider: str) -> str:
        return rng.choice(panel[rng.choice([s for s in staff if s != provider])])

    # access_without_consent: no grant; evasive: granted patient, category not granted;
    # refused attempts.
    for _ in range(6):
        p = rng.choice(staff)
        b.label(
            "access_without_consent", b.read(other_patient(p), p, shift_time(rng.randrange(days)))
        )
    for _ in range(4):
        p = rng.choice(staff)
        b.label(
            "access_without_consent",
            b.read(rng.choice(panel[p]), p, shift_time(rng.randrange(days)), category=MEDS),
        )
    for _ in range(4):
        p = rng.choice(staff)
        target, day = other_patient(p), rng.randrange(days)
        b.label(
            "access_without_consent",
            *[b.denied(target, p, shift_time(day)) for _ in range(rng.randint(1, 3))],
        )

    # access_after_revocation; evasive: one second after the revocation.
    for k in range(8):
        p = rng.choice(staff)
        patient = panel[p][k % patients_per_provider]
        at = START + timedelta(days=last, hours=18, minutes=49)  # after the day's ordinary work
        b.revoke(patient, p, f"g-{patient}-{p}", at)
        b.label(
            "access_after_revocation",
            b.read(patient, p, at + timedelta(seconds=1 if k % 2 else 600)),
        )
        panel[p] = [x for x in panel[p] if x != patient] or panel[p]

    # break-glass without justification; evasive: boilerplate, whitespace, one letter repeated.
    for text in ("", "   ", "emergency", " n/a ", "xxxxxxxxxxxxxxxx", "ok", "urgent", "asdf"):
        p = rng.choice(staff)
        event_id, bg = b.break_glass(rng.choice(panel[p]), p, shift_time(rng.randrange(days)), text)
        b.w.reviewed_break_glass.add(bg)
        b.label("break_glass_without_justification", event_id)

    # break-glass without review (justified, but nobody reviewed it within 72 h).
    for _ in range(6):
        p = rng.choice(staff)
        event_id, _bg = b.break_glass(
            rng.choice(panel[p]), p, shift_time(rng.randrange(days - 4)), rng.choice(GOOD_REASONS)
        )
        b.label("break_glass_without_review", event_id)

    # outside working hours; evasive: minutes outside the shift.
    for hour, minute in ((2, 10), (23, 30), (19, 4), (6, 55), (4, 0), (21, 15)):
        p = rng.choice(staff)
        at = START + timedelta(days=rng.randrange(days), hours=hour, minutes=minute)
        b.label("outside_working_hours", b.read(rng.choice(panel[p]), p, at))

    # volume far above the actor's own baseline; evasive: just over 3x the median.
    for factor in (8, 3.6):
        p = next(victims)
        day = last
        ids = [
            b.read(rng.choice(panel[p]), p, shift_time(day))
            for _ in range(int(reads_per_day * factor))
        ]
        b.label("volume_above_baseline", *ids)

    # many distinct patients in a short window (a ward account with many grants);
    # evasive: just over the threshold, spread over most of the window.
    for count, minutes in ((45, 30), (33, 55)):
        p = next(victims)
        ward = [f"ward-{p}-{i:02d}" for i in range(count)]
        for patient in ward:
            b.w.directory[patient] = Person(rng.choice(names), f"{patient} ward road")
            b.grant(patient, p, f"g-{patient}-{p}", START - timedelta(days=1))
        at = START + timedelta(days=last - 1, hours=9)
        b.label(
            "many_distinct_patients",
            *[
                b.read(patient, p, at + timedelta(minutes=minutes * i / count))
                for i, patient in enumerate(ward)
            ],
        )

    # family: same surname; evasive: same address written differently, surname in capitals.
    for kind in ("surname", "address", "caps"):
        p = next(victims)
        patient = panel[p][0]
        mine = b.w.directory[p]
        if kind == "surname":
            b.w.directory[patient] = Person(mine.surname, "elsewhere 1")
        elif kind == "address":
            b.w.directory[patient] = Person("different", mine.address.upper().replace(" ", ",  "))
        else:
            b.w.directory[patient] = Person(mine.surname.upper(), "elsewhere 2")
        for d in range(days):
            b.read(patient, p, shift_time(d))
        # every read of that patient by that provider (ordinary ones too) is the violation
        b.label("family_access", *_reads_of(b.w.raws, patient, p))

    # failed-login bursts; evasive: exactly the threshold, spread over 9 minutes.
    for count, minutes in ((8, 3), (5, 9)):
        p = rng.choice(staff)
        at = START + timedelta(days=rng.randrange(days), hours=3)
        b.label(
            "failed_login_burst",
            *[
                b.login(p, at + timedelta(minutes=minutes * i / count), ok=False)
                for i in range(count)
            ],
        )

    b.w.now = START + timedelta(days=days)
    return b.w


def _reads_of(raws: list[bytes], patient: str, provider: str) -> list[str]:
    out = []
    for raw in raws:
        r = audit_record_of(raw, BusPosition("synthetic", 0, 0))
        if r.subtype == "record_read" and r.patient_id == patient and r.actor_id == provider:
            out.append(r.event_id)
    return out


def evaluate(findings: list[Candidate], workload: Workload) -> dict[str, Any]:
    """Precision and recall per rule, alerts per 10,000 accesses."""
    per_rule: dict[str, Any] = {}
    tp_total = fp_total = 0
    for rule in RULES:
        if rule == "integrity_failure":
            continue
        labels = workload.labels.get(rule, [])
        mine = [f for f in findings if f.rule == rule]
        flagged = set().union(*[set(f.event_ids) for f in mine]) if mine else set()
        tp = sum(1 for f in mine if any(set(f.event_ids) & lab for lab in labels))
        fp = len(mine) - tp
        detected = sum(1 for lab in labels if lab & flagged)
        tp_total, fp_total = tp_total + tp, fp_total + fp
        per_rule[rule] = {
            "violations": len(labels),
            "detected": detected,
            "findings": len(mine),
            "precision": round(tp / len(mine), 3) if mine else None,
            "recall": round(detected / len(labels), 3) if labels else None,
        }
    return {
        "events": len(workload.raws),
        "accesses": workload.accesses,
        "findings": len(findings),
        "alerts_per_10k_accesses": round(len(findings) / max(1, workload.accesses) * 10_000, 1),
        "overall_precision": round(tp_total / max(1, tp_total + fp_total), 3),
        "rules": per_rule,
    }
