"""``effbench plan``: size a deployment from measured results; ranked options with replicas, cost,
energy and CO2e. Projections for unmeasured hardware are always labelled."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.text import Text

from effbench.cli._console import cell, comma_items, err, fmt, out
from effbench.planner import HOURS_PER_MONTH, RANDOM_WEIGHTS_NOTE, Plan, PlanOption

CSV_FIELDS = ("rank", "hardware", "hardware_name", "basis", "projected_from", "model", "backend", "scheme", "batch_size",
              "capacity_tokens_per_s", "replicas", "utilisation", "ttft_ms", "tpot_ms", "price_per_hour_usd", "usd_per_hour",
              "usd_per_month", "usd_per_million_tokens", "power_w", "power_basis", "kwh_per_month", "kg_co2e_per_month",
              "memory_gb", "peak_memory_gb", "memory_headroom_gb", "price_source", "random_weights", "notes")


def _usd(v: Optional[float], digits: int = 2) -> str:
    return "-" if v is None else f"${v:,.{digits}f}"


def _table(p: Plan, top: int) -> Table:
    rows = p.options[:top]
    show_model = len({o.model for o in rows}) > 1
    table = Table(title=f"effbench plan: {p.demand}; {p.hours_per_month:g} h/month; grid {p.grid_g_per_kwh:g} gCO2e/kWh")
    cols = ["#", "hardware", "basis", *(["model"] if show_model else []), "scheme", "batch", "tok/s/replica", "replicas",
            "TTFT ms", "TPOT ms", "$/hour", "$/month", "$/1M tok", "W/replica", "kWh/month", "kgCO2e/month", "free GB"]
    for c in cols:
        left = c in ("hardware", "basis", "model", "scheme", "W/replica")
        table.add_column(c, justify="left" if left else "right", no_wrap=True)
    for o in rows:
        basis = Text(o.basis, style="yellow" if o.basis == "projected" else "green")
        table.add_row(str(o.rank), cell(o.hardware), basis, *([cell(o.model)] if show_model else []), cell(o.scheme),
                      str(o.batch_size), fmt(o.capacity_tokens_per_s, 1), f"{o.replicas} ({o.utilisation:.0%})",
                      fmt(o.ttft_ms, 0), fmt(o.tpot_ms, 1), _usd(o.usd_per_hour), _usd(o.usd_per_month, 0),
                      _usd(o.usd_per_million_tokens, 3), f"{fmt(o.power_w, 0)} {o.power_basis}", fmt(o.kwh_per_month, 1),
                      fmt(o.kg_co2e_per_month, 1), fmt(o.memory_headroom_gb, 1))
    return table


def _short_note(o: PlanOption) -> str:
    if o.basis == "projected":
        low = any(n.startswith("low confidence") for n in o.notes)
        return (f"projected from {o.projected_from}" + (" (a different kind of device: low confidence)" if low else "")
                + (f"; {RANDOM_WEIGHTS_NOTE}" if o.random_weights else ""))
    return "; ".join(o.notes)


def _notes(options: list[PlanOption]) -> list[str]:
    """One line per distinct note, with the ranks it applies to."""
    ranks: dict[str, list[int]] = {}
    for o in options:
        if note := _short_note(o):
            ranks.setdefault(note, []).append(o.rank)
    return [f"#{', #'.join(map(str, r))}: {note}" for note, r in ranks.items()]


def _csv(p: Plan) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for o in p.options:
        row = dict(vars(o))
        row["notes"] = "; ".join(o.notes)
        w.writerow(row)
    return buf.getvalue()


def plan_command(
    results: list[Path] = typer.Option(..., "--results", "-r", help="Run directories from 'effbench run' (or their results.jsonl): --results A B, or --results A --results B.", show_default=False),
    more_results: Optional[list[Path]] = typer.Argument(None, help="More run directories (so '--results A B' reads both).", show_default=False, metavar="[DIR]..."),
    run_hardware: Optional[str] = typer.Option(None, "--run-hardware", help="The profile (id or YAML) that results storing no hardware profile ran on (runs from effbench < 0.2).", show_default=False),
    target_tokens_per_s: Optional[float] = typer.Option(None, "--target-tokens-per-s", help="Output tokens per second to serve.", show_default=False),
    target_requests_per_s: Optional[float] = typer.Option(None, "--target-requests-per-s", help="Requests per second to serve (with --prompt-tokens and --output-tokens).", show_default=False),
    prompt_tokens: Optional[int] = typer.Option(None, "--prompt-tokens", help="Prompt length of a request, in tokens (requests form).", show_default=False),
    output_tokens: Optional[int] = typer.Option(None, "--output-tokens", help="Output length of a request, in tokens (requests form).", show_default=False),
    max_ttft_ms: Optional[float] = typer.Option(None, "--max-ttft-ms", help="Drop options whose time to first token exceeds this.", show_default=False),
    max_tpot_ms: Optional[float] = typer.Option(None, "--max-tpot-ms", help="Drop options whose time per output token exceeds this.", show_default=False),
    hardware: Optional[list[str]] = typer.Option(None, "--hardware", help="Only these profile ids, comma-separated (default: all).", show_default=False),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only records of this model id.", show_default=False),
    price: Optional[list[str]] = typer.Option(None, "--price", help="Price override ID=USD_PER_HOUR (repeatable or comma-separated).", show_default=False),
    hours_per_month: float = typer.Option(HOURS_PER_MONTH, "--hours-per-month", help="Hours billed per month."),
    grid_intensity: Optional[float] = typer.Option(None, "--grid-intensity", help="Grid carbon intensity, gCO2e/kWh (default: world average).", show_default=False),
    region: Optional[str] = typer.Option(None, "--region", help="Grid region for carbon intensity (needs effbench.analysis.carbon).", show_default=False),
    no_projections: bool = typer.Option(False, "--no-projections", help="Only measured hardware."),
    top: int = typer.Option(25, "--top", help="Rows shown in the terminal table (JSON and CSV have all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV instead of a table."),
) -> None:
    """Rank hardware x scheme x batch size options for a target load: replicas, $/month, $/1M tokens,
    kWh/month, CO2e/month, memory headroom. Unmeasured hardware is projected from the roofline and
    labelled 'projected'."""
    from effbench.errors import EffbenchError, NoAnswer
    from effbench.hardware import parse_price_options
    from effbench.planner import Demand, PlanRequest, grid_intensity as _grid, load_runs, plan

    if as_json and as_csv:
        raise EffbenchError("choose one of --json and --csv")
    if top < 1:
        raise EffbenchError(f"--top must be at least 1 (got {top})")
    demand = Demand(target_tokens_per_s, target_requests_per_s, prompt_tokens, output_tokens)
    g, source = _grid(region, grid_intensity)
    req = PlanRequest(demand, max_ttft_ms, max_tpot_ms, comma_items(hardware) or None, parse_price_options(price or []), hours_per_month,
                      g, source, model, not no_projections)
    runs = load_runs([*results, *(more_results or [])])
    result = plan([r for run in runs for r in run.records], req, runs, run_hardware)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    elif as_csv:
        typer.echo(_csv(result), nl=False)
    else:
        _print(result, source, top)
    if not result.options:
        # Scripts must notice: exit 1 with the reason (the first exclusion says why).
        why = f": {result.excluded[0]}" if result.excluded else ""
        raise NoAnswer(f"no option meets the limits ({len(result.excluded)} excluded){why}")


def _print(result: Plan, source: str, top: int) -> None:
    if result.options:
        out.print(_table(result, top))
        for line in _notes(result.options[:top]):
            out.print(cell(line), style="dim")
        if len(result.options) > top:
            out.print(f"{len(result.options) - top} more option(s): --top N, --json or --csv", style="dim")
    out.print(cell(f"Grid intensity: {source}. Energy: every replica at full load (an upper bound); power basis measured/estimated "
                   "from the run, else the profile TDP. 'projected' rows are roofline projections, not measurements (--json has the arithmetic)."), style="dim")
    for e in result.excluded[:10]:
        err.print(cell(f"excluded: {e}"), style="dim")
    if len(result.excluded) > 10:
        err.print(f"... {len(result.excluded) - 10} more excluded (see --json)", style="dim")


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)
