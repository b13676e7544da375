"""``effbench hardware list / show ID / detect``: the profiles, one profile, this machine's profile."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from effbench.cli._console import cell, fmt, out

if TYPE_CHECKING:  # pragma: no cover - the catalog loads when a command runs
    from effbench.hardware import HardwareProfile

hardware_app = typer.Typer(help="Hardware profiles: list them, show one, or detect this machine's.", no_args_is_help=True)

PRICE_HELP = "Price override ID=USD_PER_HOUR (repeatable or comma-separated)."


def _prices(price: Optional[list[str]]):
    from effbench.hardware import parse_price_options

    return parse_price_options(price or [])


def _tflops(p: HardwareProfile) -> str:
    t = p.peak_tflops
    return " / ".join(fmt(v, 0) for v in (t.fp32, t.bf16, t.fp8, t.int8))


def _price(p: HardwareProfile) -> str:
    return f"${p.price_per_hour_usd:,.2f}" if p.price_per_hour_usd is not None else "-"


def _detail_table(p: HardwareProfile) -> Table:
    table = Table(title=f"Hardware profile {p.id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [("id", p.id), ("name", p.name), ("vendor", p.vendor), ("kind", p.kind),
            ("memory", f"{p.memory_gb:g} GB"), ("memory bandwidth", f"{p.memory_bandwidth_gbps:,g} GB/s"),
            ("bandwidth source", p.bandwidth_source or "spec sheet"),
            *((f"peak {k}", f"{v:,g} {'TOPS' if k == 'int8' else 'TFLOP/s'}" if v else "-")
              for k, v in p.peak_tflops.model_dump().items()),
            ("TDP", f"{p.tdp_w:g} W" if p.tdp_w else "-"), ("TDP source", p.tdp_source or "spec sheet"),
            ("cores", str(p.cores) if p.cores else "-"), ("match", ", ".join(p.match) or "-"),
            ("price", f"{_price(p)}/hour"), ("price source", p.price_source or "-"), ("price date", p.price_date or "-"),
            ("notes", p.notes or "-"), ("loaded from", p.origin or "-")]
    for k, v in rows:
        table.add_row(k, cell(v))
    return table


@hardware_app.command("list")
def list_command(
    price: Optional[list[str]] = typer.Option(None, "--price", help=PRICE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the hardware profiles (shipped and user), with spec-sheet figures and indicative prices."""
    from effbench.hardware import profiles

    items = profiles(_prices(price))
    if as_json:
        typer.echo(json.dumps([p.to_dict() for p in items], indent=2))
        return
    table = Table(title="Hardware profiles (dense peak TFLOPs; prices indicative on-demand)")
    for c in ("id", "name", "memory GB", "bandwidth GB/s", "TFLOPs fp32/bf16/fp8/int8", "TDP W", "$/hour", "price source",
              "date"):
        table.add_column(c, justify="right" if c in ("memory GB", "bandwidth GB/s", "TDP W", "$/hour") else "left")
    for p in items:
        table.add_row(cell(p.id), cell(p.name), fmt(p.memory_gb, 0), fmt(p.memory_bandwidth_gbps, 0), _tflops(p),
                      fmt(p.tdp_w, 0), _price(p), cell(p.price_source or "-"), cell(p.price_date or "-"))
    out.print(table)
    out.print("This machine: 'effbench hardware detect'. Add profiles as YAML files in the user config dir "
              "(see 'effbench hardware detect --json' for the path) or override prices with --price ID=USD.", style="dim")


@hardware_app.command("show")
def show_command(
    profile: str = typer.Argument(..., help="Profile id (see 'effbench hardware list') or path of a profile YAML file."),
    price: Optional[list[str]] = typer.Option(None, "--price", help=PRICE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show one profile, by id or from a YAML file (validated)."""
    from effbench.hardware import get_profile

    p = get_profile(profile, _prices(price))
    if as_json:
        typer.echo(json.dumps(p.to_dict(), indent=2))
    else:
        out.print(_detail_table(p))


@hardware_app.command("detect")
def detect_command(
    device: str = typer.Option("auto", "--device", help="auto (first NVIDIA GPU, else the CPU), cpu, cuda or cuda:N."),
    price: Optional[list[str]] = typer.Option(None, "--price", help=PRICE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Detect this machine and show its profile (a CPU's memory bandwidth is measured once, about a second, and cached)."""
    from effbench.hardware import detect, get_profile
    from effbench.hardware.catalog import prices_file, user_dir

    d = detect(device)
    p = get_profile(d.profile, _prices(price)) if d.profile else None
    if as_json:
        typer.echo(json.dumps({"detected_name": d.name, "kind": d.kind, "profile": p.to_dict() if p else None,
                               "user_profiles_dir": str(user_dir()), "prices_file": str(prices_file())}, indent=2))
        return
    out.print(cell(f"Detected {d.kind}: {d.name}"))
    if p is None:
        out.print(cell(f"No profile matches '{d.name}'. Add one as a YAML file in {user_dir()} "
                       "(copy 'effbench hardware show h100-sxm --json' as a template) and pass --hardware ID to 'effbench run'."))
        return
    out.print(_detail_table(p))


def register(app: typer.Typer) -> None:
    """Add ``effbench hardware`` (list, show, detect) to the command-line app."""
    app.add_typer(hardware_app, name="hardware")
