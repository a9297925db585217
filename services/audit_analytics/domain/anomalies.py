"""Anomaly rules over audit records: each finding names its rule, the evidence and a score.

Rules (``RULES``), thresholds in ``Thresholds``:

- ``access_without_consent``: a consent-based read with no active grant covering the
  category and purpose; or denied attempts for lack of consent (one finding per actor,
  patient and day);
- ``access_after_revocation``: a consent-based read after the grant was revoked;
- ``break_glass_without_justification``: empty, too short or boilerplate justification;
- ``break_glass_without_review``: an episode older than the review deadline, unreviewed;
- ``outside_working_hours``: a non-emergency read outside the provider's shift;
- ``volume_above_baseline``: a day's reads far above the actor's own median day;
- ``many_distinct_patients``: too many distinct patients within a short window;
- ``family_access``: the reader shares the patient's surname or address (demographics
  come from a directory: the events carry none);
- ``failed_login_burst``: many failed logins of one account in a short window;
- ``integrity_failure``: a reconciliation or verification failure.
"""

from __future__ import annotations

import statistics
import uuid
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .model import AuditRecord

RULES = (
    "access_without_consent",
    "access_after_revocation",
    "break_glass_without_justification",
    "break_glass_without_review",
    "outside_working_hours",
    "volume_above_baseline",
    "many_distinct_patients",
    "family_access",
    "failed_login_burst",
    "integrity_failure",
)

DETERMINISTIC_RULES = (
    "access_without_consent",
    "access_after_revocation",
    "break_glass_without_justification",
    "break_glass_without_review",
    "outside_working_hours",
    "family_access",
    "failed_login_burst",
)

FINDING_NAMESPACE = uuid.UUID("6f1c2a52-3d0e-4f5b-9a7c-2b8e4d1f0a99")

BOILERPLATE = frozenset(
    {"", "n/a", "na", "none", "test", "x", "-", ".", "emergency", "urgent", "asdf", "ok", "bg"}
)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Every threshold of the rules (``EHR_ANOMALY__...`` in the service settings)."""

    work_start_hour: int = 7
    work_end_hour: int = 19
    """Shift in UTC hours, ``[start, end)``; per-actor shifts override it."""
    shifts: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    volume_factor: float = 3.0
    volume_min_reads: int = 40
    volume_min_history_days: int = 3
    distinct_patients: int = 30
    distinct_window_minutes: int = 60
    failed_logins: int = 5
    failed_login_window_minutes: int = 10
    justification_min_chars: int = 12
    break_glass_review_hours: int = 72


@dataclass(frozen=True, slots=True)
class Person:
    surname: str = ""
    address: str = ""


@dataclass(frozen=True, slots=True)
class Candidate:
    rule: str
    severity: str
    patient_id: str
    account_id: str
    event_ids: tuple[str, ...]
    score: float
    explanation: str

    @property
    def finding_id(self) -> str:
        """Deterministic, so detecting twice over the same events finds nothing new."""
        key = f"{self.rule}|{self.account_id}|{self.patient_id}|{'|'.join(sorted(self.event_ids))}"
        return str(uuid.uuid5(FINDING_NAMESPACE, key))


@dataclass
class _Grant:
    grant_id: str
    categories: set[str]
    purpose: str
    expires_at: int
    revoked_at: datetime | None = None


_READS = ("record_read",)


def _is_consent_read(r: AuditRecord) -> bool:
    return r.subtype == "record_read" and r.extra.get("basis") == "consent"


def _category(r: AuditRecord) -> str:
    return r.entities[0].category if r.entities else ""


class Detector:
    """Runs every rule over records in time order."""

    def __init__(
        self,
        thresholds: Thresholds | None = None,
        directory: Mapping[str, Person] | None = None,
    ) -> None:
        self.t = thresholds or Thresholds()
        self.directory = directory or {}

    def detect(
        self,
        records: Iterable[AuditRecord],
        now: datetime,
        reviewed_break_glass: Iterable[str] = (),
    ) -> list[Candidate]:
        ordered = sorted(records, key=lambda r: (r.recorded_at, r.event_id))
        found: list[Candidate] = []
        found += self._consent(ordered)
        found += self._break_glass(ordered, now, set(reviewed_break_glass))
        found += self._hours(ordered)
        found += self._volume(ordered)
        found += self._distinct(ordered)
        found += self._family(ordered)
        found += self._logins(ordered)
        return found

    # -- consent ---------------------------------------------------------------------

    def _consent(self, ordered: Sequence[AuditRecord]) -> list[Candidate]:
        grants: dict[tuple[str, str], list[_Grant]] = defaultdict(list)
        denied: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        out: list[Candidate] = []
        for r in ordered:
            if r.subtype == "granted":
                grants[(r.patient_id, r.extra.get("grantee_id", ""))].append(
                    _Grant(
                        r.extra.get("grant_id", ""),
                        set(r.extra.get("categories", [])),
                        r.purpose_of_use,
                        int(r.extra.get("expires_at", 0)),
                    )
                )
            elif r.subtype in ("revoked", "expired"):
                remaining = set(r.extra.get("remaining_categories", []))
                for g in grants[(r.patient_id, r.extra.get("grantee_id", ""))]:
                    if g.grant_id == r.extra.get("grant_id") and g.revoked_at is None:
                        if remaining and r.subtype == "revoked":
                            g.categories = remaining
                        else:
                            g.revoked_at = r.recorded_at
            elif _is_consent_read(r) and r.outcome == "success":
                held = grants.get((r.patient_id, r.actor_id), [])
                seconds = r.recorded_at.timestamp()
                active = [
                    g
                    for g in held
                    if g.revoked_at is None
                    and _category(r) in g.categories
                    and (not g.purpose or g.purpose == r.purpose_of_use)
                    and (g.expires_at == 0 or g.expires_at > seconds)
                ]
                if active:
                    continue
                revoked = [g for g in held if g.revoked_at is not None]
                if revoked:
                    out.append(
                        Candidate(
                            "access_after_revocation",
                            "high",
                            r.patient_id,
                            r.actor_id,
                            (r.event_id,),
                            1.0,
                            f"read at {r.recorded_at.isoformat()} after the grant was revoked",
                        )
                    )
                else:
                    out.append(
                        Candidate(
                            "access_without_consent",
                            "high",
                            r.patient_id,
                            r.actor_id,
                            (r.event_id,),
                            1.0,
                            f"consent-based read of category {_category(r)} for "
                            f"{r.purpose_of_use} with no active grant covering it",
                        )
                    )
            elif r.subtype == "read_denied" and r.reason in (
                "no_grant",
                "grant_expired",
                "grant_revoked",
                "category_not_granted",
                "purpose_not_granted",
            ):
                day = r.recorded_at.date().isoformat()
                denied[(r.actor_id, r.patient_id, day)].append(r.event_id)
        for (actor, patient, day), ids in denied.items():
            out.append(
                Candidate(
                    "access_without_consent",
                    "medium",
                    patient,
                    actor,
                    tuple(ids),
                    min(1.0, 0.5 + 0.1 * len(ids)),
                    f"{len(ids)} attempt(s) on {day} refused for lack of an active grant",
                )
            )
        return out

    # -- break-glass -----------------------------------------------------------------

    def _break_glass(
        self, ordered: Sequence[AuditRecord], now: datetime, reviewed: set[str]
    ) -> list[Candidate]:
        out: list[Candidate] = []
        deadline = timedelta(hours=self.t.break_glass_review_hours)
        for r in ordered:
            if r.subtype != "break_glass_used":
                continue
            text = " ".join(r.justification.split()).lower()
            if (
                len(text) < self.t.justification_min_chars
                or text in BOILERPLATE
                or len(set(text.replace(" ", ""))) <= 3
            ):
                out.append(
                    Candidate(
                        "break_glass_without_justification",
                        "high",
                        r.patient_id,
                        r.actor_id,
                        (r.event_id,),
                        1.0,
                        f"break-glass with a justification of {len(text)} characters",
                    )
                )
            bg_id = str(r.extra.get("break_glass_id", ""))
            if (
                now - r.recorded_at > deadline
                and bg_id not in reviewed
                and r.event_id not in reviewed
            ):
                out.append(
                    Candidate(
                        "break_glass_without_review",
                        "medium",
                        r.patient_id,
                        r.actor_id,
                        (r.event_id,),
                        1.0,
                        f"break-glass {bg_id} not reviewed within "
                        f"{self.t.break_glass_review_hours} h",
                    )
                )
        return out

    # -- time and volume ---------------------------------------------------------------

    def _hours(self, ordered: Sequence[AuditRecord]) -> list[Candidate]:
        out: list[Candidate] = []
        for r in ordered:
            if r.subtype not in _READS or r.outcome != "success":
                continue
            if r.purpose_of_use == "emergency" or r.actor_role != "provider":
                continue
            start, end = self.t.shifts.get(
                r.actor_id, (self.t.work_start_hour, self.t.work_end_hour)
            )
            hour = r.recorded_at.astimezone(UTC).hour
            inside = start <= hour < end if start <= end else (hour >= start or hour < end)
            if not inside:
                out.append(
                    Candidate(
                        "outside_working_hours",
                        "low",
                        r.patient_id,
                        r.actor_id,
                        (r.event_id,),
                        0.7,
                        f"read at {r.recorded_at.astimezone(UTC).strftime('%H:%M')} UTC, "
                        f"shift {start:02d}-{end:02d}",
                    )
                )
        return out

    def _volume(self, ordered: Sequence[AuditRecord]) -> list[Candidate]:
        per_day: dict[str, dict[str, list[AuditRecord]]] = defaultdict(lambda: defaultdict(list))
        for r in ordered:
            if r.subtype in _READS and r.actor_role == "provider":
                per_day[r.actor_id][r.recorded_at.date().isoformat()].append(r)
        out: list[Candidate] = []
        for actor, days in per_day.items():
            history: list[int] = []
            for day in sorted(days):
                count = len(days[day])
                if len(history) >= self.t.volume_min_history_days:
                    baseline = statistics.median(history)
                    limit = max(self.t.volume_min_reads, self.t.volume_factor * baseline)
                    if count > limit:
                        reads = days[day]
                        out.append(
                            Candidate(
                                "volume_above_baseline",
                                "medium",
                                "",
                                actor,
                                tuple(r.event_id for r in reads),
                                min(1.0, count / (2 * limit)),
                                f"{count} reads on {day}, own median {baseline:g}/day",
                            )
                        )
                        continue  # a spike does not raise the baseline
                history.append(count)
        return out

    def _distinct(self, ordered: Sequence[AuditRecord]) -> list[Candidate]:
        window = timedelta(minutes=self.t.distinct_window_minutes)
        recent: dict[str, deque[AuditRecord]] = defaultdict(deque)
        quiet_until: dict[str, datetime] = {}
        out: list[Candidate] = []
        for r in ordered:
            if r.subtype not in _READS or r.actor_role != "provider":
                continue
            q = recent[r.actor_id]
            q.append(r)
            while q and r.recorded_at - q[0].recorded_at > window:
                q.popleft()
            if r.actor_id in quiet_until and r.recorded_at < quiet_until[r.actor_id]:
                continue
            patients = {x.patient_id for x in q}
            if len(patients) > self.t.distinct_patients:
                out.append(
                    Candidate(
                        "many_distinct_patients",
                        "medium",
                        "",
                        r.actor_id,
                        tuple(x.event_id for x in q),
                        min(1.0, len(patients) / (2 * self.t.distinct_patients)),
                        f"{len(patients)} distinct patients within "
                        f"{self.t.distinct_window_minutes} min",
                    )
                )
                quiet_until[r.actor_id] = _later(r.recorded_at, window)
        return out

    def _family(self, ordered: Sequence[AuditRecord]) -> list[Candidate]:
        """One finding per reader, patient and day, with every such access as evidence."""
        groups: dict[tuple[str, str, str], list[AuditRecord]] = defaultdict(list)
        why: dict[tuple[str, str, str], tuple[bool, bool]] = {}
        for r in ordered:
            if r.subtype not in (*_READS, "break_glass_used") or r.actor_id == r.patient_id:
                continue
            reader, patient = self.directory.get(r.actor_id), self.directory.get(r.patient_id)
            if reader is None or patient is None:
                continue
            same_name = bool(reader.surname) and (
                reader.surname.casefold() == patient.surname.casefold()
            )
            same_home = bool(reader.address) and (
                _address(reader.address) == _address(patient.address)
            )
            if same_name or same_home:
                key = (r.actor_id, r.patient_id, r.recorded_at.date().isoformat())
                groups[key].append(r)
                why[key] = (same_name, same_home)
        out: list[Candidate] = []
        for (actor, patient_id, day), reads in groups.items():
            same_name, same_home = why[(actor, patient_id, day)]
            out.append(
                Candidate(
                    "family_access",
                    "medium",
                    patient_id,
                    actor,
                    tuple(r.event_id for r in reads),
                    1.0 if same_home else 0.8,
                    f"{len(reads)} access(es) on {day}; the reader shares the patient's "
                    + (
                        "surname and address"
                        if same_name and same_home
                        else "surname"
                        if same_name
                        else "address"
                    ),
                )
            )
        return out

    def _logins(self, ordered: Sequence[AuditRecord]) -> list[Candidate]:
        window = timedelta(minutes=self.t.failed_login_window_minutes)
        recent: dict[str, deque[AuditRecord]] = defaultdict(deque)
        out: list[Candidate] = []
        for r in ordered:
            if r.subtype != "login_failed":
                continue
            account = str(r.extra.get("account_id") or r.actor_id)
            q = recent[account]
            q.append(r)
            while q and r.recorded_at - q[0].recorded_at > window:
                q.popleft()
            if len(q) >= self.t.failed_logins:
                out.append(
                    Candidate(
                        "failed_login_burst",
                        "medium",
                        "",
                        account,
                        tuple(x.event_id for x in q),
                        min(1.0, len(q) / (2 * self.t.failed_logins)),
                        f"{len(q)} failed logins within {self.t.failed_login_window_minutes} min",
                    )
                )
                q.clear()
        return out


def _later(at: datetime, delta: timedelta) -> datetime:
    """``at + delta``, or the last representable time when that is past the year 9999
    (an event may be dated up to the end of 9999)."""
    try:
        return at + delta
    except OverflowError:
        return datetime.max.replace(tzinfo=at.tzinfo)


def _address(value: str) -> str:
    return " ".join(value.casefold().replace(",", " ").split())
