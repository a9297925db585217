"""Prometheus metrics of the relay, registered on the registry the app serves."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.leaves_appended = Counter(
            "ledger_leaves_appended", "Events appended as leaves of the log", registry=registry
        )
        self.duplicates_skipped = Counter(
            "ledger_duplicates_skipped", "Redelivered events already in the log", registry=registry
        )
        self.checkpoints_anchored = Counter(
            "ledger_checkpoints_anchored", "Checkpoints anchored on chain", registry=registry
        )
        self.anchoring_latency = Histogram(
            "ledger_anchoring_latency_seconds",
            "From a leaf's append to the receipt of the checkpoint covering it (oldest leaf)",
            buckets=(0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60),
            registry=registry,
        )
        self.lag = Gauge(
            "ledger_lag_events",
            "Leaves not yet covered by an anchored checkpoint",
            registry=registry,
        )
        self.tree_size = Gauge("ledger_tree_size", "Leaves in the log", registry=registry)
        self.gas_per_checkpoint = Histogram(
            "ledger_gas_per_checkpoint",
            "Gas used by one anchoring transaction",
            buckets=(50_000, 75_000, 100_000, 125_000, 150_000, 200_000, 300_000),
            registry=registry,
        )
        self.chain_errors = Counter(
            "ledger_chain_errors", "Failed chain operations", ["kind"], registry=registry
        )
