"""Gas of every contract function, measured on the chain itself.

``run(results_dir)`` measures on the in-process EVM (Paris rules) and, when the
developer stack's Geth network is up (``make up``), on Geth as well; it writes
``bench/results/gas.json`` and returns the same figures. contracts/README.md
quotes them.

AuditAnchor is measured at tree sizes 1, 1,000 and 1,000,000 and for checkpoints
of N events ending at 1,000 and at 1,000,000 leaves: four in a row, because one
checkpoint in four also opens a new storage slot for the packed tree sizes.
Proofs come from the reference RFC 9162 tree of the contract tests
(``tests/contracts/merkle_reference.py``): leaf i is i as 8 big-endian bytes,
leaves are generated on demand and the hashes of complete subtrees are memoised,
so the 2^20-leaf tree costs about two million SHA-256 calls once (about 2 s)
instead of a million stored leaves.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from devstack.settings import StackSettings
from devstack.stack import Stack
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from services.platform.chain.artifacts import load_artifact
from services.platform.chain.geth import GethChain
from services.platform.chain.inprocess import InProcessChain
from services.platform.chain.port import Chain, DeployedContract, Receipt, TransactionReverted

TESTS_DIR = Path(__file__).resolve().parents[1] / "tests" / "contracts"
MILLION = 1_000_000
BATCHES = (1, 16, 128, 1024, 8192)
SIZES_PER_SLOT = 4  # AuditAnchor packs four uint64 tree sizes into one storage slot
PER_EVENT_BASELINES = {
    "one tx per event storing the hash": 44_000,
    "one tx per event logging it": 23_000,
}


def _load(name: str) -> ModuleType:
    """A module of the contract tests, loaded by path (the production Merkle log
    belongs to the ledger relay; until it exists the reference tree is used)."""
    spec = importlib.util.spec_from_file_location(f"_gas_{name}", TESTS_DIR / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


merkle = _load("merkle_reference")
eip712 = _load("eip712")


def _gas(receipt: Receipt) -> int:
    return receipt.gas_used


def measure_provider_registry(chain: Chain, admin: LocalAccount) -> dict[str, int]:
    registry = chain.deploy(load_artifact("ProviderRegistry"), admin, admin.address)
    role = keccak(text="REGISTRAR_ROLE")
    figures = {"deploy": _gas(registry.receipt)}
    figures["grantRole"] = _gas(
        chain.transact(registry, "grantRole", role, admin.address, sender=admin)
    )
    provider = chain.new_account(0).address
    figures["register"] = _gas(
        chain.transact(registry, "register", provider, os.urandom(32), os.urandom(32), sender=admin)
    )
    figures["suspend"] = _gas(chain.transact(registry, "suspend", provider, sender=admin))
    figures["reinstate"] = _gas(chain.transact(registry, "reinstate", provider, sender=admin))
    figures["revokeRole"] = _gas(
        chain.transact(registry, "revokeRole", role, admin.address, sender=admin)
    )
    figures["renounceRole (the admin's own)"] = _gas(
        chain.transact(registry, "renounceRole", b"\x00" * 32, admin.address, sender=admin)
    )
    return figures


def _time(chain: Chain, registry: DeployedContract) -> int:
    """Chain time as the contract sees it (reported by a refused, already expired grant)."""
    zero = "0x" + "11" * 20
    try:
        chain.call(registry, "grant", zero, zero, 1, 1, 0, 0, 0, b"")
    except TransactionReverted as error:
        return int(error.error_args["nowTime"])
    raise AssertionError("an expired grant was not refused")


def measure_consent_registry(chain: Chain, relayer: LocalAccount) -> dict[str, int]:
    registry = chain.deploy(load_artifact("ConsentRegistry"), relayer)
    patient = chain.new_account(0)
    grantee = chain.new_account(0).address
    figures = {"deploy": _gas(registry.receipt)}
    nonce = 0

    def submit(kind: str, categories: int) -> int:
        nonlocal nonce
        now = _time(chain, registry)
        message: Any
        if kind == "grant":
            message = eip712.GrantMessage(
                patient.address,
                grantee,
                categories,
                eip712.TREATMENT,
                now + 86_400,
                nonce,
                now + 3_600,
            )
        else:
            message = eip712.RevokeMessage(
                patient.address, grantee, categories, eip712.TREATMENT, nonce, now + 3_600
            )
        signature = eip712.sign(
            patient, message, chain_id=chain.chain_id, verifying_contract=registry.address
        )
        receipt = chain.transact(registry, kind, *message.args(), signature, sender=relayer)
        nonce += 1
        return _gas(receipt)

    figures["grant (first for the patient)"] = submit("grant", eip712.LABS | eip712.IMAGING)
    figures["grant (replacing a grant)"] = submit("grant", eip712.LABS | eip712.NOTES)
    figures["revoke (some categories)"] = submit("revoke", eip712.LABS)
    figures["revoke (the rest)"] = submit("revoke", eip712.ALL_CATEGORIES)
    return figures


def measure_audit_anchor(chain: Chain, admin: LocalAccount, tree: Any) -> dict[str, Any]:
    artifact = load_artifact("AuditAnchor")
    relay = keccak(text="RELAY_ROLE")

    def fresh() -> DeployedContract:
        anchor = chain.deploy(artifact, admin, admin.address)
        chain.transact(anchor, "grantRole", relay, admin.address, sender=admin)
        return anchor

    def anchor_to(anchor: DeployedContract, old: int, new: int) -> dict[str, float]:
        proof = tree.consistency_proof(old, new) if old else []
        receipt = chain.transact(anchor, "anchor", new, tree.root(new), proof, sender=admin)
        return {"from": old, "to": new, "proof_hashes": len(proof), "gas": receipt.gas_used}

    growth = fresh()
    figures: dict[str, Any] = {"deploy": _gas(growth.receipt)}
    figures["sizes"] = [
        anchor_to(growth, 0, 1),
        anchor_to(growth, 1, 1_000),
        anchor_to(growth, 1_000, MILLION),
        anchor_to(growth, MILLION, MILLION),  # heartbeat: same size, same root
    ]
    batches = []
    for at in (1_000, MILLION):
        for n in BATCHES:
            if SIZES_PER_SLOT * n >= at:
                continue
            # SIZES_PER_SLOT checkpoints in a row after the first: together they
            # open exactly one new slot for their sizes, so their mean is what a
            # long run of such checkpoints costs.
            anchor = fresh()
            first = at - SIZES_PER_SLOT * n
            anchor_to(anchor, 0, first)
            rows = [
                anchor_to(anchor, first + k * n, first + (k + 1) * n) for k in range(SIZES_PER_SLOT)
            ]
            mean = sum(row["gas"] for row in rows) / len(rows)
            batches.append(
                {
                    "from": first,
                    "to": at,
                    "events": n,
                    "proof_hashes": [row["proof_hashes"] for row in rows],
                    "gas": [row["gas"] for row in rows],
                    "gas_mean": round(mean),
                    "gas_per_event": round(mean / n, 1),
                }
            )
    figures["checkpoint_of_n_events"] = batches
    figures["per_event_baselines"] = PER_EVENT_BASELINES
    return figures


def measure(chain: Chain, tree: Any) -> dict[str, Any]:
    account = chain.new_account()
    return {
        "ProviderRegistry": measure_provider_registry(chain, account),
        "ConsentRegistry": measure_consent_registry(chain, account),
        "AuditAnchor": measure_audit_anchor(chain, account, tree),
    }


def _running_geth() -> GethChain | None:
    """A client of the developer stack's Geth network, or None when it is not up."""
    stack = Stack(StackSettings())
    servers = stack.status(["geth"])
    if not servers or any(s.state != "running" for s in servers):
        return None
    geth = stack.geth
    return GethChain(list(geth.rpc_urls), geth.chain_id, geth.faucet_private_key())


def run(results_dir: Path) -> dict[str, Any]:
    started = time.monotonic()
    tree = merkle.MerkleTree()
    tree.root(MILLION)  # fills the subtree memo once
    print(f"reference tree of {MILLION} leaves in {time.monotonic() - started:.1f} s")
    figures: dict[str, Any] = {}
    with InProcessChain() as inprocess:
        figures["inprocess"] = measure(inprocess, tree)
    geth = _running_geth()
    if geth is None:
        print("Geth network not running (make up): measured in process only")
    else:
        with geth:
            figures["geth"] = measure(geth, tree)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "gas.json").write_text(json.dumps(figures, indent=2) + "\n")
    for adapter, by_contract in figures.items():
        for contract, rows in by_contract.items():
            print(f"[{adapter}] {contract}: {json.dumps(rows)}")
    return figures


if __name__ == "__main__":
    run(Path(__file__).resolve().parent / "results")
