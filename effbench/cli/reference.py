"""``effbench reference list / show KEY``: the published reference data shipped with effbench (basis
``reference``, never ``measured``), with its source and citation."""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from effbench.cli._console import cell, fmt, out, unset

reference_app = typer.Typer(help="Published reference data shipped with effbench (ML.ENERGY Leaderboard v3).",
                            no_args_is_help=True)


@reference_app.command("list")
def list_command(
    model: Optional[str] = unset("--model", "-m", help="Only this model: arch:NAME or a part of the published id."),
    hardware: Optional[str] = unset("--hardware", help="Only this GPU profile id (h100-sxm, b200)."),
    task: Optional[str] = unset("--task", "--workload", help="Only this task: lm-arena-chat, gpqa, sourcegraph-fim."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the reference points (one per published configuration), with their keys for 'show'."""
    from effbench.errors import EffbenchError
    from effbench.reference import CITATION, SOURCE, TASKS, points

    if task is not None and task not in TASKS:
        raise EffbenchError(f"unknown task '{task}': use one of {', '.join(TASKS)}")
    want = model[len("arch:"):].lower() if model and model.lower().startswith("arch:") else (model or "").lower()
    rows = [p for p in points()
            if (not want or p.arch == want or want in p.model_id.lower()) and (hardware is None or p.profile == hardware)
            and (task is None or p.task == task)]
    if not rows:
        raise EffbenchError("no reference point matches; 'effbench reference list' shows them all")
    if as_json:
        typer.echo(json.dumps({"basis": "reference", "source": SOURCE, "citation": CITATION,
                               "points": [p.to_dict() for p in rows]}, indent=2))
        return
    table = Table(title=f"Reference data (basis 'reference', published, not measured by effbench): {len(rows)} points")
    for c in ("key", "arch", "GPUs", "seqs", "batch", "tok/s", "W", "J/tok", "ITL p50", "ITL p95"):
        table.add_column(c, justify="left" if c in ("key", "arch") else "right", no_wrap=c == "key")
    for p in rows:
        table.add_row(cell(p.key), cell(p.arch or "-"), f"{p.num_gpus}x {p.gpu}", str(p.max_num_seqs), fmt(p.avg_batch_size, 0),
                      fmt(p.output_tokens_per_s, 0), fmt(p.power_w, 0), fmt(p.joules_per_token, 3), fmt(p.itl_ms["p50"], 1),
                      fmt(p.itl_ms["p95"], 1))
    out.print(table)
    out.print(cell(f"Source: {SOURCE}. Cite: {CITATION}. GPU energy only (all GPUs of the configuration), vLLM, "
                   "steady-state window; 'arch' names the effbench architecture where it ships one."), style="dim")


@reference_app.command("show")
def show_command(
    key: str = typer.Argument(..., help="A key from 'effbench reference list'."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show one reference point with its source."""
    from effbench.reference import CITATION, SOURCE, find

    p = find(key)
    d = {**p.to_dict(), "citation": CITATION, "source_detail": SOURCE}
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    table = Table(title=f"Reference point {p.key} (basis reference)", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for k, v in d.items():
        table.add_row(cell(k), cell(json.dumps(v) if isinstance(v, dict) else v))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add ``effbench reference`` (list, show) to the command-line app."""
    app.add_typer(reference_app, name="reference")
