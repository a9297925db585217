"""Pre-install hook: the chain's keys (Secret) and genesis (ConfigMap), made once.

Keys never pass through values: they are generated here, inside the cluster, and
kept in a Secret. A second run (upgrade, re-install) finds the Secret and the
ConfigMap and changes nothing. The genesis follows deploy/local/devstack/geth.py:
Clique, forks up to London at 0, signers in extraData, every key funded.
"""

from __future__ import annotations

import json
import os
import secrets

from eth_account import Account

ACCOUNTS = ("deployer", "identity", "consent", "ledger-relay", "record-store")
BALANCE_WEI = 10**24


def genesis(chain_id: int, period: int, sealers: list[str], funded: list[str]) -> dict[str, object]:
    signers = "".join(a.lower().removeprefix("0x") for a in sorted(sealers, key=str.lower))
    forks = [
        "homestead",
        "eip150",
        "eip155",
        "eip158",
        "byzantium",
        "constantinople",
        "petersburg",
        "istanbul",
        "muirGlacier",
        "berlin",
        "london",
        "arrowGlacier",
        "grayGlacier",
    ]
    config: dict[str, object] = {"chainId": chain_id, **{f"{f}Block": 0 for f in forks}}
    config["clique"] = {"period": period, "epoch": 30000}
    return {
        "config": config,
        "difficulty": "0x1",
        "gasLimit": "0x1c9c380",
        "extraData": "0x" + "00" * 32 + signers + "00" * 65,
        "alloc": {a.lower().removeprefix("0x"): {"balance": hex(BALANCE_WEI)} for a in funded},
    }


def static_nodes_toml(node_pubkeys: list[str], release: str, port: int) -> str:
    urls = [
        f'"enode://{key}@{release}-geth-{i}.{release}-geth-headless:{port}"'
        for i, key in enumerate(node_pubkeys)
    ]
    return "[Node.P2P]\nStaticNodes = [" + ", ".join(urls) + "]\n"


def make(
    release: str, chain_id: int, period: int, sealers: int, p2p_port: int
) -> tuple[dict[str, str], dict[str, str]]:
    """(Secret data, ConfigMap data) for a new chain."""
    from eth_keys import keys

    secret: dict[str, str] = {"password": secrets.token_hex(16)}
    sealer_addresses, node_pubkeys = [], []
    for index in range(sealers):
        sealer = Account.create()
        secret[f"sealer-{index}.key"] = sealer.key.hex().removeprefix("0x")
        sealer_addresses.append(sealer.address)
        node_key = secrets.token_bytes(32)
        secret[f"node-{index}.key"] = node_key.hex()
        node_pubkeys.append(keys.PrivateKey(node_key).public_key.to_hex().removeprefix("0x"))
    funded = list(sealer_addresses)
    for name in ACCOUNTS:
        account = Account.create()
        secret[f"{name}.key"] = account.key.hex().removeprefix("0x")
        funded.append(account.address)
    secret["record-store-escrow.key"] = secrets.token_hex(32)
    config = {
        "genesis.json": json.dumps(genesis(chain_id, period, sealer_addresses, funded), indent=2),
        "config.toml": static_nodes_toml(node_pubkeys, release, p2p_port),
        "sealers": ",".join(sealer_addresses),
    }
    return secret, config


def main() -> None:
    import kube

    release = os.environ["RELEASE"]
    secret_name, config_name = f"{release}-chain-keys", f"{release}-genesis"
    labels = {"app.kubernetes.io/instance": release, "app.kubernetes.io/part-of": "ehr-ledger"}
    if kube.get("secrets", secret_name) and kube.get("configmaps", config_name):
        print(f"{secret_name} and {config_name} exist; nothing to do")
        return
    if kube.get("secrets", secret_name) or kube.get("configmaps", config_name):
        raise SystemExit(
            f"only one of {secret_name}, {config_name} exists; delete it to start over"
        )
    secret, config = make(
        release,
        int(os.environ["CHAIN_ID"]),
        int(os.environ["PERIOD"]),
        int(os.environ["SEALERS"]),
        int(os.environ["P2P_PORT"]),
    )
    kube.create("secrets", secret_name, secret, labels)
    kube.create("configmaps", config_name, config, labels)
    print(f"created {secret_name} and {config_name} ({config['sealers']})")


if __name__ == "__main__":
    main()
