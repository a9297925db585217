"""Compiled contract artefacts (``contracts/build/<Name>.json``, written by compile.js)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.platform.chain.errors import ChainError

BUILD_DIR = Path(__file__).resolve().parents[3] / "contracts" / "build"


class ArtifactNotFound(ChainError):
    """No compiled artefact of that name exists in the build directory."""


@dataclass(frozen=True, slots=True)
class Artifact:
    """A contract's ABI and creation bytecode (hex with ``0x``)."""

    name: str
    abi: tuple[Mapping[str, Any], ...]
    bytecode: str
    deployed_bytecode: str = ""

    @property
    def runtime_code(self) -> bytes:
        """The code a deployment leaves at its address (``deployed_bytecode`` as bytes)."""
        return bytes.fromhex(self.deployed_bytecode.removeprefix("0x"))


def load_artifact(name: str, build_dir: Path = BUILD_DIR) -> Artifact:
    """Read ``<build_dir>/<name>.json``."""
    path = build_dir / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactNotFound(f"no compiled contract {name!r} at {path}") from exc
    return Artifact(
        name=data["contractName"],
        abi=tuple(data["abi"]),
        bytecode=_hex(data["bytecode"]),
        deployed_bytecode=_hex(data.get("deployedBytecode", "")),
    )


def _hex(code: str) -> str:
    return code if code.startswith("0x") or not code else f"0x{code}"
