"""``effbench run``: parse options into a ``SweepConfig``, run the sweep with a progress bar,
print a summary table. No measurement logic lives here."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from effbench.cli._console import cell, comma_items, err, fmt, fmt_bytes, out, unset
from effbench.cli.options import with_config_options
from effbench.config import SweepConfig
from effbench.stats import repeats_for_target
from effbench.sweep.observer import SweepObserver

if TYPE_CHECKING:  # pragma: no cover - annotations only: the CLI's start-up loads neither
    from effbench.results.schema import Record, ServingInfo
    from effbench.scenarios import Point

def _launcher_opts(values: Optional[list[str]]) -> Optional[dict[str, str]]:
    """--launcher-opt key=value (repeatable or comma-separated) -> a dict; a malformed one is one line."""
    if not values:
        return None
    from effbench.errors import ConfigError

    opts: dict[str, str] = {}
    for item in comma_items(values):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--launcher-opt '{item}' is not KEY=VALUE (e.g. --launcher-opt partition=gpu)")
        opts[key.strip()] = value.strip()
    return opts


class _ProgressObserver(SweepObserver):
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("sweep", total=1)
        self.current = ""

    def start(self, total: int, done_before: int) -> None:
        self.progress.update(self.task, total=total, completed=done_before)
        if done_before:
            self.message(f"resuming: {done_before} of {total} configurations already done")

    def message(self, text: str) -> None:
        self.progress.console.print(cell(text), style="dim")

    def config_started(self, point: Point) -> None:
        self.current = point.label()
        self.progress.update(self.task, description=cell(f"{self.current}  (warm-up)").plain)

    def repeat_done(self, point: Point, repeats: int) -> None:
        self.progress.update(self.task, description=cell(f"{self.current}  repeat {repeats}").plain)

    def config_done(self, point: Point, record: Record) -> None:
        self.progress.advance(self.task)
        if record.error:
            self.progress.console.print(cell(f"{point.label()}: {record.error}"), style="yellow")


def _energy_cell(r: Record) -> str:
    e = r.energy
    if e.tokens_per_joule is None:
        return "-"
    mark = {"measured": "", "estimated": "~"}.get(e.status, "?")
    return f"{mark}{e.tokens_per_joule:,.1f}"


def _short_note(r: Record) -> str:
    s = r.stats
    return f"short of ±{s.ci_target:.0%} ({s.stop_reason})" if s.short_of_target else ""


def target_hint(records: list[Record]) -> Optional[str]:
    """One line for the configurations whose repeats ended before the interval reached its target:
    how much they spread and about how many repeats (and how long) the target would take."""
    short = [r for r in records if not r.error and r.stats.short_of_target]
    if not short:
        return None
    # short of target: both the interval and its target are known
    needed = [repeats_for_target(r.stats.repeats, ci, target) for r in short
              if (ci := r.stats.ci95_rel) is not None and (target := r.stats.ci_target) is not None]
    seconds = [n * (r.stats.duration_s or 0.0) / max(1, r.stats.repeats + r.stats.excluded_repeats + (r.stats.warmup or 0))
               for n, r in zip(needed, short)]
    spreads = [r.stats.spread_cv for r in short if r.stats.spread_cv is not None]

    def span(lo: str, hi: str) -> str:
        return lo if lo == hi else f"{lo} to {hi}"
    spread = f"their repeats spread {span(f'{min(spreads):.0%}', f'{max(spreads):.0%}')}, so " if spreads else ""
    return (f"{len(short)} configuration(s) stopped before the ±{short[0].stats.ci_target:.0%} target; {spread}about "
            f"{span(str(min(needed)), str(max(needed)))} repeats "
            f"(~{span(f'{min(seconds) / 60:.1f}', f'{max(seconds) / 60:.1f}')} min per configuration) "
            "would reach it: raise --max-repeats and --max-time-s, or measure on a quieter machine "
            "(other work, or a shared VM's neighbours, vary each repeat's speed).")


def summary_table(records: list[Record], title: str) -> Table:
    """The terminal table of offline records a run prints at its end."""
    table = Table(title=title)
    cols = ["model", "scheme", "batch", "prefill tok/s", "decode tok/s", "TTFT ms", "TPOT ms",
            "tok/J", "peak RSS", "CI95", "n", "ppl", "note"]
    for c in cols:
        table.add_column(c, justify="right" if c not in ("model", "scheme", "note") else "left")
    for r in records:
        t = r.throughput
        note = r.error or "; ".join(n for n in ("busy machine" if r.stats.interference else "", _short_note(r)) if n)
        table.add_row(
            cell(r.model.id), cell(r.quantization.scheme), str(r.workload.batch_size),
            fmt(t.prefill_tokens_per_s), fmt(t.decode_tokens_per_s), fmt(t.ttft_s, 1, 1000), fmt(t.tpot_s, 1, 1000),
            _energy_cell(r), fmt_bytes(r.memory.peak_host_bytes),
            f"±{r.stats.ci95_rel:.1%}" if r.stats.ci95_rel is not None else "-",
            str(r.stats.repeats), fmt(r.quality.perplexity, 2), cell(note),
        )
    return table


def serving_table(records: list[Record], title: str) -> Table:
    """One row per load point of a serving sweep: what a planner reads off a replica."""
    table = Table(title=title)
    cols = ["model", "scheme", "offered", "achieved req/s", "out tok/s", "TTFT p50 ms", "TTFT p95 ms",
            "TPOT p50 ms", "TPOT p95 ms", "goodput req/s", "J/request", "failed", "note"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("model", "scheme", "note") else "right")
    for r in records:
        s, e = r.serving, r.energy
        ttft, tpot = (s.ttft_ms, s.tpot_ms) if s else (None, None)
        mark = {"measured": "", "estimated": "~"}.get(e.status, "?")
        note = r.error or (serving_note(s) if s else "")
        table.add_row(
            cell(r.model.id), cell(r.quantization.scheme), s.load_label if s else str(r.workload.batch_size),
            fmt(s.achieved_rate if s else None, 2), fmt(s.output_tokens_per_s if s else None),
            fmt(ttft.p50 if ttft else None, 1), fmt(ttft.p95 if ttft else None, 1),
            fmt(tpot.p50 if tpot else None, 1), fmt(tpot.p95 if tpot else None, 1),
            fmt(s.goodput if s else None, 2),
            f"{mark}{e.joules_per_request:,.2f}" if e.joules_per_request is not None else "-",
            str(s.failed) if s and s.failed is not None else "-", cell(note),
        )
    return table


def serving_note(s: ServingInfo) -> str:
    """What the row's figures rest on: a capacity found, saturation, or no steady state."""
    notes = []
    if s.capacity is not None:
        c = s.capacity
        notes.append(f"capacity {c.rate:.3g} req/s [{c.ci95[0]:.3g}, {c.ci95[1]:.3g}]" if c.rate is not None and c.ci95
                     else f"capacity {c.rate:.3g} req/s ({c.reason})" if c.rate is not None else f"no capacity: {c.reason}")
    if s.saturated:
        notes.append(f"saturated: {s.saturation_reason}")
    if s.steady is None and s.whole is not None:
        notes.append("whole point (no steady state)")
    return "; ".join(notes)


@with_config_options(SweepConfig)
def run_command(
    config: Optional[Path] = typer.Argument(None, help="YAML sweep file; its keys are these options' names with underscores "
                                                       "(or grouped in sections: offline, serving, gpu, launcher).",
                                            show_default=False),
    launcher_opt: Optional[list[str]] = unset("--launcher-opt", help="Launcher option KEY=VALUE, repeatable (e.g. timeout=600, "
                                                                     "partition=gpu, address=ray://host:10001)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    overrides: Optional[dict[str, Any]] = None,
) -> None:
    """Run a sweep (models x schemes x batch sizes x lengths) and write run.json + results.jsonl.

    With no options it benchmarks the bundled SmolLM2-135M on this machine at batch sizes 1, 4 and 16.
    """
    from effbench.config import load_config
    from effbench.sweep import Sweep

    overrides = {**(overrides or {}), "launcher_opt": _launcher_opts(launcher_opt)}
    sweep = Sweep(load_config(config, overrides))  # checks every input before the progress bar starts
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=quiet) as progress:
        result = sweep.run(_ProgressObserver(progress))
    serving = any(r.serving is not None for r in result.records) or sweep.config.scenario == "serving"
    table = serving_table if serving else summary_table
    out.print(table(result.records, f"effbench run {result.run_id}"))
    hint = None if serving else target_hint(result.records)
    if hint:
        out.print(cell(hint), style="dim")
    estimated = any(r.energy.status == "estimated" for r in result.records)
    if estimated:
        what = "J/request" if serving else "tok/J"
        out.print(f"~ {what} is estimated (TDP x utilisation), not measured; see energy.basis in the records.", style="dim")
    out.print(cell(f"results: {result.path / 'results.jsonl'}"))
    if result.records and all(r.error for r in result.records):
        from effbench.errors import EffbenchError

        raise EffbenchError("no configuration could be measured; the note column above says why for each")


def register(app: typer.Typer) -> None:
    """Add ``effbench run`` to the command-line app."""
    app.command("run")(run_command)
