"""A private Geth v1.13.15 Clique proof-of-authority network on loopback.

``generate`` writes, once per set of parameters, everything the network
needs under ``<run_dir>/geth``:

* one signing account per sealer (keystore encrypted with a password that is
  generated here and stored next to it, mode 0600) and one p2p node key each;
* ``genesis.json``: Clique with the sealers in ``extraData``, forks up to
  Gray Glacier at block 0, no Shanghai, 30M gas limit, funded accounts;
* ``faucet.key``: a generated, funded account that tests and benchmarks use
  to fund the accounts they create (never committed, never reused);
* one TOML config per node with its loopback p2p address and every other
  sealer as a static peer.

Nothing is downloaded and no key is ever committed: a new network is made
whenever the state folder is empty or the parameters change.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_keys.datatypes import PrivateKey

from .component import Component, ServerStatus, server_status
from .processes import ManagedProcess, StackError, wait_until
from .settings import StackSettings

FAUCET_BALANCE_WEI = 10**30
SEALER_BALANCE_WEI = 10**24
GETH_VERSION = "1.13.15"


def rpc_call(url: str, method: str, params: list[Any] | None = None, timeout_s: float = 3) -> Any:
    """One JSON-RPC call; raises ``StackError`` on an error answer."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
    reply = httpx.post(url, json=body, timeout=timeout_s).json()
    if "error" in reply:
        raise StackError(f"{method} on {url}: {reply['error']}")
    return reply["result"]


@dataclass(frozen=True)
class SealerIdentity:
    address: str  # checksummed signing address
    enode_id: str  # 64-byte uncompressed p2p public key, hex without prefix


class GethNetwork(Component):
    name = "geth"

    def __init__(self, settings: StackSettings) -> None:
        self._settings = settings
        self._geth = settings.geth
        self.state_dir = settings.run_dir / "geth"
        self._manifest = self.state_dir / "network.json"
        self._password_file = self.state_dir / "password.txt"
        self.nodes = self._node_processes()

    # -- addresses ---------------------------------------------------------

    def rpc_url(self, index: int) -> str:
        return f"http://{self._settings.host}:{self._geth.http_port + index}"

    @property
    def rpc_urls(self) -> list[str]:
        return [self.rpc_url(i) for i in range(self._geth.sealers)]

    def metrics_url(self, index: int) -> str:
        port = self._geth.metrics_port + index
        return f"http://{self._settings.host}:{port}/debug/metrics/prometheus"

    @property
    def chain_id(self) -> int:
        return self._geth.chain_id

    @property
    def faucet_key_file(self) -> Path:
        return self.state_dir / "faucet.key"

    def faucet_private_key(self) -> str:
        return self.faucet_key_file.read_text().strip()

    def sealers(self) -> list[SealerIdentity]:
        manifest = json.loads(self._manifest.read_text())
        return [SealerIdentity(**s) for s in manifest["sealers"]]

    # -- generation --------------------------------------------------------

    def _parameters(self) -> dict[str, Any]:
        g = self._geth
        return {
            "sealers": g.sealers,
            "chain_id": g.chain_id,
            "period": g.period,
            "epoch": g.epoch,
            "gas_limit": g.gas_limit,
            "host": self._settings.host,
            "p2p_port": g.p2p_port,
            "geth": GETH_VERSION,
        }

    def generate(self) -> None:
        """Creates keys, genesis and node configs unless they match the settings."""
        if self._manifest.exists():
            if json.loads(self._manifest.read_text())["parameters"] == self._parameters():
                return
            if any(node.pid() is not None for node in self.nodes):
                raise StackError(
                    "geth parameters changed while the network runs: `make down` first"
                )
            shutil.rmtree(self.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_hex(24)
        _write_private(self._password_file, password + "\n")

        faucet = Account.create()
        _write_private(self.faucet_key_file, faucet.key.hex() + "\n")

        identities: list[SealerIdentity] = []
        node_keys: list[bytes] = []
        for index in range(self._geth.sealers):
            account = Account.create()
            keystore_dir = self._datadir(index) / "keystore"
            keystore_dir.mkdir(parents=True, exist_ok=True)
            # A light scrypt cost: this is a throwaway development network.
            keystore = Account.encrypt(account.key, password, kdf="scrypt", iterations=2**12)
            _write_private(keystore_dir / "sealer.json", json.dumps(keystore))
            node_key = secrets.token_bytes(32)
            node_keys.append(node_key)
            enode_id = PrivateKey(node_key).public_key.to_hex()[2:]
            identities.append(SealerIdentity(account.address, enode_id))

        genesis_file = self.state_dir / "genesis.json"
        genesis_file.write_text(json.dumps(self._genesis(identities, faucet.address), indent=2))
        for index in range(self._geth.sealers):
            self._write_node_config(index, identities)
            self._run_geth(["--datadir", str(self._datadir(index)), "init", str(genesis_file)])
            # geth init creates <datadir>/geth; the node key lives beside the chain data.
            _write_private(self._datadir(index) / "geth" / "nodekey", node_keys[index].hex())

        self._manifest.write_text(
            json.dumps(
                {
                    "parameters": self._parameters(),
                    "sealers": [vars(identity) for identity in identities],
                    "faucet": faucet.address,
                },
                indent=2,
            )
        )

    def _genesis(self, sealers: list[SealerIdentity], faucet: str) -> dict[str, Any]:
        g = self._geth
        signers = "".join(s.address[2:].lower() for s in sorted(sealers, key=_address_key))
        forks = [
            "homesteadBlock",
            "eip150Block",
            "eip155Block",
            "eip158Block",
            "byzantiumBlock",
            "constantinopleBlock",
            "petersburgBlock",
            "istanbulBlock",
            "muirGlacierBlock",
            "berlinBlock",
            "londonBlock",
            "arrowGlacierBlock",
            "grayGlacierBlock",
        ]
        alloc = {faucet: {"balance": hex(FAUCET_BALANCE_WEI)}}
        alloc.update({s.address: {"balance": hex(SEALER_BALANCE_WEI)} for s in sealers})
        return {
            "config": {
                "chainId": g.chain_id,
                **{fork: 0 for fork in forks},
                "clique": {"period": g.period, "epoch": g.epoch},
            },
            "difficulty": "0x1",
            "gasLimit": hex(g.gas_limit),
            "extraData": "0x" + "00" * 32 + signers + "00" * 65,
            "alloc": alloc,
        }

    def _write_node_config(self, index: int, sealers: list[SealerIdentity]) -> None:
        host, base = self._settings.host, self._geth.p2p_port
        peers = [
            f'"enode://{s.enode_id}@{host}:{base + i}"' for i, s in enumerate(sealers) if i != index
        ]
        self._config_file(index).write_text(
            "[Node.P2P]\n"
            f'ListenAddr = "{host}:{base + index}"\n'
            "NoDiscovery = true\n"
            "DiscoveryV5 = false\n"
            f"MaxPeers = {max(len(sealers) * 2, 10)}\n"
            f"StaticNodes = [{', '.join(peers)}]\n"
        )

    # -- processes ---------------------------------------------------------

    def _datadir(self, index: int) -> Path:
        return self.state_dir / f"node{index}"

    def _config_file(self, index: int) -> Path:
        return self.state_dir / f"node{index}.toml"

    def _node_processes(self) -> list[ManagedProcess]:
        """One process per sealer; before generation only the pid files are known."""
        sealers = self.sealers() if self._manifest.exists() else []
        return [
            ManagedProcess(
                name=f"geth-{index}",
                argv=[str(self._geth.binary), *self._node_args(index, sealers[index].address)]
                if sealers
                else [str(self._geth.binary)],
                pid_file=self.state_dir / f"node{index}.pid",
                log_file=self._settings.logs_dir / f"geth-{index}.log",
            )
            for index in range(self._geth.sealers)
        ]

    def _node_args(self, index: int, sealer: str) -> list[str]:
        g, host = self._geth, self._settings.host
        return [
            "--datadir", str(self._datadir(index)),
            "--config", str(self._config_file(index)),
            "--networkid", str(g.chain_id),
            "--syncmode", "full",
            "--nodiscover",
            "--nat", "none",
            "--ipcdisable",
            "--cache", str(g.cache_mb),
            "--http",
            "--http.addr", host,
            "--http.port", str(g.http_port + index),
            "--http.api", "eth,net,web3,clique,txpool,admin",
            "--http.vhosts", "localhost,127.0.0.1",
            "--authrpc.addr", host,
            "--authrpc.port", str(g.authrpc_port + index),
            "--metrics",
            "--metrics.addr", host,
            "--metrics.port", str(g.metrics_port + index),
            "--mine",
            "--miner.etherbase", sealer,
            "--unlock", sealer,
            "--password", str(self._password_file),
            "--allow-insecure-unlock",
        ]  # fmt: skip

    def _run_geth(self, args: list[str]) -> None:
        result = subprocess.run(
            [str(self._geth.binary), *args], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise StackError(f"geth {' '.join(args)} failed:\n{result.stderr[-2000:]}")

    def _check_binary(self) -> None:
        binary = self._geth.binary
        if not binary.exists():
            raise StackError(f"{binary} is missing: run `make install`")
        out = subprocess.run([str(binary), "version"], capture_output=True, text=True).stdout
        if f"Version: {GETH_VERSION}-stable" not in out:
            raise StackError(f"{binary} is not geth {GETH_VERSION}: run `make install`")

    def start_node(self, index: int) -> None:
        self.nodes[index].start()

    def stop_node(self, index: int, timeout_s: float | None = None) -> None:
        self.nodes[index].stop(timeout_s or self._settings.stop_timeout_s)

    def stop_sealer(self, index: int, timeout_s: float = 30) -> None:
        """Stops sealer ``index`` right after another sealer sealed a new head block.

        Clique lets a signer seal at most one of any ``len(signers) // 2 + 1`` consecutive
        blocks. With three sealers, stopping one just after it sealed the head would leave
        the other two both allowed to seal the next block; if both do, each keeps its own
        fork (equal difficulty) and each fork needs the other's signer next: the chain
        stalls. Stopped just after another sealer's block, the two left can only alternate.
        """
        me = self.sealers()[index].address.lower()
        other = self.rpc_url((index + 1) % len(self.nodes))
        seen = rpc_call(other, "eth_blockNumber")

        def stopped_after_another_sealer() -> bool:
            nonlocal seen
            head = rpc_call(other, "eth_blockNumber")
            if head == seen:
                return False
            seen = head
            if str(rpc_call(other, "clique_getSigner", [head])).lower() == me:
                return False
            self.stop_node(index)
            return True

        wait_until(
            stopped_after_another_sealer,
            timeout_s,
            f"a new block sealed by another sealer than node {index}",
            interval_s=0.02,
        )

    def node_healthy(self, index: int) -> bool:
        return bool(rpc_call(self.rpc_url(index), "eth_chainId") == hex(self._geth.chain_id))

    def peer_count(self, index: int) -> int:
        return int(rpc_call(self.rpc_url(index), "net_peerCount"), 16)

    def block_number(self, index: int) -> int:
        return int(rpc_call(self.rpc_url(index), "eth_blockNumber"), 16)

    def up(self, timeout_s: float) -> None:
        self._check_binary()
        self.generate()
        self.nodes = self._node_processes()
        for node in self.nodes:
            node.start()
        expected_peers = self._geth.sealers - 1

        def all_peered() -> bool:
            for index, node in enumerate(self.nodes):
                node.raise_if_exited()
                if not self.node_healthy(index) or self.peer_count(index) < expected_peers:
                    return False
            return True

        wait_until(all_peered, timeout_s, f"{len(self.nodes)} geth sealers to peer")

    def down(self, timeout_s: float) -> None:
        for node in self.nodes:
            node.stop(timeout_s)

    def servers(self) -> list[ServerStatus]:
        statuses = []
        for index, node in enumerate(self.nodes):
            pid = node.pid()
            healthy, detail = False, ""
            if pid is not None:
                try:
                    healthy = self.node_healthy(index)
                    detail = f"block {self.block_number(index)}, {self.peer_count(index)} peers"
                except Exception:
                    detail = "RPC not answering"
            statuses.append(
                server_status("geth", node.name, self.rpc_url(index), pid, healthy, detail)
            )
        return statuses


def _address_key(sealer: SealerIdentity) -> bytes:
    return bytes.fromhex(sealer.address[2:])


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
