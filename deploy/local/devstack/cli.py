"""``ehr-stack``: start, inspect and stop the local real stack.

ehr-stack up [COMPONENT ...]     start (with what they need) and wait until healthy
ehr-stack status [--json]        each server, its address and state
ehr-stack down [COMPONENT ...]   stop; leaves no process behind
ehr-stack reset                  stop and delete all stack data
ehr-stack env                    connection settings as shell exports

Components: postgres, kafka, geth, services (the five services), gateway (nginx),
prometheus (scraping the services and the sealers).
"""

from __future__ import annotations

import json
import shlex
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .processes import StackError
from .settings import StackSettings
from .stack import COMPONENTS, Stack

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
# Wide enough for one server per line when the output is not a terminal (make, CI).
console = Console(width=None if sys.stdout.isatty() else 160)

ComponentsArg = Annotated[
    list[str] | None,
    typer.Argument(help=f"components to act on (default: {', '.join(COMPONENTS)})"),
]


def _stack() -> Stack:
    return Stack(StackSettings())


def _fail(exc: StackError) -> None:
    console.print(f"[bold red]error:[/] {exc}")
    raise typer.Exit(1) from exc


@app.command()
def up(components: ComponentsArg = None) -> None:
    """Start the stack (a second call while it runs is harmless)."""
    stack = _stack()
    try:
        stack.up(components, progress=lambda m: console.print(f"[cyan]up[/] {m}"))
    except StackError as exc:
        _fail(exc)
    console.print(f"logs: {stack.settings.logs_dir}")
    if stack.services.manifest_file.exists() and stack.gateway.process.pid() is not None:
        console.print(f"gateway: {stack.gateway.url}")
        console.print(f"services, chain and contracts: {stack.services.manifest_file}")
        console.print(f"administrator keys: {stack.services.admin_key_file}")
    if stack.prometheus.process.pid() is not None:
        console.print(f"prometheus: {stack.prometheus.url}")


@app.command()
def down(components: ComponentsArg = None) -> None:
    """Stop the stack's servers."""
    try:
        _stack().down(components, progress=lambda m: console.print(f"[cyan]down[/] {m}"))
    except StackError as exc:
        _fail(exc)


@app.command()
def reset(components: ComponentsArg = None) -> None:
    """Stop the stack and delete its data (keys, chain, topics, tables)."""
    try:
        _stack().reset(components, progress=lambda m: console.print(f"[cyan]reset[/] {m}"))
    except StackError as exc:
        _fail(exc)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List each server with its address and state."""
    servers = _stack().status()
    if as_json:
        typer.echo(json.dumps([s.as_dict() for s in servers], indent=2))
        return
    table = Table("component", "server", "address", "state", "pid", "detail", "listening on")
    colours = {"running": "green", "unhealthy": "yellow", "stopped": "red"}
    for s in servers:
        table.add_row(
            s.component,
            s.name,
            s.address,
            f"[{colours[s.state]}]{s.state}[/]",
            str(s.pid or "-"),
            s.detail,
            " ".join(f"{x.address}:{x.port}/{x.protocol}" for x in s.listening),
        )
    console.print(table)


@app.command()
def env() -> None:
    """Print connection settings as shell exports: eval "$(ehr-stack env)"."""
    for key, value in _stack().environment().items():
        typer.echo(f"export {key}={shlex.quote(value)}")


if __name__ == "__main__":
    app()
