"""Post-install/upgrade hook: deploy the contracts once, grant roles, publish addresses.

Idempotent: when the `<release>-contracts` ConfigMap exists and every address in it
has code on the chain, nothing is sent. Otherwise the deployer (a key from the
chain-keys Secret) deploys ProviderRegistry, ConsentRegistry and AuditAnchor,
grants REGISTRAR_ROLE to identity's key and RELAY_ROLE to the relay's key, and
writes the addresses to the ConfigMap the services read.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from eth_account import Account
from web3 import Web3
from web3.middleware import ExtraDataToPOAMiddleware

ARTEFACTS = Path("/app/contracts/build")
KEYS = Path(os.environ.get("KEYS_DIR", "/keys"))


def connect(url: str, deadline_s: float = 600) -> Web3:
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    end = time.monotonic() + deadline_s
    while not w3.is_connected():
        if time.monotonic() > end:
            raise SystemExit(f"no chain at {url}")
        time.sleep(2)
    return w3


def send(w3: Web3, account, tx: dict) -> dict:
    tx = {
        **tx,
        "from": account.address,
        "nonce": w3.eth.get_transaction_count(account.address, "pending"),
        "chainId": w3.eth.chain_id,
    }
    tx.setdefault("gas", int(w3.eth.estimate_gas(tx) * 1.2))
    tx.setdefault("gasPrice", w3.eth.gas_price)
    signed = account.sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(signed.raw_transaction), timeout=300
    )
    if receipt["status"] != 1:
        raise SystemExit(f"transaction failed: {receipt['transactionHash'].hex()}")
    return receipt


def deploy(w3: Web3, account, name: str, *args) -> str:
    artefact = json.loads((ARTEFACTS / f"{name}.json").read_text())
    contract = w3.eth.contract(abi=artefact["abi"], bytecode=artefact["bytecode"])
    receipt = send(
        w3, account, contract.constructor(*args).build_transaction({"from": account.address})
    )
    return receipt["contractAddress"]


def grant(w3: Web3, account, name: str, address: str, role: str, grantee: str) -> None:
    abi = json.loads((ARTEFACTS / f"{name}.json").read_text())["abi"]
    contract = w3.eth.contract(address=address, abi=abi)
    role_id = Web3.keccak(text=role)
    if not contract.functions.hasRole(role_id, grantee).call():
        send(
            w3,
            account,
            contract.functions.grantRole(role_id, grantee).build_transaction(
                {"from": account.address}
            ),
        )


def main() -> None:
    import kube

    release = os.environ["RELEASE"]
    name = f"{release}-contracts"
    w3 = connect(os.environ["RPC_URL"])
    existing = kube.get("configmaps", name)
    if existing and all(
        len(w3.eth.get_code(Web3.to_checksum_address(a))) > 0 for a in existing["data"].values()
    ):
        print(f"{name} exists and every contract has code; nothing to do")
        return
    if existing:
        raise SystemExit(
            f"{name} names an address without code (a new chain?); delete it to redeploy"
        )
    key = lambda n: Account.from_key((KEYS / f"{n}.key").read_text().strip())  # noqa: E731
    deployer = key("deployer")
    addresses = {
        "provider_registry": deploy(w3, deployer, "ProviderRegistry", deployer.address),
        "consent_registry": deploy(w3, deployer, "ConsentRegistry"),
        "audit_anchor": deploy(w3, deployer, "AuditAnchor", deployer.address),
    }
    grant(
        w3,
        deployer,
        "ProviderRegistry",
        addresses["provider_registry"],
        "REGISTRAR_ROLE",
        key("identity").address,
    )
    grant(
        w3,
        deployer,
        "AuditAnchor",
        addresses["audit_anchor"],
        "RELAY_ROLE",
        key("ledger-relay").address,
    )
    kube.create(
        "configmaps",
        name,
        addresses,
        {"app.kubernetes.io/instance": release, "app.kubernetes.io/part-of": "ehr-ledger"},
    )
    print(f"deployed and published {addresses}")


if __name__ == "__main__":
    main()
