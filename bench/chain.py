"""Transactions per second and receipt latency of the two chain adapters.

For each adapter (in-process py-evm in memory, the same kept in a folder as the
embedded default keeps it, then the Geth Clique network) one sender
pipelines ``Probe.store`` transactions (nonces from the nonce manager, no wait
between sends) while a second thread collects the receipts in order. Latency is
from the start of ``send`` to the moment ``wait`` returns the receipt; throughput
is transactions over the time from the first send to the last receipt.

Run with ``python -m bench.chain`` (or through ``make bench``). Geth is started
through the local stack (``EHR_STACK__...`` settings) unless it already runs,
and stopped afterwards only if this run started it. Figures are printed and
written to ``bench/results/chain.json``.
"""

from __future__ import annotations

import json
import os
import queue
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from devstack.settings import StackSettings
from devstack.stack import Stack

from services.platform.chain.artifacts import load_artifact
from services.platform.chain.geth import GethChain
from services.platform.chain.inprocess import InProcessChain
from services.platform.chain.port import Chain

GETH_TRANSACTIONS = int(os.environ.get("EHR_BENCH_CHAIN_GETH_TX", "200"))
INPROCESS_TRANSACTIONS = int(os.environ.get("EHR_BENCH_CHAIN_INPROCESS_TX", "100"))
TIME_LIMIT_S = 90.0  # per adapter: sending stops then, and so does waiting


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(chain: Chain, label: str, transactions: int) -> dict[str, Any]:
    """Pipelines ``transactions`` ``Probe.store`` calls from one sender; returns the figures."""
    sender = chain.new_account(10**20)
    probe = chain.deploy(load_artifact("Probe"), sender)
    sent: queue.Queue[tuple[str, float] | None] = queue.Queue()
    latencies: list[float] = []
    gas: list[int] = []
    blocks: set[int] = set()
    failures: list[str] = []
    deadline = time.perf_counter() + TIME_LIMIT_S

    def collect() -> None:
        while (item := sent.get()) is not None:
            tx_hash, started = item
            try:
                receipt = chain.wait(tx_hash, timeout_s=max(1.0, deadline - time.perf_counter()))
            except Exception as exc:  # recorded and reported, the run goes on
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - started)
            gas.append(receipt.gas_used)
            blocks.add(receipt.block_number)

    collector = threading.Thread(target=collect, name=f"bench-chain-{label}")
    collector.start()
    first_send = time.perf_counter()
    count = 0
    while count < transactions and time.perf_counter() < deadline:
        started = time.perf_counter()
        sent.put((chain.send(probe, "store", count % 1000, sender=sender), started))
        count += 1
    send_s = time.perf_counter() - first_send
    sent.put(None)
    collector.join()
    total_s = time.perf_counter() - first_send
    confirmed = len(latencies)
    return {
        "adapter": label,
        "sent": count,
        "confirmed": confirmed,
        "failed": len(failures),
        "first_failures": failures[:3],
        "send_tx_per_s": round(count / send_s, 1),
        "confirmed_tx_per_s": round(confirmed / total_s, 1),
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "latency_p95_ms": round(_percentile(latencies, 0.95) * 1000, 1) if latencies else None,
        "latency_max_ms": round(max(latencies) * 1000, 1) if latencies else None,
        "blocks": len(blocks),
        "gas_per_tx": round(statistics.mean(gas)) if gas else None,
        "seconds": round(total_s, 2),
    }


def _geth_running(stack: Stack) -> bool:
    try:
        return all(stack.geth.node_healthy(i) for i in range(len(stack.geth.rpc_urls)))
    except Exception:  # nothing listens yet
        return False


def run(results_dir: Path) -> dict[str, Any]:
    """Runs the benchmark, prints a table and writes ``chain.json`` into ``results_dir``."""
    rows = []
    with InProcessChain() as inprocess:
        rows.append(measure(inprocess, "inprocess", INPROCESS_TRANSACTIONS))
    with tempfile.TemporaryDirectory() as kept, InProcessChain(Path(kept)) as durable:
        rows.append(measure(durable, "kept", INPROCESS_TRANSACTIONS))
    stack = Stack(StackSettings())
    started_here = not _geth_running(stack)
    if started_here:
        stack.up(["geth"])
    try:
        geth = stack.geth
        with GethChain(geth.rpc_urls, geth.chain_id, geth.faucet_private_key()) as chain:
            rows.append(measure(chain, "geth", GETH_TRANSACTIONS))
    finally:
        if started_here:
            stack.down(["geth"])
    print(
        f"{'adapter':<10}{'sent':>6}{'ok':>6}{'send tx/s':>11}{'tx/s':>8}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'blocks':>8}{'gas/tx':>8}"
    )
    for row in rows:
        print(
            f"{row['adapter']:<10}{row['sent']:>6}{row['confirmed']:>6}"
            f"{row['send_tx_per_s']:>11}{row['confirmed_tx_per_s']:>8}"
            f"{row['latency_p50_ms']!s:>9}{row['latency_p95_ms']!s:>9}"
            f"{row['blocks']:>8}{row['gas_per_tx']!s:>8}"
        )
    report = {
        "benchmark": "chain",
        "workload": "Probe.store pipelined from one sender, receipts collected in order",
        "results": rows,
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "chain.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    run(Path(__file__).resolve().parent / "results")
