"""The ``ehr`` command line: keys stay in the local keystore; readable output by
default, JSON with ``--json``. The identity URL comes from ``--url`` or
``EHR_IDENTITY_URL`` (``ehr consent ...``: ``--url`` or ``EHR_CONSENT_URL``); the
passphrase from ``EHR_PASSPHRASE`` or a prompt."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from ehr_client.consent_client import (
    ConsentClient,
    ConsentClientError,
    ConsentInputError,
    category_names,
    parse_categories,
    parse_duration,
    parse_purpose,
    purpose_name,
)
from ehr_client.identity import IdentityClient, IdentityClientError
from ehr_client.keystore import Keystore, KeystoreError

app = typer.Typer(help="EHR Ledger client", no_args_is_help=True)
keys_app = typer.Typer(help="local keys", no_args_is_help=True)
provider_app = typer.Typer(help="provider verification (admin)", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(provider_app, name="provider")

HOME = Path(os.environ.get("EHR_HOME", Path.home() / ".ehr"))
KeystoreOpt = Annotated[Path, typer.Option("--keystore", help="keystore file")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
UrlOpt = Annotated[str | None, typer.Option("--url", envvar="EHR_IDENTITY_URL")]
DEFAULT_KEYSTORE = HOME / "keystore.json"
SESSION_FILE = HOME / "session.json"


def _out(data: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        for key, value in data.items():
            typer.echo(f"{key:>18}: {value}")


def _passphrase(confirm: bool = False) -> str:
    value = os.environ.get("EHR_PASSPHRASE")
    if value:
        return value
    return str(typer.prompt("passphrase", hide_input=True, confirmation_prompt=confirm))


def _client(url: str | None) -> IdentityClient:
    if not url:
        raise typer.BadParameter("set --url or EHR_IDENTITY_URL")
    return IdentityClient(url)


def _fail(exc: Exception, as_json: bool) -> None:
    body = {"error": str(exc)}
    if isinstance(exc, IdentityClientError):
        body = {"error": exc.code, "message": exc.message, "status": str(exc.status)}
    typer.echo(json.dumps(body) if as_json else f"error: {body}", err=True)
    raise typer.Exit(1)


def _token(audience: str = "identity") -> str:
    try:
        return str(json.loads(SESSION_FILE.read_text())["tokens"][audience])
    except (OSError, KeyError, ValueError) as exc:
        raise typer.BadParameter("not logged in: run `ehr login`") from exc


@keys_app.command("create")
def keys_create(keystore: KeystoreOpt = DEFAULT_KEYSTORE, as_json: JsonOpt = False) -> None:
    """Generate a signing key and an encryption key into an encrypted keystore."""
    try:
        keys = Keystore(keystore).create(_passphrase(confirm=True))
    except KeystoreError as exc:
        _fail(exc, as_json)
        return
    public = keys.public()
    _out(
        {
            "address": public.address,
            "encryption_key": public.encryption_key,
            "keystore": str(keystore),
        },
        as_json,
    )


@keys_app.command("show")
def keys_show(keystore: KeystoreOpt = DEFAULT_KEYSTORE, as_json: JsonOpt = False) -> None:
    """Show the public keys (no passphrase needed)."""
    try:
        info = Keystore(keystore).info()
    except KeystoreError as exc:
        _fail(exc, as_json)
        return
    _out({"address": info.address, "encryption_key": info.encryption_public_key}, as_json)


@app.command()
def register(
    name: Annotated[str, typer.Option()],
    role: Annotated[str, typer.Option()] = "patient",
    url: UrlOpt = None,
    keystore: KeystoreOpt = DEFAULT_KEYSTORE,
    as_admin: Annotated[
        bool, typer.Option("--as-admin", help="use the logged-in admin's token")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Register this keystore's account (public keys and a signature only)."""
    try:
        keys = Keystore(keystore).unlock(_passphrase())
        with _client(url) as client:
            account = client.register(
                keys, name=name, role=role, admin_token=_token() if as_admin else None
            )
    except (KeystoreError, IdentityClientError) as exc:
        _fail(exc, as_json)
        return
    _out(account, as_json)


@app.command()
def login(
    url: UrlOpt = None, keystore: KeystoreOpt = DEFAULT_KEYSTORE, as_json: JsonOpt = False
) -> None:
    """Sign a login challenge locally; keep the short-lived tokens in the session file."""
    try:
        keys = Keystore(keystore).unlock(_passphrase())
        with _client(url) as client:
            session = client.login(keys)
    except (KeystoreError, IdentityClientError) as exc:
        _fail(exc, as_json)
        return
    SESSION_FILE.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    SESSION_FILE.touch(mode=0o600)
    SESSION_FILE.write_text(
        json.dumps({"account_id": session.account_id, "tokens": session.tokens})
    )
    _out(
        {"account_id": session.account_id, "role": session.role, "session_id": session.session_id},
        as_json,
    )


@app.command()
def whoami(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """The logged-in account."""
    try:
        with _client(url) as client:
            _out(client.whoami(_token()), as_json)
    except IdentityClientError as exc:
        _fail(exc, as_json)


def _provider_action(
    action: str, account_id: str, url: str | None, as_json: bool, **kw: str
) -> None:
    try:
        with _client(url) as client:
            if action == "verify":
                result = client.verify_provider(_token(), account_id, kw["licence_hash"])
            elif action == "suspend":
                result = client.suspend_provider(_token(), account_id, kw["reason"])
            else:
                result = client.reinstate_provider(_token(), account_id)
    except IdentityClientError as exc:
        _fail(exc, as_json)
        return
    _out(result, as_json)


@provider_app.command("verify")
def provider_verify(
    account_id: str,
    licence_hash: Annotated[str, typer.Option(help="0x + 64 hex")],
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a provider in ProviderRegistry (admin)."""
    _provider_action("verify", account_id, url, as_json, licence_hash=licence_hash)


@provider_app.command("suspend")
def provider_suspend(
    account_id: str,
    reason: Annotated[str, typer.Option(help="reason code, e.g. licence_expired")],
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    _provider_action("suspend", account_id, url, as_json, reason=reason)


@provider_app.command("reinstate")
def provider_reinstate(account_id: str, url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    _provider_action("reinstate", account_id, url, as_json)


# -- consent ----------------------------------------------------------------------------
consent_app = typer.Typer(
    help="grants and revocations (signed with your key)", no_args_is_help=True
)
app.add_typer(consent_app, name="consent")

ConsentUrlOpt = Annotated[
    str | None, typer.Option("--url", envvar="EHR_CONSENT_URL", help="consent service URL")
]
IdentityUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--identity-url",
        envvar="EHR_IDENTITY_URL",
        help="identity service URL (to look up a grantee given by account id)",
    ),
]
ToOpt = Annotated[str, typer.Option("--to", help="grantee: account id or 0x signing address")]
CategoryOpt = Annotated[
    list[str],
    typer.Option(
        "--category", "-c", help="labs, imaging, medications, notes, mental-health (repeat or ,)"
    ),
]
PurposeOpt = Annotated[
    str,
    typer.Option("--purpose", "-p", help="treatment, payment, operations, research or emergency"),
]


def _consent_client(url: str | None) -> ConsentClient:
    if not url:
        raise typer.BadParameter("set --url or EHR_CONSENT_URL")
    return ConsentClient(url)


def _session_account() -> str:
    try:
        return str(json.loads(SESSION_FILE.read_text())["account_id"])
    except (OSError, KeyError, ValueError) as exc:
        raise typer.BadParameter("not logged in: run `ehr login`") from exc


def _grantee_address(grantee: str, identity_url: str | None) -> str:
    """A grantee given as an address is used as is; an account id is looked up."""
    if grantee.startswith("0x") and len(grantee) == 42:
        return grantee
    with _client(identity_url) as client:
        return str(client.account(_token(), grantee)["signing_address"])


def _grant_row(grant: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **grant,
        "category_names": ",".join(category_names(int(grant["categories"]))),
        "purpose_name": purpose_name(int(grant["purpose"])),
    }


ConsentErrors = (KeystoreError, IdentityClientError, ConsentClientError, ConsentInputError)


def _fail_consent(exc: Exception, as_json: bool) -> None:
    if isinstance(exc, ConsentClientError):
        body = {"error": exc.code, "message": exc.message, "status": str(exc.status)}
        typer.echo(json.dumps(body) if as_json else f"error: {body}", err=True)
        raise typer.Exit(1)
    _fail(exc, as_json)


@consent_app.command("grant")
def consent_grant(
    to: ToOpt,
    category: CategoryOpt,
    purpose: PurposeOpt = "treatment",
    expires: Annotated[
        str, typer.Option("--expires", help="lifetime: 30d, 12h, 15m, 90s or 2w")
    ] = "30d",
    url: ConsentUrlOpt = None,
    identity_url: IdentityUrlOpt = None,
    keystore: KeystoreOpt = DEFAULT_KEYSTORE,
    as_json: JsonOpt = False,
) -> None:
    """Sign a grant with your key and have it recorded on chain."""
    try:
        categories, purpose_id = parse_categories(category), parse_purpose(purpose)
        lifetime = parse_duration(expires)
        grantee = _grantee_address(to, identity_url)
        keys = Keystore(keystore).unlock(_passphrase())
        with _consent_client(url) as client:
            grant = client.grant(
                keys,
                _token("consent"),
                patient_id=_session_account(),
                grantee=grantee,
                categories=categories,
                purpose=purpose_id,
                expires_in=lifetime,
            )
    except ConsentErrors as exc:
        _fail_consent(exc, as_json)
        return
    _out(_grant_row(grant), as_json)


@consent_app.command("revoke")
def consent_revoke(
    to: ToOpt,
    category: CategoryOpt,
    purpose: PurposeOpt = "treatment",
    url: ConsentUrlOpt = None,
    identity_url: IdentityUrlOpt = None,
    keystore: KeystoreOpt = DEFAULT_KEYSTORE,
    as_json: JsonOpt = False,
) -> None:
    """Sign a revocation with your key; effective for every read that starts after it."""
    try:
        categories, purpose_id = parse_categories(category), parse_purpose(purpose)
        grantee = _grantee_address(to, identity_url)
        keys = Keystore(keystore).unlock(_passphrase())
        with _consent_client(url) as client:
            grant = client.revoke(
                keys,
                _token("consent"),
                patient_id=_session_account(),
                grantee=grantee,
                categories=categories,
                purpose=purpose_id,
            )
    except ConsentErrors as exc:
        _fail_consent(exc, as_json)
        return
    _out(_grant_row(grant), as_json)


@consent_app.command("list")
def consent_list(
    received: Annotated[
        bool, typer.Option("--received", help="grants naming me instead of grants I gave")
    ] = False,
    url: ConsentUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Your active grants (or, with --received, the active grants naming you)."""
    try:
        with _consent_client(url) as client:
            token, me = _token("consent"), _session_account()
            found = client.grants_naming(token, me) if received else client.my_grants(token, me)
    except ConsentErrors as exc:
        _fail_consent(exc, as_json)
        return
    rows = [_grant_row(g) for g in found]
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        typer.echo("no active grants")
    for row in rows:
        other = row["patient_id"] if received else row["grantee_id"]
        typer.echo(
            f"{row['grant_id']}  {other}  {row['category_names']}  {row['purpose_name']}"
            f"  expires {row['expires_at']}"
        )


@consent_app.command("check")
def consent_check(
    grantee: Annotated[str, typer.Option("--grantee", help="account id or 0x address")],
    category: Annotated[str, typer.Option("--category", "-c", help="one category name")],
    purpose: PurposeOpt = "treatment",
    patient: Annotated[
        str | None, typer.Option("--patient", help="default: the logged-in account")
    ] = None,
    url: ConsentUrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """May GRANTEE read the patient's CATEGORY records for PURPOSE now? (exit 0 either way)"""
    try:
        mask, purpose_id = parse_categories([category]), parse_purpose(purpose)
        if bin(mask).count("1") != 1:
            raise ConsentInputError("check one category at a time")
        with _consent_client(url) as client:
            answer = client.check_detail(
                _token("consent"),
                patient=patient or _session_account(),
                grantee=grantee,
                category=mask,
                purpose=purpose_id,
            )
    except ConsentErrors as exc:
        _fail_consent(exc, as_json)
        return
    _out(answer, as_json)


@app.command()
def demo(
    gateway: Annotated[str, typer.Option("--gateway", help="the gateway's base URL")],
    chain_rpc: Annotated[
        str, typer.Option("--chain-rpc", help="a JSON-RPC URL of the chain, for verification")
    ],
    admin_key_file: Annotated[
        Path, typer.Option("--admin-key-file", help="the bootstrap administrator's key file")
    ],
    out: Annotated[Path, typer.Option("--out", help="where the reports go")] = Path(
        ".run/demo-real/report"
    ),
    timeout: Annotated[float, typer.Option("--timeout", help="seconds per wait")] = 180.0,
) -> None:
    """Run the six-step scenario against a running system (exit 1 if a step fails)."""
    from ehr_protocol.verify import Web3CheckpointReader

    from ehr_client.demo import Endpoints, Scenario
    from ehr_client.keys import read_key_file

    result = Scenario(
        Endpoints(gateway),
        read_key_file(admin_key_file),
        lambda address: Web3CheckpointReader(chain_rpc, address),
        out,
        timeout_s=timeout,
    ).run()
    raise typer.Exit(0 if result.ok else 1)
