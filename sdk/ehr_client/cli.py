"""The ``ehr`` command line: keys stay in the local keystore; readable output by
default, JSON with ``--json``. The identity URL comes from ``--url`` or
``EHR_IDENTITY_URL``; the passphrase from ``EHR_PASSPHRASE`` or a prompt."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

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


def _out(data: dict[str, Any], as_json: bool) -> None:
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
