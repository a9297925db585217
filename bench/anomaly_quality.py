"""Measured detection quality: ``python -m bench.anomaly_quality`` (also ``make bench``).

Generates the labelled synthetic workload, decodes every event as the audit store
does, runs the rules and prints precision and recall per rule and alerts per
10,000 accesses (``--json`` for the raw figures).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from bench.anomaly_workload import evaluate, generate
from services.audit_analytics.domain.anomalies import DETERMINISTIC_RULES, Detector
from services.audit_analytics.domain.model import BusPosition
from services.audit_analytics.domain.records import audit_record_of


def measure(seed: int = 7, providers: int = 30, days: int = 10) -> dict[str, Any]:
    started = time.perf_counter()
    workload = generate(seed=seed, providers=providers, days=days)
    records = [
        audit_record_of(raw, BusPosition("synthetic", 0, i)) for i, raw in enumerate(workload.raws)
    ]
    findings = Detector(directory=workload.directory).detect(
        records, workload.now, workload.reviewed_break_glass
    )
    result = evaluate(findings, workload)
    deterministic = [result["rules"][r]["recall"] for r in DETERMINISTIC_RULES]
    result["min_recall_deterministic"] = min(r for r in deterministic if r is not None)
    result["seconds"] = round(time.perf_counter() - started, 2)
    result["seed"] = seed
    return result


def run(results_dir: Path) -> dict[str, Any]:
    """``make bench``: the figures of the default workload, also in anomaly_quality.json."""
    result = measure()
    (results_dir / "anomaly_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"precision {result['overall_precision']:.3f}, "
        f"{result['alerts_per_10k_accesses']} alerts per 10,000 accesses"
    )
    return {k: v for k, v in result.items() if k != "rules"}


cli = typer.Typer(add_completion=False, help=__doc__)


@cli.command()
def main(
    seed: int = typer.Option(7, help="random seed of the workload"),
    providers: int = typer.Option(30, min=10),
    days: int = typer.Option(10, min=6),
    as_json: bool = typer.Option(False, "--json", help="print the figures as JSON"),
) -> None:
    """Precision and recall per rule on the labelled synthetic workload."""
    result = measure(seed, providers, days)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(
        f"{result['events']} events, {result['accesses']} accesses, "
        f"{result['findings']} findings = {result['alerts_per_10k_accesses']} per 10,000 accesses"
    )
    typer.echo(
        f"{'rule':36} {'violations':>10} {'found':>6} {'alerts':>6} {'precision':>9} {'recall':>7}"
    )
    for rule, row in result["rules"].items():
        precision = "-" if row["precision"] is None else f"{row['precision']:.3f}"
        recall = "-" if row["recall"] is None else f"{row['recall']:.3f}"
        typer.echo(
            f"{rule:36} {row['violations']:>10} {row['detected']:>6} {row['findings']:>6} "
            f"{precision:>9} {recall:>7}"
        )
    typer.echo(
        f"overall precision {result['overall_precision']:.3f}; "
        f"lowest recall of the deterministic rules {result['min_recall_deterministic']:.3f}"
    )


if __name__ == "__main__":
    cli()
