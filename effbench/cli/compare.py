"""``effbench compare BASE NEW``: deltas per matched configuration with their 95% intervals and
significance; exit 1 on a significant regression beyond the threshold, or on a configuration that
succeeded in BASE but failed or is missing in NEW (unless --allow-missing) (for CI), 0 otherwise."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table
from rich.text import Text

from effbench.cli._console import cell, comma_items, err, out, unset

if TYPE_CHECKING:  # pragma: no cover - the analysis (and the schema it validates with) loads when the command runs
    from effbench.analysis.compare import Comparison, ConfigComparison, MetricDelta

COLUMNS = ("configuration", "metric", "base", "new", "delta [95% CI]", "significance")
ESTIMATED = "~"


def _value(d: MetricDelta, v: Optional[float], estimated: bool) -> str:
    if v is None:
        return "-"
    from effbench.analysis.compare import METRIC_BY_NAME

    m = METRIC_BY_NAME[d.metric]
    return (ESTIMATED if estimated else "") + f"{v * m.scale:,.{m.digits}f}"


def _delta_text(d: MetricDelta) -> str:
    if d.delta_rel is None:
        return "-"
    text = f"{d.delta_rel:+.1%}"
    if d.ci95_rel is not None and d.method != "exact":
        text += f" [{d.ci95_rel[0]:+.1%}, {d.ci95_rel[1]:+.1%}]"
    if d.regression:
        return text + " REGRESSION"
    return text + (" *" if d.significant else "")


def _sig_text(d: MetricDelta) -> str:
    if d.method == "welch":
        text = f"p={d.p_value:.3f}"
    else:
        text = {"ci-overlap": "CIs apart" if d.significant else "CIs overlap", "exact": "exact", "none": "n/a"}[d.method]
    return text + (f"; {d.note}" if d.note and d.note != "missing on one side" else "")


def _shown(cfg: ConfigComparison) -> list[MetricDelta]:
    """The metrics either side has (offline records have no latency percentiles, serving ones no decode tok/s)."""
    return [d for d in cfg.deltas if d.base is not None or d.new is not None]


def rows(c: Comparison) -> list[tuple[str, str, str, str, str, str]]:
    """The table as text, one row per metric, the configuration named on its first row."""
    from effbench.analysis.compare import METRIC_BY_NAME

    out_rows = []
    for cfg in c.configs:
        label = cfg.label
        for i, d in enumerate(_shown(cfg)):
            out_rows.append((label if i == 0 else "", METRIC_BY_NAME[d.metric].label,
                             _value(d, d.base, d.base_estimated), _value(d, d.new, d.new_estimated),
                             _delta_text(d), _sig_text(d)))
    return out_rows


def legend(c: Comparison) -> list[str]:
    """Every mark the table uses, explained (printed under it)."""
    lines = [f"delta = (new - base) / base; [a, b] is its {c.confidence:.0%} interval (Welch-Satterthwaite on the "
             "per-repeat samples; without samples, the root-sum-square of both records' 95% half-widths).",
             f"* = significant (p < {c.alpha:g}, or the two 95% intervals apart) but not a regression "
             f"(better, or within the {c.threshold:.0%} threshold); no mark = not significant.",
             f"REGRESSION = significant, worse and beyond the {c.threshold:.0%} threshold (exit code 1).",
             "exact = deterministic metric (memory, perplexity): any change is real, the threshold decides."]
    deltas = [d for cfg in c.configs for d in cfg.deltas]
    if any(d.base_estimated or d.new_estimated for d in deltas if d.base is not None or d.new is not None):
        lines.append(f"{ESTIMATED} = energy ESTIMATED (TDP x utilisation), not measured.")
    if any(d.energy_uncertainty_rel is not None for d in deltas):
        lines.append("energy deltas (tok/J, J/request) are significant only outside both records' stated 95% energy "
                     "uncertainty propagated to the difference (root-sum-square); the interval spans at least that.")
    if c.match_loose:
        lines.append(f"--match-loose {','.join(c.match_loose)}: configurations matched although these differ; "
                     "the difference explains part of every delta.")
    return lines


def _table(c: Comparison) -> Table:
    table = Table(title=f"effbench compare (threshold {c.threshold:.0%}, alpha {c.alpha:g}, 95% intervals)")
    for col in COLUMNS:
        table.add_column(col, justify="right" if col in ("base", "new", "delta [95% CI]") else "left")
    for r in rows(c):
        if r[0] and table.row_count:
            table.add_section()
        table.add_row(*(_delta_cell_from(r[4]) if i == 4 else cell(x) for i, x in enumerate(r)))
    return table


def _delta_cell_from(text: str) -> Text:
    style = "bold red" if "REGRESSION" in text else ("yellow" if text.endswith("*") else "dim")
    return Text(text, style=style)


def _md_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def markdown(c: Comparison) -> str:
    """The comparison as a Markdown table (``effbench compare --md``, for a CI comment)."""
    lines = [f"## effbench compare: {_md_escape(c.base)} -> {_md_escape(c.new)}", "",
             f"Threshold {c.threshold:.0%}, alpha {c.alpha:g}, {c.confidence:.0%} intervals.", "",
             "| " + " | ".join(COLUMNS) + " |", "|---|---|---:|---:|---:|---|"]
    lines += ["| " + " | ".join(_md_escape(x) for x in r) + " |" for r in rows(c)]
    lines += [""] + [f"- {_md_escape(x)}" for x in legend(c)]
    extra = _extra_lines(c)
    if extra:
        lines += [""] + [f"- {_md_escape(x)}" for x in extra]
    lines += ["", f"**{_md_escape(_summary(c))}**"]
    return "\n".join(lines) + "\n"


def _extra_lines(c: Comparison) -> list[str]:
    lines = [f"not comparable (pass --match-loose FIELD to compare anyway): {nc}" for nc in c.not_comparable]
    lines += [f"{title}: {item}" for title, items in (("only in BASE", c.only_in_base), ("only in NEW", c.only_in_new),
                                                    ("failed", c.failed)) for item in items]
    if c.mixed_energy:
        lines.append("note: measured and estimated energy were compared (--allow-mixed-energy); tok/J deltas are not comparable")
    lines += [f"{'lost (allowed by --allow-missing)' if c.allow_missing else 'REGRESSION: lost'}: {item}" for item in c.lost]
    return lines


def _summary(c: Comparison) -> str:
    regs, lost = c.regressions, c.lost_regressions
    parts = []
    if regs:
        parts.append(f"{len(regs)} significant regression(s) beyond {c.threshold:.0%}: "
                     + "; ".join(f"{label}: {d.metric} {d.delta_rel:+.1%}" for label, d in regs))
    if lost:
        parts.append(f"{len(lost)} configuration(s) fine in BASE failed or vanished in NEW "
                     "(pass --allow-missing to accept): " + "; ".join(lost))
    if parts:
        return " | ".join(parts)
    return (f"no significant regression beyond {c.threshold:.0%} in {len(c.configs)} matched configuration(s)"
            + (f" ({len(c.not_comparable)} not comparable)" if c.not_comparable else ""))


def compare_command(
    base: str = typer.Argument(..., help="Baseline: a run directory or its results.jsonl.", show_default=False),
    new: str = typer.Argument(..., help="Candidate: a run directory or its results.jsonl.", show_default=False),
    threshold: float = typer.Option(0.05, "--threshold",
                                    help="Relative change that counts as a regression when significant (0.05 = 5%)."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level of Welch's t-test."),
    allow_mixed_energy: bool = typer.Option(False, "--allow-mixed-energy",
                                            help="Compare measured with estimated energy (tokens/J deltas are then never a "
                                                 "regression)."),
    allow_missing: bool = typer.Option(False, "--allow-missing",
                                       help="Do not count configurations that succeeded in BASE but failed or are missing in NEW "
                                            "as regressions."),
    match_loose: Optional[list[str]] = unset("--match-loose",
                                             help="Setup fields to ignore when matching, comma-separated: hardware, "
                                                  "backend, backend_version, device, threads, sensor, domains (or all). "
                                                  "Records differing in any other are listed as not comparable."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    as_md: bool = typer.Option(False, "--md", help="Print a Markdown table (for a CI comment) instead of a table."),
) -> int:
    """Compare two runs: matched configurations, deltas with their 95% intervals, significance (Welch's
    t-test on per-repeat samples, else the records' 95% intervals; energy changes inside the stated
    energy uncertainty are not significant). Exit code 1 on a significant regression beyond
    --threshold, or when a configuration that succeeded in BASE failed or vanished in NEW (unless
    --allow-missing)."""
    from effbench.analysis.compare import compare_paths
    from effbench.errors import EffbenchError

    if as_json and as_md:
        raise EffbenchError("--json and --md both print the comparison; pass one of them")
    c = compare_paths(base, new, threshold=threshold, alpha=alpha, allow_mixed_energy=allow_mixed_energy,
                      allow_missing=allow_missing, match_loose=comma_items(match_loose))
    if as_json:
        typer.echo(json.dumps(c.to_dict(), indent=2))
    elif as_md:
        typer.echo(markdown(c), nl=False)
    else:
        out.print(_table(c))
        for line in legend(c):
            out.print(cell(line), style="dim")
        for line in _extra_lines(c):
            bad = line.startswith("REGRESSION")
            err.print(cell(line),
                      style="bold red" if bad else ("yellow" if line.startswith(("not comparable", "lost")) else "dim"))
        summary = _summary(c)
        (err if c.regression else out).print(cell(summary), style="bold red" if c.regression else "green")
    return 1 if c.regression else 0


def register(app: typer.Typer) -> None:
    """Add ``effbench compare`` to the command-line app."""
    app.command("compare")(compare_command)
