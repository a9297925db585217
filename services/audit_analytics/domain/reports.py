"""Compliance reports and a patient's own access report, as plain data; CSV and HTML renderings.

The HTML page is self-contained: charts are inline SVG (no templating or plotting library).
"""

from __future__ import annotations

import csv
import html
import io
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .model import AuditRecord, Finding

ACCESS_SUBTYPES = ("record_read", "read_denied", "break_glass_used")
CONSENT_SUBTYPES = ("granted", "revoked", "expired", "rejected")


def _when(at: datetime) -> str:
    return at.isoformat()


def _description(r: AuditRecord) -> str:
    e = r.entities[0] if r.entities else None
    if e is None:
        return ""
    version = f" v{e.version}" if e.version else ""
    return f"{e.category or 'record'} {e.kind} {e.id}{version}"


def disclosures(records: Sequence[AuditRecord]) -> dict[str, Any]:
    """Accounting of disclosures per patient (45 CFR 164.528): date, recipient, description,
    purpose; repeated disclosures to one recipient for one purpose summarised (first, last, count).
    """
    per_patient: dict[str, list[AuditRecord]] = defaultdict(list)
    for r in records:
        disclosed = r.subtype in ("record_read", "break_glass_used") and r.outcome == "success"
        if disclosed and r.actor_id and r.actor_id != r.patient_id:
            per_patient[r.patient_id].append(r)
    out: dict[str, Any] = {}
    for patient, reads in sorted(per_patient.items()):
        groups: dict[tuple[str, str, str], list[AuditRecord]] = defaultdict(list)
        for r in reads:
            groups[(r.actor_id, r.actor_role, r.purpose_of_use)].append(r)
        out[patient] = [
            {
                "first_date": _when(g[0].recorded_at),
                "last_date": _when(g[-1].recorded_at),
                "count": len(g),
                "recipient": actor,
                "recipient_role": role,
                "description": "; ".join(sorted({_description(r) for r in g})),
                "purpose": purpose,
                "event_ids": [r.event_id for r in g],
            }
            for (actor, role, purpose), g in sorted(groups.items())
        ]
    return out


def access_by_provider(records: Sequence[AuditRecord]) -> list[dict[str, Any]]:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    patients: dict[str, set[str]] = defaultdict(set)
    for r in records:
        if r.subtype in ACCESS_SUBTYPES:
            counts[r.actor_id][r.subtype] += 1
            patients[r.actor_id].add(r.patient_id)
    return [
        {
            "actor_id": actor,
            "reads": c["record_read"],
            "denied": c["read_denied"],
            "break_glass": c["break_glass_used"],
            "distinct_patients": len(patients[actor]),
        }
        for actor, c in sorted(counts.items())
    ]


def consent_changes(records: Sequence[AuditRecord]) -> list[dict[str, Any]]:
    return [
        {
            "date": _when(r.recorded_at),
            "change": r.subtype,
            "patient_id": r.patient_id,
            "grantee_id": r.extra.get("grantee_id", ""),
            "categories": r.extra.get("categories", []),
            "purpose": r.purpose_of_use,
            "outcome": r.outcome,
            "event_id": r.event_id,
        }
        for r in records
        if r.subtype in CONSENT_SUBTYPES
    ]


REVIEW_SUBTYPES = ("anomaly_reviewed", "break_glass_reviewed")


def break_glass_episodes(
    records: Sequence[AuditRecord],
    reviews: Mapping[str, tuple[str, str, datetime]],
    review_events: Mapping[tuple[str, str], str] | None = None,
) -> list[dict[str, Any]]:
    out = []
    for r in records:
        if r.subtype != "break_glass_used":
            continue
        bg = str(r.extra.get("break_glass_id", ""))
        review = reviews.get(bg)
        out.append(
            {
                "date": _when(r.recorded_at),
                "break_glass_id": bg,
                "actor_id": r.actor_id,
                "patient_id": r.patient_id,
                "justification_given": bool(r.justification.strip()),
                "review_status": "reviewed" if review else "pending",
                "disposition": review[0] if review else "",
                "reviewed_by": review[1] if review else "",
                "review_event_id": (review_events or {}).get(("break_glass", bg), ""),
                "event_id": r.event_id,
            }
        )
    return out


def reviews_logged(records: Sequence[AuditRecord]) -> list[dict[str, Any]]:
    """Evidence that the log was reviewed (45 CFR 164.312(b)): the review events."""
    return [
        {
            "date": _when(r.recorded_at),
            "kind": "anomaly" if r.subtype == "anomaly_reviewed" else "break_glass",
            "subject": r.entities[0].id if r.entities else "",
            "patient_id": r.patient_id,
            "disposition": str(r.extra.get("disposition", "")),
            "reviewed_by": r.actor_id,
            "event_id": r.event_id,
        }
        for r in records
        if r.subtype in REVIEW_SUBTYPES
    ]


def anomalies(
    findings: Sequence[Finding], review_events: Mapping[tuple[str, str], str] | None = None
) -> list[dict[str, Any]]:
    return [
        {
            "finding_id": f.finding_id,
            "rule": f.rule,
            "severity": f.severity,
            "account_id": f.account_id,
            "patient_id": f.patient_id,
            "detected_at": _when(f.detected_at),
            "disposition": f.disposition or "open",
            "reviewed_by": f.reviewed_by,
            "review_event_id": (review_events or {}).get(("anomaly", f.finding_id), ""),
            "evidence": list(f.event_ids),
        }
        for f in findings
    ]


def accesses_per_day(records: Sequence[AuditRecord]) -> dict[str, int]:
    days: Counter[str] = Counter()
    for r in records:
        if r.subtype in ACCESS_SUBTYPES:
            days[r.recorded_at.date().isoformat()] += 1
    return dict(sorted(days.items()))


def compliance_report(
    *,
    report_id: str,
    period: tuple[datetime, datetime],
    generated_at: datetime,
    generated_by: str,
    records: Sequence[AuditRecord],
    findings: Sequence[Finding],
    reviews: Mapping[str, tuple[str, str, datetime]],
    attestation: Mapping[str, Any],
    review_events: Mapping[tuple[str, str], str] | None = None,
) -> dict[str, Any]:
    return {
        "report_id": report_id,
        "kind": "compliance",
        "period": {"start": _when(period[0]), "end": _when(period[1])},
        "generated_at": _when(generated_at),
        "generated_by": generated_by,
        "events_covered": len(records),
        "disclosures": disclosures(records),
        "access_by_provider": access_by_provider(records),
        "consent_changes": consent_changes(records),
        "break_glass": break_glass_episodes(records, reviews, review_events),
        "anomalies": anomalies(findings, review_events),
        "reviews": reviews_logged(records),
        "accesses_per_day": accesses_per_day(records),
        "attestation": dict(attestation),
    }


def patient_access_report(
    *,
    report_id: str,
    patient_id: str,
    period: tuple[datetime, datetime],
    generated_at: datetime,
    records: Sequence[AuditRecord],
    attestation: Mapping[str, Any],
) -> dict[str, Any]:
    """Who read or was refused which of this patient's records, when, for what purpose."""
    accesses = [
        {
            "date": _when(r.recorded_at),
            "who": r.actor_id,
            "role": r.actor_role,
            "action": {"record_read": "read", "read_denied": "denied"}.get(
                r.subtype, "break_glass"
            ),
            "record": _description(r),
            "purpose": r.purpose_of_use,
            "reason": r.reason,
            "event_id": r.event_id,
        }
        for r in records
        if r.patient_id == patient_id and r.subtype in ACCESS_SUBTYPES
    ]
    return {
        "report_id": report_id,
        "kind": "access_report",
        "patient_id": patient_id,
        "period": {"start": _when(period[0]), "end": _when(period[1])},
        "generated_at": _when(generated_at),
        "accesses": accesses,
        "accesses_per_day": accesses_per_day([r for r in records if r.patient_id == patient_id]),
        "attestation": dict(attestation),
    }


# -- renderings -------------------------------------------------------------------------


def to_csv(report: Mapping[str, Any]) -> str:
    """One row per item: ``section`` then the item's fields as ``key=value`` columns."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["section", "field", "value"])
    writer.writerow(["report", "report_id", report["report_id"]])
    writer.writerow(["report", "period_start", report["period"]["start"]])
    writer.writerow(["report", "period_end", report["period"]["end"]])
    for section, rows in _sections(report):
        for index, row in enumerate(rows):
            for key, value in row.items():
                if isinstance(value, list):
                    value = " ".join(str(v) for v in value)
                writer.writerow([f"{section}[{index}]", key, value])
    for key, value in report.get("attestation", {}).items():
        writer.writerow(["attestation", key, value])
    return buffer.getvalue()


def _sections(report: Mapping[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    out: list[tuple[str, list[dict[str, Any]]]] = []
    if "disclosures" in report:
        rows = [
            {"patient_id": p, **row} for p, items in report["disclosures"].items() for row in items
        ]
        out.append(("disclosures", rows))
    for key in (
        "access_by_provider",
        "consent_changes",
        "break_glass",
        "anomalies",
        "reviews",
        "accesses",
    ):
        if key in report:
            out.append((key, list(report[key])))
    return out


def bar_chart_svg(title: str, values: Mapping[str, int], width: int = 640) -> str:
    """A horizontal bar chart as inline SVG."""
    bar, gap, label_w = 18, 6, 170
    height = 30 + len(values) * (bar + gap)
    top = max(values.values(), default=0) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="0" y="16" font-size="14" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(values.items()):
        y = 26 + i * (bar + gap)
        w = int((width - label_w - 60) * value / top)
        parts.append(
            f'<text x="0" y="{y + 13}" font-size="12">{html.escape(str(label))[:24]}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w}" height="{bar}" fill="#3b6ea5"/>'
            f'<text x="{label_w + w + 4}" y="{y + 13}" font-size="12">{value}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def to_html(report: Mapping[str, Any]) -> str:
    """A readable, self-contained page: summary, charts (inline SVG), tables, attestation."""
    e = html.escape
    title = "Access report" if report["kind"] == "access_report" else "Compliance report"
    body = [
        f"<h1>{title}</h1>",
        f"<p>Report {e(report['report_id'])}, period {e(report['period']['start'])} to "
        f"{e(report['period']['end'])}, generated {e(report['generated_at'])}.</p>",
        bar_chart_svg("Accesses per day", report.get("accesses_per_day", {})),
    ]
    if report.get("access_by_provider"):
        body.append(
            bar_chart_svg(
                "Reads per provider",
                {row["actor_id"]: row["reads"] for row in report["access_by_provider"][:30]},
            )
        )
    if report.get("anomalies"):
        body.append(
            bar_chart_svg(
                "Findings per rule", dict(Counter(a["rule"] for a in report["anomalies"]))
            )
        )
    for section, rows in _sections(report):
        body.append(f"<h2>{e(section.replace('_', ' ').capitalize())}</h2>")
        if not rows:
            body.append("<p>None.</p>")
            continue
        keys = [k for k in rows[0] if k not in ("event_ids", "evidence")]
        body.append("<table><tr>" + "".join(f"<th>{e(k)}</th>" for k in keys) + "</tr>")
        for row in rows:
            body.append(
                "<tr>" + "".join(f"<td>{e(str(row.get(k, '')))}</td>" for k in keys) + "</tr>"
            )
        body.append("</table>")
    body.append("<h2>Attestation</h2><table>")
    for key, value in report.get("attestation", {}).items():
        body.append(f"<tr><th>{e(key)}</th><td>{e(str(value))}</td></tr>")
    body.append("</table>")
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;margin-bottom:1em}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px;text-align:left}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )
