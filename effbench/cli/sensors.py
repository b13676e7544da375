"""``effbench sensors``: which energy sensors work here, their kind, update period and accuracy."""
from __future__ import annotations

import json

import typer
from rich.table import Table

from effbench.cli._console import cell, out

sensors_app = typer.Typer(help="Energy sensors: list them, or integrate a recorded power trace.", no_args_is_help=False)


@sensors_app.callback(invoke_without_command=True)
def list_sensors(
    ctx: typer.Context,
    device: str = typer.Option("cpu", "--device", help="Device the sensors should measure (cpu, cuda, cuda:N)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the sensors available here, their kind, update period and accuracy (and why others are not)."""
    if ctx.invoked_subcommand is not None:
        return
    from effbench.sensors import available

    infos = available(device)
    if as_json:
        typer.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    table = Table(title="Energy sensors on this machine")
    for col in ("sensor", "kind", "available", "update period", "accuracy", "domains", "notes"):
        table.add_column(col)
    for i in infos:
        table.add_row(
            cell(i.name), i.kind, "yes" if i.available else "no",
            f"{i.update_period_s * 1000:.0f} ms" if i.update_period_s else "-",
            f"±{i.accuracy_rel:.0%}" if i.accuracy_rel is not None else "-",
            cell(", ".join(i.domains) or "-"), cell(i.reason),
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(sensors_app, name="sensors")
