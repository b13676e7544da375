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

from effbench.cli._console import cell, comma_items, err, fmt, out, unset, warn
from effbench.planner import HOURS_PER_MONTH, RANDOM_WEIGHTS_NOTE, Plan, PlanOption

CSV_FIELDS = ("rank", "hardware", "hardware_name", "gpus_per_replica", "basis", "projected_from", "source", "model", "backend",
              "scheme", "batch_size", "kv_max_concurrency", "serving_load", "capacity_tokens_per_s", "band_tokens_per_s",
              "replicas", "active_replicas",
              "utilisation", "ttft_ms", "tpot_ms", "price_per_hour_usd", "price_date", "price_stale", "usd_per_hour",
              "usd_per_month",
              "spot_price_per_hour_usd", "spot_usd_per_month", "usd_per_million_tokens", "usd_per_million_tokens_at_capacity",
              "power_w", "power_basis", "joules_per_token", "band_joules_per_token", "kwh_per_month", "kg_co2e_per_month",
              "memory_gb", "peak_memory_gb", "memory_headroom_gb", "price_source", "quality_flag", "random_weights", "notes")
TABLE_WIDTH = 100  # the table fits a 100-column terminal; JSON and CSV carry every figure


def _usd(v: Optional[float], digits: int = 2) -> str:
    return "-" if v is None else f"${v:,.{digits}f}"


BASIS_SHORT = {"measured": "meas", "reference": "ref", "projected": "proj"}


def _band(o: PlanOption, key: str) -> Optional[float]:
    return o.band.get(key) if o.band else None


def _table(p: Plan, top: int) -> Table:
    from rich import box

    rows = p.options[:top]
    show_model = len({o.model for o in rows}) > 1
    table = Table(title=f"effbench plan: {p.demand}; {p.hours_per_month:g} h/month", box=box.SIMPLE_HEAD, padding=(0, 0),
                  pad_edge=False,
                  caption="basis: meas(ured) / ref(erence, published) / proj(ected); KV max: the concurrency the KV cache holds; "
                          "band: tok/s within x/÷ this (95%)",
                  caption_justify="left")
    cols = ["#", "hardware", "basis", *(["model"] if show_model else []), "scheme", "conc", "KV\nmax", "tok/s\n/replica", "band",
            "repl", "TPOT\np95 ms", "$/month", "$/1M tok\nat cap.", "$/1M tok\nat target", "free\nGB"]
    for c in cols:
        left = c in ("hardware", "basis", "model", "scheme")
        table.add_column(c, justify="left" if left else "right", no_wrap=True, min_width=max(map(len, c.split("\n"))))
    for o in rows:
        basis = Text(BASIS_SHORT.get(o.basis, o.basis), style={"projected": "yellow", "reference": "cyan"}.get(o.basis, "green"))
        spare = o.replicas - o.active_replicas
        band = _band(o, "output_tokens_per_s")
        table.add_row(str(o.rank), cell(f"{o.gpus_per_replica}x {o.hardware}" if o.gpus_per_replica > 1 else o.hardware), basis,
                      *([cell(o.model)] if show_model else []), cell(o.scheme), str(o.batch_size),
                      "-" if o.kv_max_concurrency is None else f"{o.kv_max_concurrency:,}",
                      fmt(o.capacity_tokens_per_s, 0),
                      ("-" if band is None else f"x{band + 1:.0f}" if band >= 9 else f"x{band + 1:.2f}"),
                      f"{o.active_replicas}+{spare}" if spare else str(o.replicas), fmt(o.tpot_ms, 1),
                      fmt(o.usd_per_month, 0) + ("!" if o.price_stale else ""), fmt(o.usd_per_million_tokens_at_capacity, 3),
                      fmt(o.usd_per_million_tokens, 3), fmt(o.memory_headroom_gb, 0))
    return table


def _short_note(o: PlanOption) -> str:
    parts = []
    if o.basis == "projected" and o.projected_from != "reference fit":
        band = _band(o, "output_tokens_per_s")
        parts.append(f"projected from a run on {o.projected_from}" + (" (a different kind of device: 95% band up to "
                                                                      f"{band + 1:.0f}x)" if band else
                                                                     " (roofline scaling; no fitted band)"))
    elif o.basis == "projected":
        parts.append("projected by the GPU step-time model fitted to the ML.ENERGY v3 reference data (band: 95%, from held-out "
                     "residuals per family and basis: new model, new GPU, new GPU count)")
    elif o.basis == "reference":
        parts.append("reference: ML.ENERGY Leaderboard v3, published (vLLM); TPOT = published p95 inter-token latency")
    else:
        parts += [n for n in o.notes if not n.startswith("no price")]
    if o.basis != "measured":
        parts += [n for n in o.notes if n.startswith(("QUALITY", "requests shaped", "memory:"))]
        if o.random_weights:
            parts.append(RANDOM_WEIGHTS_NOTE)
    return "; ".join(dict.fromkeys(parts))


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
        row["band_tokens_per_s"] = _band(o, "output_tokens_per_s")
        row["band_joules_per_token"] = _band(o, "joules_per_token")
        w.writerow(row)
    return buf.getvalue()


def plan_command(
    results: Optional[list[Path]] = unset("--results", "-r",
                                          help="Run directories from 'effbench run' (or their results.jsonl): --results A "
                                               "B, or --results A --results B. Optional with --model arch:NAME."),
    more_results: Optional[list[Path]] = typer.Argument(None, help="More run directories (so '--results A B' reads both).",
                                                        show_default=False, metavar="[DIR]..."),
    run_hardware: Optional[str] = unset("--run-hardware",
                                        help="The profile (id or YAML) that results storing no hardware profile ran on "
                                             "(runs from effbench < 0.2)."),
    target_tokens_per_s: Optional[float] = unset("--target-tokens-per-s", help="Output tokens per second to serve."),
    target_requests_per_s: Optional[float] = unset("--target-requests-per-s",
                                                   help="Requests per second to serve (with --prompt-tokens and "
                                                        "--output-tokens)."),
    prompt_tokens: Optional[int] = unset("--prompt-tokens", help="Prompt length of a request, in tokens (requests form)."),
    output_tokens: Optional[int] = unset("--output-tokens", help="Output length of a request, in tokens (requests form)."),
    max_ttft_ms: Optional[float] = unset("--max-ttft-ms", help="Drop options whose time to first token exceeds this."),
    max_tpot_ms: Optional[float] = unset("--max-tpot-ms", help="Drop options whose time per output token exceeds this."),
    hardware: Optional[list[str]] = unset("--hardware", help="Only these profile ids, comma-separated (default: all)."),
    model: Optional[str] = unset("--model", "-m", help="Only records of this model id; arch:NAME (or "
                                                       "arch:PATH of a config.json) also sizes GPUs nobody measured "
                                                       "(reference data, then the fitted projection)."),
    workload: Optional[str] = unset("--workload", help="Request shape of a tokens/s target for reference/projected options: "
                                                       "lm-arena-chat (default), gpqa, sourcegraph-fim."),
    max_ppl_rise: float = typer.Option(10.0, "--max-ppl-rise",
                                       help="Exclude schemes whose perplexity rises more than this many percent over the "
                                            "unquantized baseline."),
    show_flagged: bool = typer.Option(False, "--show-flagged",
                                      help="Keep quality-flagged schemes, marked, instead of excluding them."),
    max_utilisation: float = typer.Option(0.8, "--max-utilisation",
                                          help="Load each replica to at most this share of its capacity (queueing headroom; "
                                               "measured serving records excepted)."),
    redundancy: Optional[str] = unset("--redundancy", help="Spare replicas: N+k (e.g. N+1)."),
    project_from_cpu: bool = typer.Option(False, "--project-from-cpu",
                                          help="Also project CPU runs to GPUs (roofline scaling, wide band; off by default)."),
    price: Optional[list[str]] = unset("--price", help="Price override ID=USD_PER_HOUR (repeatable or comma-separated)."),
    hours_per_month: float = typer.Option(HOURS_PER_MONTH, "--hours-per-month", help="Hours billed per month."),
    grid_intensity: Optional[float] = unset("--grid-intensity",
                                            help="Grid carbon intensity, gCO2e/kWh (default: world average)."),
    region: Optional[str] = unset("--region", help="Grid region for carbon intensity (needs effbench.analysis.carbon)."),
    no_projections: bool = typer.Option(False, "--no-projections", help="Only measured hardware."),
    top: int = typer.Option(25, "--top", help="Rows shown in the terminal table (JSON and CSV have all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV instead of a table."),
) -> None:
    """Rank hardware x scheme x batch size options for a target load: replicas, $/month, $/1M tokens,
    kWh/month, CO2e/month, memory headroom. Hardware nobody measured is labelled 'reference' (published
    data) or 'projected' (the fitted GPU projection for arch:NAME, else a measured run's roofline), with its band."""
    from effbench.errors import EffbenchError, NoAnswer
    from effbench.hardware import parse_price_options
    from effbench.planner import Demand, PlanRequest, load_runs, parse_redundancy, plan
    from effbench.planner import grid_intensity as _grid

    if as_json and as_csv:
        raise EffbenchError("choose one of --json and --csv")
    if top < 1:
        raise EffbenchError(f"--top must be at least 1 (got {top})")
    demand = Demand(target_tokens_per_s, target_requests_per_s, prompt_tokens, output_tokens)
    g, source = _grid(region, grid_intensity)
    if not (max_ppl_rise >= 0):
        raise EffbenchError(f"--max-ppl-rise must be a percentage >= 0 (got {max_ppl_rise:g})")
    req = PlanRequest(demand, max_ttft_ms, max_tpot_ms, comma_items(hardware) or None, parse_price_options(price or []),
                      hours_per_month,
                      g, source, model, not no_projections, project_from_cpu=project_from_cpu, max_ppl_rise=max_ppl_rise / 100,
                      show_flagged=show_flagged, max_utilisation=max_utilisation, redundancy=parse_redundancy(redundancy),
                      workload=workload)
    dirs = [*(results or []), *(more_results or [])]
    if workload is not None:
        from effbench.reference import workload as _check_workload

        _check_workload(workload)
    if not dirs and not (model and model.lower().startswith("arch:")):
        raise EffbenchError("no results given: pass --results DIR (a run directory from 'effbench run'), "
                            "or --model arch:NAME to size a model from the reference data and the projection")
    runs = load_runs(dirs) if dirs else []
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
    from rich.console import Console

    for w in result.warnings:
        warn(w)
    if result.options:
        wide = out.width if out.width < TABLE_WIDTH else TABLE_WIDTH
        Console(file=out.file, width=wide, highlight=False, force_terminal=out.is_terminal).print(_table(result, top))
        for line in _notes(result.options[:top]):
            out.print(cell(line), style="dim")
        if len(result.options) > top:
            out.print(f"{len(result.options) - top} more option(s): --top N, --json or --csv", style="dim")
    spares = f" + {result.redundancy} spare(s) (N+{result.redundancy})" if result.redundancy else ""
    out.print(cell(f"replicas: the load at <= {result.max_utilisation:.0%} of capacity{spares}; '!' after $/month: "
                   f"price older than 180 days. Grid intensity: {source}. Energy: every replica at full load (an upper "
                   "bound). kWh, CO2e, spot prices, bands and sources: --json or --csv."), style="dim")
    excluded = [e for e in result.excluded if e not in result.warnings]  # a warning is said once
    for e in excluded[:10]:
        err.print(cell(f"excluded: {e}"), style="dim")
    if len(excluded) > 10:
        err.print(f"... {len(excluded) - 10} more excluded (see --json)", style="dim")


def register(app: typer.Typer) -> None:
    """Add ``effbench plan`` to the command-line app."""
    app.command("plan")(plan_command)
