"""Every service held to its OpenAPI document by a fuzzer (schemathesis), on the embedded
default served in its own process.

For each operation of each of the five documents, generated requests (valid and
invalid: ``EHR_FUZZ_EXAMPLES`` of each per caller, 8 by default) are sent with the token
of every role and without a token. Every answer must be: not a server error, a status the
document lists for the operation, with a content type and a body the document declares.
The figures (operations, requests, failures by kind) are written to
``bench/results/fuzz.json`` and printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from devstack.settings import PROJECT_ROOT
from fixtures.served_embedded import ROLES, ServedEmbedded, served_embedded
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup

SERVICES = {
    # service: (document path through the gateway, the audience of its tokens)
    "identity": ("/identity/openapi.json", "identity"),
    "consent": ("/consent/openapi.json", "consent"),
    "records": ("/records/openapi.json", "records"),
    "ledger": ("/ledger/openapi.json", "ledger"),
    "audit": ("/audit/openapi.json", "audit"),
}
CALLERS = (*ROLES, "anonymous")
EXAMPLES = int(os.environ.get("EHR_FUZZ_EXAMPLES", "8"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Routes whose success changes what later requests see for everyone (the admin's key
# rotation retires the keys every token was signed with); they are fuzzed without the
# role that may call them, so only their refusals are exercised.
NOT_AS = {("identity", "POST", "/admin/signing-keys/rotate"): {"admin"}}


@dataclass
class Tally:
    operations: int = 0
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def record_failure(self, kind: str, where: str, message: str) -> None:
        self.failures[kind] += 1
        self.examples.setdefault(f"{kind} @ {where}", message[:600])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedEmbedded]:
    yield from served_embedded(tmp_path_factory.mktemp("fuzz"))


def _base_url(served: ServedEmbedded, document: dict[str, Any]) -> str:
    servers = document.get("servers") or [{"url": ""}]
    return served.url + str(servers[0]["url"]).rstrip("/")


def _fuzz_operation(
    served: ServedEmbedded,
    service: str,
    audience: str,
    operation: Any,
    base_url: str,
    tally: Tally,
) -> None:
    method, path = operation.method.upper(), operation.path
    skipped = NOT_AS.get((service, method, path), set())
    callers = [c for c in CALLERS if c not in skipped]
    where = f"{service} {method} {path}"
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=EXAMPLES * len(callers),
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases, caller=st.sampled_from(callers))
    def fuzz(case: Any, caller: str) -> None:
        headers = {} if caller == "anonymous" else served.accounts[caller].headers(audience)
        try:
            response = case.call(base_url=base_url, headers=headers, timeout=30)
        except Exception as error:  # the connection failed: the server may have died
            tally.record_failure("transport_error", where, repr(error))
            return
        tally.requests += 1
        tally.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                kind = type(failure).__name__
                tally.record_failure(kind, f"{where} as {caller}", str(failure))
        except AssertionError as failure:
            tally.record_failure(type(failure).__name__, f"{where} as {caller}", str(failure))

    with contextlib.suppress(Unsatisfiable):
        fuzz()
    tally.operations += 1


def test_every_service_keeps_to_its_openapi_document(served: ServedEmbedded) -> None:
    tally = Tally()
    started = time.monotonic()
    per_service: dict[str, dict[str, int]] = {}
    for service, (document_path, audience) in SERVICES.items():
        document = httpx.get(served.url + document_path, timeout=30).json()
        schema = schemathesis.openapi.from_dict(document)
        base_url = _base_url(served, document)
        before = (tally.operations, tally.requests, sum(tally.failures.values()))
        for result in schema.get_all_operations():
            operation = result.ok()
            _fuzz_operation(served, service, audience, operation, base_url, tally)
            assert served.alive(), f"the server died fuzzing {service}: {served.log()}"
        per_service[service] = {
            "operations": tally.operations - before[0],
            "requests": tally.requests - before[1],
            "failures": sum(tally.failures.values()) - before[2],
        }
    figures = {
        "examples_per_caller": EXAMPLES,
        "callers": list(CALLERS),
        "operations": tally.operations,
        "requests": tally.requests,
        "seconds": round(time.monotonic() - started, 1),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "failures_by_kind": dict(tally.failures),
        "per_service": per_service,
        "failure_examples": tally.examples,
    }
    results = PROJECT_ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    Path(results / "fuzz.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps({k: v for k, v in figures.items() if k != "failure_examples"}, indent=2))
    assert tally.requests > 0 and tally.operations >= 40
    assert not tally.failures, json.dumps(tally.examples, indent=2)[:20000]


def test_the_gateway_publishes_every_document_with_paths_that_resolve(
    served: ServedEmbedded,
) -> None:
    index = httpx.get(f"{served.url}/api", timeout=30).json()
    urls = {entry["service"]: entry["url"] for entry in index["documents"]}
    assert urls == {name: path for name, (path, _) in SERVICES.items()}
    for name, url in urls.items():
        document = httpx.get(served.url + url, timeout=30).json()
        assert document["openapi"].startswith("3."), name
        base_url = _base_url(served, document)
        plain_gets = [p for p, item in document["paths"].items() if "get" in item and "{" not in p]
        assert plain_gets, name
        for path in plain_gets:
            # no token: the operation's own answer (401 or a public 200), never "no route"
            reply = httpx.get(base_url + path, timeout=30)
            assert reply.status_code not in (404, 405), (name, path, reply.text)
