"""The SDK guide stays true to the code: every Python block compiles, every name it
imports from the SDK exists, and every method it calls on a client exists and takes the
keyword arguments the guide passes. (The blocks share names across roles, so they are
checked rather than run; the demo scenario runs the same calls end to end.)"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest
from ehr_client.audit import AuditClient, LedgerClient
from ehr_client.consent_client import ConsentClient
from ehr_client.identity import IdentityClient
from ehr_client.records import RecordsClient

GUIDE = Path(__file__).resolve().parents[2] / "sdk" / "ehr_client" / "GUIDE.md"
BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), flags=re.S)

# The variable names the guide gives each kind of client.
CLIENTS: dict[str, type] = {
    "identity": IdentityClient,
    "consent": ConsentClient,
    "records": RecordsClient,
    "provider": RecordsClient,
    "audit": AuditClient,
    "ledger": LedgerClient,
}


def test_the_guide_has_an_example_per_role() -> None:
    text = GUIDE.read_text()
    for role in ("Patient", "Provider", "Auditor", "Administrator"):
        assert re.search(rf"^## {role}\b", text, flags=re.M), role
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_each_block_compiles_and_names_real_sdk_code(block: str) -> None:
    tree = ast.parse(block)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ehr_"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name}"
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        if not isinstance(owner, ast.Name) or owner.id not in CLIENTS:
            continue
        cls = CLIENTS[owner.id]
        method = getattr(cls, node.func.attr, None)
        assert callable(method), f"{cls.__name__}.{node.func.attr}"
        parameters = inspect.signature(method).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            continue
        for keyword in node.keywords:
            if keyword.arg is not None:
                assert keyword.arg in parameters, f"{cls.__name__}.{node.func.attr}({keyword.arg}=)"
