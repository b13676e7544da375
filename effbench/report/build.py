"""Assemble the report: tidy rows -> document (sections per hardware and model, hardware comparison,
failures, methodology) -> report.md, report.html, plots, results.csv and results.tex."""
from __future__ import annotations

import datetime as _dt
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from effbench.errors import EffbenchError
from effbench.report import export, html, markdown, plots, summary
from effbench.report.document import Cell, Document, Image, Note, Paragraph, Section, Table, num, pct, size_in, size_unit, slug
from effbench.report.methodology import methodology_section
from effbench.report.model import (
    METRICS,
    Group,
    Row,
    best,
    collapse_texts,
    error_rows,
    group_rows,
    hardware_names,
    load_sources,
    ok_rows,
    profile_lookup,
    row_flags,
    run_warnings,
    tidy,
)
from effbench.results.run import Run

PLOT_DIR = "plots"


@dataclass(frozen=True)
class ReportFiles:
    out: Path
    markdown: Path
    html: Path
    csv: Path
    latex: Path
    plots: list[Path]  # the PNGs (embedded in the HTML); SVG and PDF of each lie beside it
    skipped: list[str]  # "title: why" for each plot left out
    warnings: list[str] = field(default_factory=list)  # what the runs lack (run.json, hardware profile)
    summary: Optional[Path] = None  # summary.json: every quoted figure, its interval and its record
    vector_plots: list[Path] = field(default_factory=list)  # SVG and PDF


# -- results tables ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Row], Cell]
    optional: bool = True  # dropped when no row has a value


def _n(value: Optional[float], scale: float = 1.0, digits: Optional[int] = None) -> Cell:
    return Cell(num(None if value is None else value * scale, digits), numeric=True)


def _energy_cell(get: Callable[[Row], Optional[float]]) -> Callable[[Row], Cell]:
    return lambda r: Cell(num(get(r)), estimated=r.estimated, numeric=True)


def _flags(r: Row) -> Cell:
    return Cell(", ".join(row_flags(r)))


def _sensor(r: Row) -> Cell:
    if r.energy_status == "unavailable" or not r.energy_sensor:
        return Cell("-")
    domains = r.energy_domains.replace(";", ", ")
    return Cell(f"{r.energy_sensor} ({domains})" if domains else r.energy_sensor)


def _interval_cell(value: Optional[float], lo: Optional[float], hi: Optional[float]) -> Cell:
    if value is None:
        return Cell("-", numeric=True)
    text = num(value)
    return Cell(text + (f" [{num(lo)}, {num(hi)}]" if lo is not None and hi is not None else ""), numeric=True)


def _energy_pm(r: Row) -> Cell:
    return Cell(f"±{pct(r.energy_uncertainty_rel, 0)}" if r.energy_uncertainty_rel is not None else "-",
                estimated=r.estimated, numeric=True)


def _memory_column(rows: Sequence[Row]) -> Column:
    unit, _ = size_unit(r.peak_memory_bytes for r in rows)
    return Column(f"peak mem {unit}", lambda r: Cell(size_in(r.peak_memory_bytes, unit), numeric=True))


def _setup_columns() -> list[Column]:
    return [
        Column("backend version", lambda r: Cell(r.backend_version or "-")),
        Column("threads", lambda r: Cell(str(r.threads) if r.threads is not None else "-", numeric=True)),
        Column("sensor", _sensor),
    ]


def result_columns(rows: Sequence[Row]) -> list[Column]:
    """The columns of an offline results table (the memory unit is the whole column's)."""
    return [
        Column("hardware", lambda r: Cell(r.hardware)),
        Column("scheme", lambda r: Cell(r.scheme), optional=False),
        Column("backend", lambda r: Cell(r.backend)),
        Column("prompt set", lambda r: Cell(r.prompt_set)),
        Column("prompt tok", lambda r: Cell(str(r.prompt_tokens), numeric=True)),
        Column("new tok", lambda r: Cell(str(r.new_tokens), numeric=True)),
        Column("batch", lambda r: Cell(str(r.batch_size), numeric=True), optional=False),
        Column("prefill tok/s", lambda r: _n(r.prefill_tokens_per_s)),
        Column("decode tok/s", lambda r: _n(r.decode_tokens_per_s)),
        Column("CI95", lambda r: Cell(f"±{pct(r.ci95_rel)}" if r.ci95_rel is not None else "-", numeric=True)),
        Column("TTFT ms", lambda r: _n(r.ttft_s, 1000)),
        Column("TPOT ms", lambda r: _n(r.tpot_s, 1000)),
        Column("tok/J", _energy_cell(lambda r: r.tokens_per_joule)),
        Column("energy ±", _energy_pm),
        Column("J/1k chars", _energy_cell(lambda r: r.joules_per_kchar)),
        _memory_column(rows),
        Column("roofline", lambda r: Cell(pct(r.roofline_fraction), numeric=True)),
        Column("ppl", lambda r: _n(r.perplexity, digits=2)),
        Column("n", lambda r: Cell(str(r.repeats), numeric=True), optional=False),
        Column("stop", lambda r: Cell(r.stop_reason or "-")),
        *_setup_columns(),
        Column("flags", _flags),
        Column("run", lambda r: Cell(r.source)),
    ]


def serving_columns(rows: Sequence[Row]) -> list[Column]:
    """The columns of a serving table: one row per offered load."""
    return [
        Column("hardware", lambda r: Cell(r.hardware)),
        Column("scheme", lambda r: Cell(r.scheme), optional=False),
        Column("offered load", lambda r: Cell(r.load), optional=False),
        Column("arrival", lambda r: Cell(r.arrival or "-")),
        Column("achieved req/s", lambda r: _n(r.achieved_rate, digits=3)),
        Column("output tok/s", lambda r: _n(r.output_tokens_per_s)),
        Column("TTFT p50 ms [95% CI]", lambda r: _interval_cell(r.ttft_p50_ms, r.ttft_p50_ci95_low_ms, r.ttft_p50_ci95_high_ms)),
        Column("TTFT p95 ms", lambda r: _n(r.ttft_p95_ms)),
        Column("TPOT p50 ms [95% CI]", lambda r: _interval_cell(r.tpot_p50_ms, r.tpot_p50_ci95_low_ms, r.tpot_p50_ci95_high_ms)),
        Column("TPOT p95 ms", lambda r: _n(r.tpot_p95_ms)),
        Column("goodput req/s", lambda r: _n(r.goodput, digits=3)),
        Column("SLO met", lambda r: Cell(pct(r.slo_attainment, 0), numeric=True)),
        Column("J/request", _energy_cell(lambda r: r.joules_per_request)),
        Column("energy ±", _energy_pm),
        Column("energy", lambda r: Cell(r.energy_status), optional=False),
        Column("saturated", lambda r: Cell("SATURATED" if r.saturated else "no"), optional=False),
        Column("requests", lambda r: Cell(str(r.requests) if r.requests is not None else "-", numeric=True)),
        *_setup_columns(),
        Column("flags", _flags),
        Column("run", lambda r: Cell(r.source)),
    ]


# Shown only when they differ between rows; otherwise the section's workload line states them.
_VARYING_ONLY = {"hardware", "backend", "prompt set", "prompt tok", "new tok", "run", "arrival"}


def results_table(rows: Sequence[Row], caption: str = "", columns: Optional[Sequence[Column]] = None) -> Table:
    cols = []
    for c in (columns if columns is not None else result_columns(rows)):
        texts = [c.cell(r).text for r in rows]
        if c.optional and all(t in ("-", "") for t in texts):
            continue
        if c.header in _VARYING_ONLY and len(set(texts)) <= 1:
            continue
        cols.append(c)
    return Table([c.header for c in cols], [[c.cell(r) for c in cols] for r in rows], caption)


def _images(found: Sequence[plots.Plot]) -> list:
    blocks: list = []
    for p in found:
        if p.file:
            blocks.append(Image(p.file, p.title, p.caption + (f" ({p.note})" if p.note else ""),
                                tuple(f for f in p.files if f != p.file)))
        else:
            blocks.append(Note(f"{p.title}: not drawn, {p.note}."))
    return blocks


def _workload_line(rows: Sequence[Row]) -> str:
    def vals(fn: Callable[[Row], object]) -> str:
        return ", ".join(sorted({str(fn(r)) for r in rows}))

    return (f"Backend {vals(lambda r: r.backend_version or r.backend)} on {vals(lambda r: r.device or '?')} "
            f"with {vals(lambda r: r.threads if r.threads is not None else '?')} thread(s); "
            f"prompt set {vals(lambda r: r.prompt_set)}; {vals(lambda r: r.prompt_tokens)} prompt tokens; "
            f"{vals(lambda r: r.new_tokens)} generated tokens per sequence; run(s) {vals(lambda r: r.source)}.")


def _estimated_note(rows: Sequence[Row]) -> list:
    est = [r for r in rows if r.estimated]
    if not est:
        return []
    bases = collapse_texts(r.energy_basis or "no basis recorded" for r in est)
    return [Note(f"Energy of {len(est)} of {len(rows)} configuration(s) is ESTIMATED, not measured (marked ~): "
                 + "; ".join(bases), "estimated")]


def group_section(g: Group, out: Path, skipped: list[str]) -> Section:
    key = slug(f"{g.hardware}|{g.model}")
    rows = ok_rows(g.rows)
    s = Section(g.model, f"g-{key}")
    s.add(Paragraph(_workload_line(g.rows)))
    s.add(*_estimated_note(rows))
    if any(r.interference for r in rows):
        s.add(Note(f"{sum(r.interference for r in rows)} configuration(s) ran while other work competed for the "
                   "machine (flag 'interference'): their figures understate this hardware.", "warning"))
    if not rows:
        return s.add(Paragraph("Every configuration failed; see Failed configurations."))
    offline, serving = [r for r in rows if not r.serving], [r for r in rows if r.serving]
    if offline:
        s.add(results_table(offline, RESULTS_CAPTION))
        found = plots.group_plots(offline, f"{g.model} on {g.hardware}", out / PLOT_DIR, key)
        found += plots.gpu_setting_plots(offline, f"{g.model} on {g.hardware}", out / PLOT_DIR, key)
        skipped += [f"{p.title}: {p.note}" for p in found if not p.file]
        s.add(*_images(found))
    if serving:
        s.add(serving_section(serving, g, out, key, skipped))
    return s


RESULTS_CAPTION = ("CI95: half-width of the 95% interval of decode tokens/s over n repeats (of the median; of the mean in "
                   "records written before stats.estimator existed); energy ±: the "
                   "95% energy uncertainty (repeat spread and sensor accuracy); ~ marks ESTIMATED energy; units in the "
                   "headers; stop: why the repeats ended (ci-target, time-cap, max-repeats, fixed-repeats); flags: time "
                   "cap (stopped before the CI target), interference (other work competed), quality (perplexity rise "
                   "above the sweep's threshold), energy-window flags.")
SERVING_CAPTION = ("One row per offered load. Latencies in ms, p50 with its distribution-free 95% interval; goodput: "
                   "requests/s meeting every SLO; J/request with its 95% energy uncertainty (energy ±); ~ marks "
                   "ESTIMATED energy; SATURATED: the engine could not keep up with the offered load (its figures are "
                   "the engine's limit, not the load's).")


def serving_section(rows: Sequence[Row], g: Group, out: Path, key: str, skipped: list[str]) -> Section:
    """Serving points of one hardware x model: the per-point table, latency-vs-throughput curves,
    energy and goodput against the offered load."""
    s = Section(f"Serving: {g.model}", f"serving-{key}")
    slo = sorted({r.source for r in rows})
    s.add(Paragraph(f"{len(rows)} serving point(s) from run(s) {', '.join(slo)}; "
                    f"{sum(r.saturated for r in rows)} saturated."))
    s.add(results_table(rows, SERVING_CAPTION, serving_columns(rows)))
    found = plots.serving_plots(rows, f"{g.model} on {g.hardware}", out / PLOT_DIR, key)
    skipped += [f"{p.title}: {p.note}" for p in found if not p.file]
    return s.add(*_images(found))


def hardware_section(hw: str, groups: Sequence[Group], out: Path, skipped: list[str],
                     sources: Sequence[Run] = ()) -> Section:
    s = Section(f"Hardware: {hw}", f"hw-{slug(hw)}")
    names = sorted({r.detected_name or "?" for g in groups for r in g.rows})
    hosts = sorted({r.hostname for g in groups for r in g.rows if r.hostname})
    s.add(Paragraph(f"Detected device: {', '.join(names)}; host(s): {', '.join(hosts) or '?'}."))
    first = groups[0].rows[0]
    s.add(Paragraph(_profile_line(profile_lookup(sources)(first.hardware_profile, first.detected_name))))
    return s.add(*(group_section(g, out, skipped) for g in groups))


def _profile_line(p: object) -> str:
    if p is None:
        return ("The run stores no hardware profile, so the decode roofline is not drawn "
                "(pass --hardware ID to 'effbench report', or re-run with effbench >= 0.2).")
    bw_source = getattr(p, "bandwidth_source", None) or "spec sheet"
    tdp = getattr(p, "tdp_w", None)
    return (f"Profile {getattr(p, 'id', '?')} ({getattr(p, 'name', '?')}): memory bandwidth "
            f"{num(getattr(p, 'memory_bandwidth_gbps', None))} GB/s ({bw_source})"
            + (f", TDP {num(tdp)} W" if tdp else "") + "; the roofline bound uses this bandwidth.")


def comparison_section(rows: Sequence[Row], out: Path, skipped: list[str]) -> Optional[Section]:
    """Models measured on more than one hardware: best configuration per hardware and scheme."""
    ok = ok_rows(rows)
    models = [m for m in sorted({r.model for r in ok}) if len({r.hardware for r in ok if r.model == m}) > 1]
    if not models:
        return None
    s = Section("Hardware comparison", "hardware-comparison")
    s.add(Paragraph("The best configuration of each scheme on each hardware (highest decode tokens/s and highest "
                    "tokens/J over the batch sizes measured)."))
    statuses = {r.energy_status for r in ok if r.tokens_per_joule is not None}
    if {"measured", "estimated"} <= statuses:
        s.add(Note("Measured and estimated energy are mixed here: tokens/J of estimated rows (marked ~) is not "
                   "comparable with measured rows.", "estimated"))
    unit, _ = size_unit(r.peak_memory_bytes for r in ok)
    for m in models:
        sub = Section(m, f"cmp-{slug(m)}")
        cells = []
        for hw in hardware_names(r for r in ok if r.model == m):
            for scheme in sorted({r.scheme for r in ok if r.model == m and r.hardware == hw}):
                these = [r for r in ok if r.model == m and r.hardware == hw and r.scheme == scheme]
                fast, eff = best(these, METRICS["decode"], True), best(these, METRICS["tokens_per_joule"], True)
                cells.append([
                    Cell(hw), Cell(scheme),
                    Cell(num(fast.decode_tokens_per_s) if fast else "-", numeric=True),
                    Cell(str(fast.batch_size) if fast else "-", numeric=True),
                    Cell(num(eff.tokens_per_joule) if eff else "-", estimated=bool(eff and eff.estimated), numeric=True),
                    Cell(str(eff.batch_size) if eff else "-", numeric=True),
                    Cell(size_in(max((r.peak_memory_bytes or 0) for r in these) or None, unit), numeric=True),
                    Cell("quality flagged" if any(r.quality_flagged for r in these) else ""),
                ])
        sub.add(Table(["hardware", "scheme", "best decode tok/s", "at batch", "best tok/J", "at batch", f"peak mem {unit}",
                       "flags"],
                      cells, "Per scheme, so a quality-flagged scheme's best is its own and marked; ~ marks ESTIMATED energy."))
        found = plots.hardware_plots([r for r in ok if r.model == m], m, out / PLOT_DIR, slug(m))
        skipped += [f"{p.title}: {p.note}" for p in found if not p.file]
        s.add(sub.add(*_images(found)))
    return s


def _best_text(r: Row, value: Optional[float], metric) -> str:
    interval = metric.interval(r)
    threads = "? threads" if r.threads is None else f"{r.threads} thread{'' if r.threads == 1 else 's'}"
    where = f"{r.scheme}, batch {r.batch_size}, {threads}, run {r.source}"
    ci = f" [{num(interval[0])}, {num(interval[1])}]" if interval else ""
    return f"{num(value)}{ci} ({where})"


def errors_section(rows: Sequence[Row]) -> Section:
    s = Section("Failed configurations", "failed")
    failed = error_rows(rows)
    if not failed:
        return s.add(Paragraph("No configuration failed."))
    return s.add(Table(["hardware", "model", "scheme", "batch", "prompt tok", "new tok", "run", "error"], [
        [Cell(r.hardware), Cell(r.model), Cell(r.scheme), Cell(str(r.batch_size), numeric=True),
         Cell(str(r.prompt_tokens), numeric=True), Cell(str(r.new_tokens), numeric=True), Cell(r.source),
         Cell(r.error or "")] for r in failed]))


def overview_section(sources: Sequence[Run], rows: Sequence[Row]) -> Section:
    s = Section("Overview", "overview")
    ok = ok_rows(rows)
    status = Counter(r.energy_status for r in ok)
    s.add(Paragraph(
        f"{len(rows)} configuration(s) from {len(sources)} run(s) ({', '.join(src.name for src in sources)}); "
        f"{len(rows) - len(ok)} failed. Hardware: {', '.join(hardware_names(rows)) or '-'}. Models: "
        f"{', '.join(sorted({r.model for r in rows})) or '-'}. Energy: "
        f"{', '.join(f'{v} {k}' for k, v in sorted(status.items())) or '-'}."))
    s.add(*_estimated_note(ok))
    highlights = []
    excluded = 0
    for g in group_rows(r for r in ok if not r.serving):
        fast, eff = best(g.rows, METRICS["decode"]), best(g.rows, METRICS["tokens_per_joule"])
        flagged = [r for r in g.rows if r.quality_flagged]
        excluded += len(flagged)
        highlights.append([
            Cell(g.hardware), Cell(g.model),
            Cell(_best_text(fast, fast.decode_tokens_per_s, METRICS["decode"]) if fast else "-"),
            Cell(_best_text(eff, eff.tokens_per_joule, METRICS["tokens_per_joule"]) if eff else "-",
                 estimated=bool(eff and eff.estimated)),
            Cell(str(len(flagged)), numeric=True),
        ])
    if highlights:
        s.add(Table(["hardware", "model", "best decode tok/s [95% CI]", "best tok/J [95% interval]",
                     "quality-flagged rows excluded"],
                    highlights, "Best figures come only from rows whose quality is not flagged (perplexity rise above the "
                    "sweep's threshold); ~ marks ESTIMATED energy."))
    s.add(Paragraph("For publication: results.csv (every field of every configuration), results.tex (booktabs "
                    "LaTeX), summary.json (every figure this report quotes, with its 95% interval and the record it "
                    "comes from) and each plot as PNG (300 dpi), SVG and PDF in plots/. Cite effbench with "
                    "CITATION.cff and the version and git sha of each run (Methodology)."))
    return s


def build_document(sources: Sequence[Run], rows: Sequence[Row], out: Path) -> tuple[Document, list[str]]:
    skipped: list[str] = []
    groups = group_rows(rows)
    doc = Document("effbench efficiency report",
                   f"{len(sources)} run(s), {len(hardware_names(rows))} hardware, {len(rows)} configuration(s)")
    doc.sections.append(overview_section(sources, rows))
    for hw in hardware_names(rows):
        doc.sections.append(hardware_section(hw, [g for g in groups if g.hardware == hw], out, skipped, sources))
    comparison = comparison_section([r for r in rows if not r.serving], out, skipped)
    if comparison:
        doc.sections.append(comparison)
    doc.sections.append(errors_section(rows))
    doc.sections.append(methodology_section(sources, rows))
    return doc, skipped


def default_out(dirs: Sequence[str | Path]) -> Path:
    return Path(dirs[0]) / "report" if len(dirs) == 1 else Path("effbench-report")


def write_report(dirs: Sequence[str | Path], out: Optional[str | Path] = None, hardware: Optional[str] = None) -> ReportFiles:
    """Read run directories (or their results.jsonl) and write the report files into ``out``.
    ``hardware``: the profile (id or YAML) of runs that store none."""
    if not dirs:
        raise EffbenchError("no run directory given; pass one or more directories written by 'effbench run'")
    sources = load_sources(dirs, hardware)
    rows = tidy(sources)
    if not rows:
        raise EffbenchError(f"no records in {', '.join(str(d) for d in dirs)}; the run wrote no configurations yet")
    out_dir = Path(out) if out is not None else default_out([s.path for s in sources])
    if out_dir.exists() and not out_dir.is_dir():
        raise EffbenchError(f"--out '{out_dir}' is a file; pass a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    for ext in plots.FORMATS:  # a rerun must not leave plots of removed groups
        for stale in (out_dir / PLOT_DIR).glob(f"*.{ext}"):
            stale.unlink()
    doc, skipped = build_document(sources, rows, out_dir)

    import effbench

    generated = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    summary_json = out_dir / "summary.json"
    files = ReportFiles(out_dir, out_dir / "report.md", out_dir / "report.html", out_dir / "results.csv",
                        out_dir / "results.tex", sorted((out_dir / PLOT_DIR).glob("*.png")), skipped,
                        [w for src in sources for w in run_warnings(src)], summary_json,
                        sorted(p for ext in plots.FORMATS[1:] for p in (out_dir / PLOT_DIR).glob(f"*.{ext}")))
    files.markdown.write_text(markdown.render(doc, effbench.__version__, generated), encoding="utf-8")
    files.html.write_text(html.render(doc, out_dir, effbench.__version__, generated), encoding="utf-8")
    files.csv.write_text(export.to_csv(rows), encoding="utf-8")
    files.latex.write_text(export.to_latex(rows), encoding="utf-8")
    summary_json.write_text(summary.to_json(summary.build_summary(sources, rows, effbench.__version__, generated)),
                             encoding="utf-8")
    return files
