"""``effbench project``: one projected point (a model, GPU, GPUs per replica, concurrency and request
shape nobody measured), from the projection model fitted to the published reference data; basis
``reference`` where the data has exactly that point."""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from effbench.cli._console import cell, fmt, out, unset


def project_command(
    model: str = typer.Option(..., "--model", "-m", help="An architecture: arch:NAME (see 'effbench models') or the path of a "
                                                         "Hugging Face config.json.",
                              show_default=False),
    hardware: str = typer.Option(..., "--hardware", help="A GPU profile id (see 'effbench hardware list') or a profile YAML.",
                                 show_default=False),
    gpus: int = typer.Option(1, "--gpus", help="GPUs per replica (tensor parallel inside one node): 1, 2, 4 or 8."),
    concurrency: int = typer.Option(..., "--concurrency", help="Sequences served at once (vLLM's max_num_seqs).",
                                    show_default=False),
    workload: Optional[str] = unset("--workload", help="A reference task: lm-arena-chat, gpqa or sourcegraph-fim."),
    prompt_tokens: Optional[int] = unset("--prompt-tokens", help="Prompt length of a request, in tokens."),
    output_tokens: Optional[int] = unset("--output-tokens", help="Output length of a request, in tokens."),
    scheme: str = typer.Option("bf16", "--scheme", help="Weights as served: bf16, fp16, fp8, int8, int4, mxfp4."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (for scripts)."),
) -> None:
    """Project output tokens/s, TPOT (inter-token latency p50/p90/p95), effective batch, power, J/token and
    memory of a GPU serving configuration, with the 95% band of the projection (held-out error on
    published GPU data, per family and kind of extrapolation)."""
    from effbench.analysis.projection import project_point

    r = project_point(model, hardware, gpus=gpus, concurrency=concurrency, workload=workload,
                      prompt_tokens=prompt_tokens, output_tokens=output_tokens, scheme=scheme)
    if as_json:
        typer.echo(json.dumps(r, indent=2))
        return
    band = r["band"]
    table = Table(title=f"effbench project: {r['model']} {r['scheme']} on {r['gpus']}x {r['hardware']}, "
                        f"concurrency {r['concurrency']} ({r['basis']})")
    for c in ("figure", "value", "95% band"):
        table.add_column(c, justify="left" if c == "figure" else "right")

    def rng(key: str, digits: int) -> str:
        iv = (band.get("interval") or {}).get(key)
        return f"{fmt(iv[0], digits)} - {fmt(iv[1], digits)}" if iv else "-"

    table.add_row("output tokens/s", fmt(r["output_tokens_per_s"], 0), rng("output_tokens_per_s", 0))
    table.add_row("TPOT (ITL) p50 ms", fmt(r["tpot_ms"], 1), rng("itl_ms.p50", 1))
    table.add_row("TPOT (ITL) p90 ms", fmt((r.get("itl_ms") or {}).get("p90"), 1), rng("itl_ms.p90", 1))
    table.add_row("TPOT (ITL) p95 ms", fmt(r["tpot_p95_ms"], 1), rng("itl_ms.p95", 1))
    table.add_row("running sequences (effective batch)", fmt(r["effective_batch"], 0), "-")
    table.add_row("power W (all GPUs)", fmt(r["power_w"], 0), rng("power_w", 0))
    table.add_row("J/token", fmt(r["joules_per_token"], 3), rng("joules_per_token", 3))
    table.add_row("memory GB", f"{fmt(r['memory_gb'], 1)} of {fmt(r.get('device_memory_gb', r['memory_capacity_gb']), 1)}", "-")
    table.add_row("max concurrency that fits", str(r["max_concurrency"]), "-")
    out.print(table)
    out.print(cell(f"basis: {r['basis']}; {r['source']}"), style="dim")
    out.print(cell(f"band: {band['method']}"), style="dim")
    for n in r["notes"]:
        out.print(cell(n), style="dim")


def register(app: typer.Typer) -> None:
    """Add ``effbench project`` to the command-line app."""
    app.command("project")(project_command)
