"""``effbench compare BASE NEW``: deltas per matched configuration with significance; exit 1 on a
significant regression beyond the threshold, or on a configuration that succeeded in BASE but
failed or is missing in NEW (unless --allow-missing) (for CI), 0 otherwise."""
from __future__ import annotations

import json

import typer
from rich.table import Table
from rich.text import Text

from effbench.analysis.compare import METRICS, Comparison, MetricDelta
from effbench.cli._console import cell, err, fmt, fmt_bytes, out

SHOWN = ("decode_tokens_per_s", "prefill_tokens_per_s", "ttft_s", "tpot_s", "tokens_per_joule", "peak_memory_bytes", "perplexity")


def _value(metric: str, v) -> str:
    if v is None:
        return "-"
    if metric == "peak_memory_bytes":
        return fmt_bytes(int(v))
    if metric in ("ttft_s", "tpot_s"):
        return f"{fmt(v, 1, 1000)} ms"
    return fmt(v, 3 if metric in ("tokens_per_joule",) else 2)


def _delta_cell(d: MetricDelta) -> Text:
    if d.delta_rel is None:
        return Text("-")
    text = f"{d.delta_rel:+.1%}"
    if d.regression:
        return Text(text + " REGRESSION", style="bold red")
    if d.significant:
        return Text(text + " *", style="yellow" if d.worse else "green")
    return Text(text, style="dim")


def _sig_cell(d: MetricDelta) -> str:
    if d.method == "welch":
        return f"p={d.p_value:.3f}"
    return {"ci-overlap": "CI overlap" if not d.significant else "CIs apart", "exact": "exact", "none": "n/a"}[d.method]


def _table(c: Comparison) -> Table:
    table = Table(title=f"effbench compare (threshold {c.threshold:.0%}, alpha {c.alpha:g})")
    for col in ("configuration", "metric", "base", "new", "delta", "significance"):
        table.add_column(col, justify="right" if col in ("base", "new", "delta") else "left")
    labels = {m.name: m.label for m in METRICS}
    for cfg in c.configs:
        for i, d in enumerate(x for x in cfg.deltas if x.metric in SHOWN):
            table.add_row(cell(cfg.label) if i == 0 else "", labels[d.metric], _value(d.metric, d.base),
                          _value(d.metric, d.new), _delta_cell(d), cell(_sig_cell(d) + (f"; {d.note}" if d.note else "")))
        table.add_section()
    return table


def compare_command(
    base: str = typer.Argument(..., help="Baseline: a run directory or its results.jsonl.", show_default=False),
    new: str = typer.Argument(..., help="Candidate: a run directory or its results.jsonl.", show_default=False),
    threshold: float = typer.Option(0.05, "--threshold", help="Relative change that counts as a regression when significant (0.05 = 5%)."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level of Welch's t-test."),
    allow_mixed_energy: bool = typer.Option(False, "--allow-mixed-energy", help="Compare measured with estimated energy (tokens/J deltas are then never a regression)."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Do not count configurations that succeeded in BASE but failed or are missing in NEW as regressions."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> int:
    """Compare two runs: matched configurations, deltas, significance (Welch's t-test on per-repeat
    samples, else CI overlap). Exit code 1 on a significant regression beyond --threshold, or when a
    configuration that succeeded in BASE failed or vanished in NEW (unless --allow-missing)."""
    from effbench.analysis.compare import compare_paths

    c = compare_paths(base, new, threshold=threshold, alpha=alpha, allow_mixed_energy=allow_mixed_energy,
                     allow_missing=allow_missing)
    if as_json:
        typer.echo(json.dumps(c.to_dict(), indent=2))
    else:
        out.print(_table(c))
        for title, items in (("only in BASE", c.only_in_base), ("only in NEW", c.only_in_new), ("failed", c.failed)):
            for item in items:
                err.print(cell(f"{title}: {item}"), style="dim")
        if c.mixed_energy:
            err.print("note: measured and estimated energy were compared (--allow-mixed-energy); tok/J deltas are not comparable", style="yellow")
        for item in c.lost:
            err.print(cell(f"{'lost (allowed by --allow-missing)' if c.allow_missing else 'REGRESSION: lost'}: {item}"),
                      style="yellow" if c.allow_missing else "bold red")
        regs, lost = c.regressions, c.lost_regressions
        parts = []
        if regs:
            parts.append(f"{len(regs)} significant regression(s) beyond {c.threshold:.0%}: "
                         + "; ".join(f"{label}: {d.metric} {d.delta_rel:+.1%}" for label, d in regs))
        if lost:
            parts.append(f"{len(lost)} configuration(s) fine in BASE failed or vanished in NEW "
                         "(pass --allow-missing to accept): " + "; ".join(lost))
        summary = (" | ".join(parts) if parts
                   else f"no significant regression beyond {c.threshold:.0%} in {len(c.configs)} matched configuration(s)")
        (err if parts else out).print(cell(summary), style="bold red" if parts else "green")
    return 1 if c.regression else 0


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_command)
