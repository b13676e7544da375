"""``effbench sensors``: which energy sensors work here, their kind, update period and accuracy;
``sensors integrate`` a recorded power trace over a window; ``sensors attach`` a trace to a finished run."""
from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from effbench.cli._console import cell, err, fmt, out
from effbench.errors import EffbenchError

if TYPE_CHECKING:
    from effbench.sensors.trace import Trace

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
    from effbench.hardware.detection import check_device
    from effbench.sensors import available

    infos = available(check_device(device))
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


def _time_option(value: Optional[str], name: str) -> Optional[float]:
    if value is None:
        return None
    from effbench.sensors.trace import parse_time

    try:
        t = parse_time(value)
    except ValueError as e:
        raise EffbenchError(f"{name}: {e}") from None
    if not _MIN_TIME <= t <= _MAX_TIME:
        raise EffbenchError(f"{name}: '{value}' is out of range: give epoch seconds between {_MIN_TIME:.0f} and "
                            f"{_MAX_TIME:.0f} (1970 to 3000) or an ISO-8601 time")
    return t


_MIN_TIME, _MAX_TIME = 0.0, 32_503_680_000.0  # 1970-01-01 .. 3000-01-01 UTC


def _when(t: float) -> str:
    return datetime.fromtimestamp(t).isoformat(timespec="milliseconds")


def _load_trace(path: Path) -> Trace:
    """The trace, with one warning line on stderr for each thing repaired while reading it."""
    from effbench.sensors.trace import load_trace

    t = load_trace(path)
    for w in t.warnings:
        sys.stderr.write(f"effbench: warning: {w}\n")
    return t


@sensors_app.command("integrate")
def integrate_cmd(
    trace: Path = typer.Argument(..., help="Power trace CSV: nvidia-smi --query-gpu=timestamp,index,power.draw --format=csv -lms N, or timestamp,watts."),
    start: Optional[str] = typer.Option(None, "--start", help="Window start: ISO-8601 or epoch seconds (default: the trace's first sample)."),
    end: Optional[str] = typer.Option(None, "--end", help="Window end: ISO-8601 or epoch seconds (default: the trace's last sample)."),
    gpu: Optional[int] = typer.Option(None, "--gpu", help="Only this GPU index of an nvidia-smi trace (default: all, summed)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Integrate a recorded power trace over a window: joules, mean watts, duration, coverage."""
    from effbench.sensors.base import MIN_COVERAGE
    from effbench.sensors.trace import integrate_trace

    t = _load_trace(trace)
    te = integrate_trace(t, _time_option(start, "--start"), _time_option(end, "--end"), gpu)
    if te.coverage == 0.0:
        raise EffbenchError(f"the trace has no samples in the window {_when(te.start)} to {_when(te.end)}; "
                            f"it covers {_when(t.start)} to {_when(t.end)} (epoch {t.start:.3f} to {t.end:.3f})")
    if te.coverage < MIN_COVERAGE:
        err.print(f"effbench: warning: the trace covers only {te.coverage:.1%} of the window (it spans {_when(t.start)} "
                  f"to {_when(t.end)}); the rest holds the nearest samples' power", style="yellow")
    result = {
        "trace": str(trace), "kind": t.kind, "start": te.start, "end": te.end, "duration_s": te.duration_s,
        "joules": te.joules, "mean_power_w": te.mean_power_w, "coverage": te.coverage,
        "uncertainty_rel": te.uncertainty_rel, "sampling_interval_s": te.sampling_interval_s,
        "warnings": t.warnings,
        "domains": {d: {"joules": i.joules, "mean_power_w": i.mean_power_w, "coverage": i.coverage,
                        "samples": i.samples} for d, i in te.integrals.items()},
    }
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"{trace.name}: {_when(te.start)} to {_when(te.end)}")
    for col in ("domain", "joules", "mean W", "duration", "coverage", "samples"):
        table.add_column(col, justify="left" if col == "domain" else "right")
    for d, i in te.integrals.items():
        table.add_row(cell(d), fmt(i.joules, 2), fmt(i.mean_power_w, 2), f"{te.duration_s:.3f} s",
                      f"{i.coverage:.1%}", str(i.samples))
    if len(te.integrals) > 1:
        table.add_row("total", fmt(te.joules, 2), fmt(te.mean_power_w, 2), f"{te.duration_s:.3f} s",
                      f"{te.coverage:.1%}", "")
    out.print(table)
    interval = f"{te.sampling_interval_s * 1000:.0f} ms" if te.sampling_interval_s else "unknown"
    uncertainty = f"±{te.uncertainty_rel:.1%}" if te.uncertainty_rel is not None else "unknown"
    out.print(f"joules {te.joules:.3f}  mean {fmt(te.mean_power_w, 2)} W  duration {te.duration_s:.3f} s  "
              f"coverage {te.coverage:.1%}  sampling interval {interval}  uncertainty {uncertainty}")


@sensors_app.command("attach")
def attach_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'effbench run'."),
    trace: Path = typer.Argument(..., help="Power trace CSV recorded during the run (same formats as 'integrate')."),
    gpu: Optional[int] = typer.Option(None, "--gpu", help="Only this GPU index of an nvidia-smi trace (default: all, summed)."),
    accuracy: Optional[float] = typer.Option(None, "--accuracy", help="The meter's relative accuracy, e.g. 0.01 for 1% (nvidia-smi traces: 0.05)."),
) -> None:
    """Recompute every record's energy of a finished run from a power trace, over its own windows."""
    from effbench.measure.attach import BACKUP_FILE, attach_trace

    report = attach_trace(run_dir, _load_trace(trace), gpu, accuracy)
    out.print(f"attached {trace} to {report.updated} record(s) in {run_dir} (originals kept in {BACKUP_FILE}); {report.idle_note}")
    for s in report.skipped:
        err.print(f"skipped {s}")
    if report.unavailable:
        err.print(f"effbench: warning: {report.unavailable} of {report.updated} record(s) now have unavailable energy: "
                  "the trace has no samples in some of their windows", style="yellow")


def register(app: typer.Typer) -> None:
    app.add_typer(sensors_app, name="sensors")
