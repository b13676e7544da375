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
            f"±{i.accuracy_rel:.0%}" if i.accuracy_rel is not None else ("unstated" if i.kind != "none" else "-"),
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


def _load_trace(path: Path, gpu_model: Optional[str] = None) -> Trace:
    """The trace, with one warning line on stderr for each thing repaired while reading it."""
    from effbench.sensors.trace import load_trace

    t = load_trace(path, gpu_model)
    for w in t.warnings:
        sys.stderr.write(f"effbench: warning: {w}\n")
    return t


_GPU_MODEL_OPTION = typer.Option(
    None, "--gpu-model", help="The GPU the trace was logged on (e.g. H100, 'NVIDIA A100-SXM4-80GB'), when it has no "
    "name column: its generation's sensor semantics (1 s averaging, part-time sampling) enter the uncertainty.")


def _check_accuracy(accuracy: Optional[float]) -> None:
    if accuracy is not None and not 0.0 <= accuracy < 1.0:
        raise EffbenchError(f"--accuracy {accuracy}: give a relative bound between 0 and 1, e.g. 0.02 for ±2%")


@sensors_app.command("integrate")
def integrate_cmd(
    trace: Path = typer.Argument(...,
                                 help="Power trace CSV: nvidia-smi --query-gpu=timestamp,index,power.draw --format=csv -lms N, "
                                      "or timestamp,watts."),
    start: Optional[str] = typer.Option(None, "--start",
                                        help="Window start: ISO-8601 or epoch seconds (default: the trace's first sample)."),
    end: Optional[str] = typer.Option(None, "--end",
                                      help="Window end: ISO-8601 or epoch seconds (default: the trace's last sample)."),
    gpu: Optional[int] = typer.Option(None, "--gpu", help="Only this GPU index of an nvidia-smi trace (default: all, summed)."),
    gpu_model: Optional[str] = _GPU_MODEL_OPTION,
    accuracy: Optional[float] = typer.Option(None, "--accuracy",
                                             help="The meter's stated relative accuracy bound, e.g. 0.01 for ±1%."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Integrate a recorded power trace over a window: joules with a 95% interval, mean watts,
    duration, coverage (the share the sensor observed)."""
    from effbench.sensors.base import MIN_COVERAGE
    from effbench.sensors.trace import integrate_trace
    from effbench.stats import CONFIDENCE

    _check_accuracy(accuracy)
    t = _load_trace(trace, gpu_model)
    te = integrate_trace(t, _time_option(start, "--start"), _time_option(end, "--end"), gpu, accuracy)
    if te.reach == 0.0:
        raise EffbenchError(f"the trace has no samples in the window {_when(te.start)} to {_when(te.end)}; "
                            f"it covers {_when(t.start)} to {_when(t.end)} (epoch {t.start:.3f} to {t.end:.3f})")
    if te.reach < MIN_COVERAGE:
        err.print(f"effbench: warning: the trace covers only {te.reach:.1%} of the window (it spans {_when(t.start)} "
                  f"to {_when(t.end)}); the rest holds the nearest samples' power", style="yellow")
    reading = te.reading()
    generations = sorted({g.name for d in te.integrals if (g := t.generation(d))})
    result = {
        "trace": str(trace), "kind": t.kind, "start": te.start, "end": te.end, "duration_s": te.duration_s,
        "joules": te.joules, "mean_power_w": te.mean_power_w, "coverage": reading.coverage,
        "uncertainty_rel": reading.uncertainty_rel, "confidence": CONFIDENCE,
        "sampling_interval_s": te.sampling_interval_s, "reach": te.reach, "flags": reading.flags,
        "gpu_models": {d: m for d in te.integrals if (m := t.gpu_model or t.gpu_models.get(d))},
        "generations": generations, "warnings": t.warnings,
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
    unc = reading.uncertainty_rel
    interval_j = f" ± {unc * te.joules:.3f} J (95%)" if unc is not None else " (uncertainty unknown)"
    uncertainty = f"±{unc:.1%} (95%)" if unc is not None else "unknown"
    out.print(f"joules {te.joules:.3f}{interval_j}  mean {fmt(te.mean_power_w, 2)} W  duration {te.duration_s:.3f} s  "
              f"coverage {reading.coverage or 0.0:.1%}  sampling interval {interval}  uncertainty {uncertainty}")
    if reading.flags:
        out.print(f"flags: {', '.join(reading.flags)}" + (" (NVIDIA states no accuracy for this GPU, or the meter's "
                  "is not given: pass --accuracy)" if "accuracy-unstated" in reading.flags else ""))


@sensors_app.command("attach")
def attach_cmd(
    run_dir: Path = typer.Argument(..., help="A run directory written by 'effbench run'."),
    trace: Path = typer.Argument(..., help="Power trace CSV recorded during the run (same formats as 'integrate')."),
    gpu: Optional[int] = typer.Option(None, "--gpu", help="Only this GPU index of an nvidia-smi trace (default: all, summed)."),
    accuracy: Optional[float] = typer.Option(None, "--accuracy",
                                             help="The meter's stated relative accuracy bound, e.g. 0.01 for ±1% (nvidia-smi "
                                                  "traces: the GPU generation's, where NVIDIA states one)."),
    gpu_model: Optional[str] = _GPU_MODEL_OPTION,
) -> None:
    """Recompute every record's energy of a finished run from a power trace, over its own windows."""
    from effbench.measure.attach import BACKUP_FILE, attach_trace

    _check_accuracy(accuracy)
    report = attach_trace(run_dir, _load_trace(trace, gpu_model), gpu, accuracy)
    out.print(f"attached {trace} to {report.updated} record(s) in {run_dir} (originals kept in {BACKUP_FILE}); "
              f"{report.idle_note}")
    for s in report.skipped:
        err.print(f"skipped {s}")
    if report.unavailable:
        err.print(f"effbench: warning: {report.unavailable} of {report.updated} record(s) now have unavailable energy: "
                  "the trace has no samples in some of their windows", style="yellow")


def register(app: typer.Typer) -> None:
    """Add ``effbench sensors`` (and its integrate and attach commands) to the command-line app."""
    app.add_typer(sensors_app, name="sensors")
