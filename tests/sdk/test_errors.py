"""The SDK's one error root, against a real served app: every error answer a service can
give becomes the ``EhrError`` subclass of its status with the body's code, message,
request id and details; a body that is not the shared shape, a success that is not JSON
and a connection that never answers are errors of the same root too; every client raises
its own family class as well, so callers that catch one client's errors keep doing so."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import httpx
import pytest
from ehr_client import errors
from ehr_client.audit import ApiError, AuditClient, LedgerClient
from ehr_client.consent_client import ConsentClient, ConsentClientError
from ehr_client.errors import ApiClient, EhrError
from ehr_client.identity import IdentityClient, IdentityClientError
from ehr_client.keys import UserKeys
from ehr_client.records import RecordsClient, RecordsClientError
from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from services.platform.app import errors as served
from services.platform.app.factory import create_app
from services.platform.app.loopback import bind_loopback, serve_in_thread
from services.platform.app.settings import JwtSettings, ServiceSettings

# (the service's error class, the SDK class it must become)
CASES: list[tuple[type[served.ServiceError], type[EhrError]]] = [
    (served.BadRequest, errors.BadRequest),
    (served.Unauthorized, errors.AuthenticationError),
    (served.Forbidden, errors.PermissionDenied),
    (served.NotFound, errors.NotFound),
    (served.MethodNotAllowed, EhrError),
    (served.Conflict, errors.Conflict),
    (served.Gone, errors.Gone),
    (served.RequestTimeout, errors.RequestRejected),
    (served.PayloadTooLarge, errors.RequestRejected),
    (served.UnsupportedMediaType, errors.RequestRejected),
    (served.ValidationFailed, errors.ValidationError),
    (served.ServiceUnavailable, errors.ServiceUnavailable),
    (served.InternalError, errors.ServerError),
]
BY_STATUS = {int(kind.status): kind for kind, _ in CASES}
DETAILS = {"field": "purpose", "allowed": [1, 2, 3]}


def _router() -> APIRouter:
    router = APIRouter()

    @router.get("/status/{status}")
    async def fail_with(status: int) -> None:
        headers = {"Retry-After": "7"} if status == 503 else None
        raise BY_STATUS[status](
            f"refused with {status}", code=f"code_{status}", details=DETAILS, headers=headers
        )

    @router.get("/unavailable-without-hint")
    async def unavailable() -> None:
        raise served.ServiceUnavailable("try later", code="dependency_unavailable")

    @router.get("/plain-error")
    async def plain_error() -> PlainTextResponse:
        return PlainTextResponse("upstream exploded", status_code=502)

    @router.get("/json-not-error-shape")
    async def odd_error() -> PlainTextResponse:
        return PlainTextResponse('{"detail": "nope"}', status_code=418)

    @router.get("/not-json")
    async def not_json() -> PlainTextResponse:
        return PlainTextResponse("<html>hello</html>")

    @router.get("/empty", status_code=204)
    async def empty() -> None:
        return None

    # One route per client family: each answers 404 with its service's code.
    @router.get("/accounts/{account_id}")
    @router.get("/consent/patients/{patient_id}/nonce")
    @router.get("/records/{record_id}/versions")
    @router.get("/events/{event_id}/verification")
    @router.get("/checkpoints")
    async def missing() -> None:
        raise served.NotFound("no such thing", code="thing_not_found")

    return router


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    settings = ServiceSettings(
        service_name="sdk-errors",
        jwt=JwtSettings(issuer="sdk-test", audience="sdk-test", jwks={"keys": []}),
    )
    with serve_in_thread(create_app(settings, [_router()])) as url:
        yield url


@pytest.fixture
def api(base_url: str) -> Iterator[ApiClient]:
    client = ApiClient(base_url, timeout=10)
    yield client
    client.close()


@pytest.mark.parametrize(("served_kind", "sdk_kind"), CASES, ids=lambda c: c.__name__)
def test_each_status_becomes_its_subclass_with_the_body(
    api: ApiClient, served_kind: type[served.ServiceError], sdk_kind: type[EhrError]
) -> None:
    status = int(served_kind.status)
    with pytest.raises(EhrError) as caught:
        api.call("GET", f"/status/{status}")
    error = caught.value
    assert type(error) is sdk_kind
    assert (error.status, error.code) == (status, f"code_{status}")
    assert error.message == f"refused with {status}"
    assert error.details == DETAILS
    assert error.request_id and len(error.request_id) >= 8
    assert isinstance(error.body, dict) and error.body["error"]["code"] == f"code_{status}"
    assert str(error).startswith(f"{status} code_{status}: ")


def test_bad_request_is_a_validation_error(api: ApiClient) -> None:
    with pytest.raises(errors.ValidationError) as caught:
        api.call("GET", "/status/400")
    assert caught.value.status == 400


def test_service_unavailable_carries_retry_after(api: ApiClient) -> None:
    with pytest.raises(errors.ServiceUnavailable) as hinted:
        api.call("GET", "/status/503")
    assert hinted.value.retry_after == 7.0
    with pytest.raises(errors.ServiceUnavailable) as bare:
        api.call("GET", "/unavailable-without-hint")
    assert bare.value.retry_after is None
    assert bare.value.code == "dependency_unavailable"


def test_an_error_body_that_is_not_json_keeps_status_and_text(api: ApiClient) -> None:
    with pytest.raises(errors.ServerError) as caught:
        api.call("GET", "/plain-error")
    assert (caught.value.status, caught.value.code) == (502, "http_error")
    assert caught.value.message == "upstream exploded"
    assert caught.value.body == "upstream exploded"
    assert caught.value.request_id  # from the response header


def test_json_that_is_not_the_error_shape_is_an_http_error(api: ApiClient) -> None:
    with pytest.raises(EhrError) as caught:
        api.call("GET", "/json-not-error-shape")
    assert type(caught.value) is EhrError
    assert (caught.value.status, caught.value.code) == (418, "http_error")
    assert caught.value.details is None


def test_a_success_that_is_not_json_is_an_invalid_response(api: ApiClient) -> None:
    with pytest.raises(errors.InvalidResponse) as caught:
        api.call("GET", "/not-json")
    assert (caught.value.status, caught.value.code) == (200, "invalid_response")
    assert api.call("GET", "/empty") is None
    assert api.send("GET", "/not-json").text == "<html>hello</html>"


def _refusing_url() -> str:
    """A loopback port nobody listens on (bound, never listening: connections refused)."""
    sock = bind_loopback()
    host, port = sock.getsockname()[:2]
    sock.close()
    return f"http://{host}:{port}"


def test_a_connection_refused_is_a_transport_error() -> None:
    client = ApiClient(_refusing_url(), timeout=5)
    try:
        with pytest.raises(errors.TransportError) as caught:
            client.call("GET", "/anything")
    finally:
        client.close()
    error = caught.value
    assert isinstance(error, EhrError) and isinstance(error, httpx.TransportError)
    assert (error.status, error.code) == (0, "transport_error")
    assert error.request.url.path == "/anything"


def test_a_timeout_is_a_transport_error() -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connection, never answers
    host, port = listener.getsockname()[:2]
    client = ApiClient(f"http://{host}:{port}", timeout=0.3)
    try:
        with pytest.raises(errors.TransportError) as caught:
            client.call("GET", "/slow")
    finally:
        client.close()
        listener.close()
    assert isinstance(caught.value.__cause__, httpx.TimeoutException)


FAMILIES: list[tuple[str, type[EhrError], Callable[[str], object]]] = [
    ("identity", IdentityClientError, lambda url: IdentityClient(url).account("t", "a1")),
    ("consent", ConsentClientError, lambda url: ConsentClient(url).nonce("t", "p1")),
    (
        "records",
        RecordsClientError,
        lambda url: RecordsClient(
            url, token="t", keys=UserKeys.generate(), account_id="a1"
        ).history("r1"),
    ),
    ("audit", ApiError, lambda url: AuditClient(url, token="t").verify("e1")),
    ("ledger", ApiError, lambda url: LedgerClient(url, token="t").checkpoints()),
]


@pytest.mark.parametrize(("name", "family", "call"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_client_raises_the_kind_and_its_own_family(
    base_url: str, name: str, family: type[EhrError], call: Callable[[str], object]
) -> None:
    with pytest.raises(errors.NotFound) as caught:
        call(base_url)
    error = caught.value
    assert isinstance(error, family) and isinstance(error, EhrError)
    assert (error.status, error.code, error.message) == (404, "thing_not_found", "no such thing")
    others = {IdentityClientError, ConsentClientError, RecordsClientError, ApiError} - {family}
    assert not any(isinstance(error, other) for other in others)
    assert type(error) is type(_again(call, base_url))  # one class per (kind, family)


def _again(call: Callable[[str], object], url: str) -> EhrError:
    try:
        call(url)
    except EhrError as error:
        return error
    raise AssertionError("the second call did not fail")


def test_transport_errors_are_not_a_client_family() -> None:
    """As before: a refused connection was never an ``IdentityClientError``; code that
    retries a family's codes does not start catching network failures."""
    client = IdentityClient(_refusing_url(), timeout=5)
    with pytest.raises(errors.TransportError) as caught:
        client.jwks()
    assert not isinstance(caught.value, IdentityClientError)
    assert isinstance(caught.value, httpx.HTTPError)
