"""``effbench report DIR... [--out DIR]``: parse options, write the report, print where it is."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from effbench.cli._console import cell, out, unset, warn


def report_command(
    dirs: list[Path] = typer.Argument(...,
                                      help="Run directories (each with run.json and results.jsonl); several merge into one "
                                           "report comparing hardware.", show_default=False),
    out_dir: Optional[Path] = unset("--out", "-o",
                                    help="Report directory. (default: DIR/report for one run, ./effbench-report for "
                                         "several)"),
    hardware: Optional[str] = unset("--hardware",
                                    help="The profile (id or YAML) that runs storing no hardware profile ran on (runs "
                                         "from effbench < 0.2)."),
) -> None:
    """Write report.md, a self-contained report.html, plots (PNG at 300 dpi, SVG, PDF), results.csv,
    results.tex and summary.json (every quoted figure with its 95% interval and source record). A run's
    hardware is what its run.json stored; this machine is never consulted."""
    from effbench.report import write_report

    files = write_report(dirs, out_dir, hardware)
    for warning in files.warnings:
        warn(warning)
    out.print(cell(f"report: {files.html}"))
    out.print(cell(f"        {files.markdown}"))
    out.print(cell(f"tables: {files.csv}, {files.latex}"))
    out.print(cell(f"figures with their 95% intervals and source records: {files.summary}"))
    out.print(cell(f"plots:  {len(files.plots)} in {files.out / 'plots'} (PNG 300 dpi, SVG and PDF)"))
    for note in files.skipped:
        out.print(cell(f"not drawn: {note}"), style="dim")


def register(app: typer.Typer) -> None:
    """Add ``effbench report`` to the command-line app."""
    app.command("report")(report_command)
