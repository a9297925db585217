"""Decoding of revert data: ``Error(string)``, ``Panic(uint256)`` and ABI custom errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils.abi import function_signature_to_4byte_selector

ERROR_STRING_SELECTOR = function_signature_to_4byte_selector("Error(string)")
PANIC_SELECTOR = function_signature_to_4byte_selector("Panic(uint256)")


@dataclass(frozen=True, slots=True)
class DecodedRevert:
    """What a revert said: a reason string, or a named custom error with its arguments."""

    reason: str | None = None
    error_name: str | None = None
    error_args: dict[str, Any] = field(default_factory=dict)


def _abi_type(param: Mapping[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param.get("components", ()))
        return f"({inner}){kind[len('tuple') :]}"
    return kind


def error_selectors(abi: Iterable[Mapping[str, Any]]) -> dict[bytes, Mapping[str, Any]]:
    """4-byte selector -> ``error`` entry of the ABI."""
    selectors: dict[bytes, Mapping[str, Any]] = {}
    for entry in abi:
        if entry.get("type") == "error":
            types = ",".join(_abi_type(p) for p in entry.get("inputs", ()))
            selectors[function_signature_to_4byte_selector(f"{entry['name']}({types})")] = entry
    return selectors


def decode_revert(data: bytes, abi: Iterable[Mapping[str, Any]] = ()) -> DecodedRevert:
    """Decode revert ``data`` against the standard errors and the custom errors of ``abi``."""
    selector, payload = data[:4], data[4:]
    try:
        if selector == ERROR_STRING_SELECTOR:
            (reason,) = abi_decode(["string"], payload)
            return DecodedRevert(reason=str(reason))
        if selector == PANIC_SELECTOR:
            (code,) = abi_decode(["uint256"], payload)
            return DecodedRevert(reason=f"Panic(0x{code:02x})", error_name="Panic")
        entry = error_selectors(abi).get(selector)
        if entry is not None:
            inputs = list(entry.get("inputs", ()))
            values = abi_decode([_abi_type(p) for p in inputs], payload)
            names = [p.get("name") or f"arg{i}" for i, p in enumerate(inputs)]
            return DecodedRevert(
                error_name=str(entry["name"]), error_args=dict(zip(names, values, strict=True))
            )
    except DecodingError:
        pass
    return DecodedRevert()
