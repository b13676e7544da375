"""Plots with matplotlib (Agg, no display), each written three times: PNG at 300 dpi (embedded in the
HTML), SVG and PDF (for a paper). Every function returns a ``Plot``: the PNG it wrote, or no file and
a note saying why (no data), so a run without energy still gets a report.

What a reviewer checks, and where it is done here:
- every point has its 95% interval as an error bar (CI95 of the mean, the energy uncertainty, a
  percentile's distribution-free interval) wherever the record states one;
- legends sit outside the axes (right of them), so they cover no point and no badge;
- point labels are placed so they do not overlap each other (``_place_labels``);
- titles and legend entries are never wrapped inside an id: they are shortened with an ellipsis;
- estimated energy is drawn dashed with hollow markers, its axis says "ESTIMATED", and a badge above
  the axes says so (outside the data, never under the legend).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from effbench.errors import EffbenchError
from effbench.report.model import METRICS, Metric, Row, gpu_setting_label, has_data, pareto_front, series

DPI = 300
FORMATS = ("png", "svg", "pdf")  # the PNG is what the HTML embeds; SVG and PDF lie beside it
PANEL_SIZE = (5.0, 3.4)  # inches per panel, legend excluded
BADGE_COLOUR, BADGE_FILL, BADGE_EDGE = "#8a4b00", "#fff3d6", "#d9a441"


@dataclass(frozen=True)
class Plot:
    title: str
    file: Optional[str]  # the PNG, relative to the report directory; None when skipped
    caption: str = ""
    note: str = ""  # why it was not drawn (file is None), or a caveat

    @property
    def files(self) -> list[str]:
        """Every format written (PNG, SVG, PDF), relative to the report directory."""
        if not self.file:
            return []
        stem = self.file.rsplit(".", 1)[0]
        return [f"{stem}.{ext}" for ext in FORMATS]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise EffbenchError("matplotlib is needed for report plots; pip install 'effbench[report]' (or matplotlib)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    # SVG text stays text (searchable, small); the PDF embeds TrueType fonts (journals reject Type 3)
    plt.rcParams.update({"svg.fonttype": "none", "pdf.fonttype": 42, "svg.hashsalt": "effbench"})
    return plt


def text(s: str, limit: int = 60) -> str:
    """A user string safe for a matplotlib label: '$' would start mathtext (and can raise); long
    strings are shortened with an ellipsis, never wrapped (a wrapped id reads as two names)."""
    s = " ".join(str(s).split())
    s = s if len(s) <= limit else s[: limit - 1] + "…"
    return s.replace("$", r"\$")


def _axis_label(metric: Metric, rows: Sequence[Row]) -> str:
    shown = [r for r in rows if metric.value(r) is not None]
    if metric.energy and any(r.estimated for r in shown):
        return f"{metric.label} ({'ESTIMATED' if all(r.estimated for r in shown) else 'partly ESTIMATED'})"
    return metric.label


def _estimated(rows: Sequence[Row], metrics: Sequence[Metric]) -> bool:
    return any(m.energy for m in metrics) and any(r.estimated for r in rows)


def _style(rows: Sequence[Row], metric: Optional[Metric]) -> dict:
    if metric is not None and _estimated(rows, [metric]):
        return {"linestyle": "--", "markerfacecolor": "none"}
    return {"linestyle": "-"}


def _save(fig, out_dir: Path, name: str) -> str:
    """Lay the axes out at their full size (legends outside take no room from them), then write every
    format; ``bbox_inches='tight'`` with the legends named grows the canvas to hold them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    legends = [ax.get_legend() for ax in fig.get_axes() if ax.get_legend() is not None]
    for leg in legends:
        leg.set_in_layout(False)
    if not fig.legends:  # a figure legend was placed against the final layout already
        fig.tight_layout()
    legends += list(fig.legends)
    stem = name.rsplit(".", 1)[0]
    for ext in FORMATS:
        meta = {"Creator": "effbench"} if ext != "png" else {"Software": "effbench"}
        fig.savefig(out_dir / f"{stem}.{ext}", dpi=DPI, bbox_inches="tight", pad_inches=0.1, metadata=meta,
                    bbox_extra_artists=legends + list(fig.texts))
    _pyplot().close(fig)
    return f"{out_dir.name}/{stem}.png"


def _estimated_badge(ax, rows: Sequence[Row], metrics: Sequence[Metric]) -> None:
    """Above the axes (outside the data and the legend): no point or line can hide it."""
    if not _estimated(rows, metrics):
        return
    est = [r.estimated for r in rows]
    label = "energy ESTIMATED, not measured" if all(est) else "dashed/hollow: energy ESTIMATED"
    ax.text(0.0, 1.02, label, transform=ax.transAxes, va="bottom", ha="left", fontsize=7.5, color=BADGE_COLOUR,
            bbox={"boxstyle": "round,pad=0.25", "fc": BADGE_FILL, "ec": BADGE_EDGE}, zorder=10)


def _legend_outside(ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  frameon=False)


def _title(fig, title: str, panels: int = 1) -> None:
    fig.suptitle(text(title, 70 * panels), fontsize=9.5)


def _yerr(points: Sequence[tuple[float, float, Optional[tuple[float, float]]]]) -> list[list[float]]:
    """Asymmetric error bars from 95% intervals (0 where none is known)."""
    lo = [max(y - i[0], 0.0) if i else 0.0 for _, y, i in points]
    hi = [max(i[1] - y, 0.0) if i else 0.0 for _, y, i in points]
    return [lo, hi]


def _place_labels(ax, points: Sequence[tuple[float, float, str]], fontsize: float = 6.5) -> None:
    """Label each point at the first nearby offset where its text overlaps no label placed before it
    (greedy, in display space); a label with no free spot is left out rather than piled on."""
    if not points:
        return
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    offsets = [(4, 4), (4, -4), (-4, 4), (-4, -4), (8, 0), (-8, 0), (0, 8), (0, -8)]
    placed: list[Any] = []  # matplotlib Bbox of each label placed
    for x, y, label in points:
        for dx, dy in offsets:
            t = ax.annotate(text(label, 20), (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                            ha="left" if dx > 0 else "right" if dx < 0 else "center",
                            va="bottom" if dy > 0 else "top" if dy < 0 else "center", color="#333333")
            box = t.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(b) for b in placed):
                placed.append(box)
                break
            t.remove()


def _log2_batch_axis(ax, rows: Sequence[Row]) -> None:
    from matplotlib.ticker import FuncFormatter, NullLocator

    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({r.batch_size for r in rows}))
    ax.get_xaxis().set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.get_xaxis().set_minor_locator(NullLocator())
    ax.set_xlabel("batch size")


def vs_batch(rows: Sequence[Row], metrics: Sequence[Metric], title: str, out_dir: Path, name: str,
             always: Sequence[str] = ("scheme",)) -> Plot:
    """One panel per metric, value vs batch size, one line per series (scheme, or hardware/scheme),
    error bars from the CI95 / energy uncertainty where the record has them."""
    panels = [m for m in metrics if has_data(rows, m)]
    missing = [m.label for m in metrics if m not in panels]
    if not panels:
        return Plot(title, None, note="; ".join(_why(m, rows) for m in metrics))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(PANEL_SIZE[0] * len(panels), PANEL_SIZE[1]), squeeze=False)
    lines = series(rows, always)
    for ax, metric in zip(axes[0], panels):
        for label, line in lines.items():
            pts = [(float(r.batch_size), v, metric.interval(r)) for r in line if (v := metric.value(r)) is not None]
            if not pts:
                continue
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=_yerr(pts), marker="o", markersize=4, capsize=3,
                        label=text(label, 64), **_style(line, metric))
        _log2_batch_axis(ax, rows)
        top = max(((i[1] if (i := metric.interval(r)) else metric.value(r)) or 0) for r in rows)
        if top > 0:  # zero baseline so ratios between batch sizes read true; headroom above the top point
            ax.set_ylim(0, top * 1.1)
        ax.set_ylabel(_axis_label(metric, rows), fontsize=8.5)
        ax.grid(True, alpha=0.3)
        _estimated_badge(ax, rows, [metric])
    _legend_outside(axes[0][-1])
    _title(fig, title, len(panels))
    note = "not shown: " + "; ".join(_why(m, rows) for m in metrics if m not in panels) if missing else ""
    return Plot(title, _save(fig, out_dir, name), caption=_caption(metrics), note=note)


def _known(metric: Metric, r: Row) -> float:
    """The value of a row already filtered to have one."""
    v = metric.value(r)
    assert v is not None
    return v


def _why(metric: Metric, rows: Sequence[Row] = ()) -> str:
    """Why no record has ``metric``: for an energy figure where a sensor did run, the records' own reason
    (their energy basis: say, the power timeline did not cover the measured window), not 'no sensor'."""
    reason = metric.missing
    sensed = [r for r in rows if r.energy_sensor not in (None, "none") and r.energy_basis]
    if metric.energy and sensed:
        bases = sorted({r.energy_basis or "" for r in sensed})
        sensors = ", ".join(sorted({r.energy_sensor or "" for r in sensed}))
        reason = f"sensor {sensors} ran, but {bases[0]}" + (f"; {len(bases) - 1} more reason(s) in the records"
                                                              if len(bases) > 1 else "")
    return f"no {metric.label} in these records" + (f" ({reason})" if reason else "")


def _caption(metrics: Sequence[Metric]) -> str:
    parts = []
    if any(m.err_key in ("ci95_rel", "prefill_ci95_rel") for m in metrics):
        parts.append("error bars: 95% confidence interval of the mean over repeats")
    if any(m.err_key == "energy_uncertainty_rel" for m in metrics):
        parts.append("energy error bars: the 95% energy uncertainty (repeat spread and sensor accuracy)")
    if any(m.bounds for m in metrics):
        parts.append("p50 error bars: distribution-free 95% interval of the median")
    if any(m.energy for m in metrics):
        parts.append("dashed lines with hollow markers are estimated energy")
    if any(m.key == "roofline_fraction" for m in metrics):
        parts.append("bound = batch x memory bandwidth / (weight bytes + KV-cache bytes read per decode step)")
    return "; ".join(parts)


def scatter(rows: Sequence[Row], x: Metric, y: Metric, title: str, out_dir: Path, name: str,
            front: bool = False, annotate: Callable[[Row], str] = lambda r: f"b{r.batch_size}",
            x_lower_is_better: bool = False) -> Plot:
    """y vs x, one colour per series, error bars on both axes; with ``front`` the Pareto front (both
    maximised, or x minimised with ``x_lower_is_better``) is drawn."""
    usable = [r for r in rows if x.value(r) is not None and y.value(r) is not None]
    if not usable:
        missing = [_why(m, rows) for m in (x, y) if not has_data(rows, m)]
        return Plot(title, None, note="; ".join(missing) or "no configuration has both values")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=PANEL_SIZE)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = []
    for i, (label, pts) in enumerate(series(usable).items()):
        colour = colours[i % len(colours)]
        hollow = _estimated(pts, [x, y])
        xs, ys = [_known(x, r) for r in pts], [_known(y, r) for r in pts]
        xerr = _yerr([(0.0, v, x.interval(r)) for v, r in zip(xs, pts)])
        yerr = _yerr([(0.0, v, y.interval(r)) for v, r in zip(ys, pts)])
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="o", markersize=5, capsize=2, elinewidth=0.8, color=colour,
                    markerfacecolor="none" if hollow else colour, label=text(label, 64))
        labels += [(_known(x, r), _known(y, r), annotate(r)) for r in pts]
    caption = ("error bars: 95% intervals (decode: CI95 of the mean; energy: the stated 95% energy uncertainty)"
               if any(x.interval(r) or y.interval(r) for r in usable) else "")
    if front:
        best = pareto_front(usable, x, y, x_lower_is_better)
        xs, ys = [_known(x, r) for r in best], [_known(y, r) for r in best]
        # Staircase between front points; rings mark them (a one-point front has no line to see).
        ax.step(xs, ys, where="post" if x_lower_is_better else "pre", color="black", linewidth=1, alpha=0.6)
        ax.scatter(xs, ys, s=130, facecolors="none", edgecolors="black", linewidths=1, label="Pareto front", zorder=5)
        caption = "; ".join(c for c in (caption, "Pareto front (on the means): configurations no other configuration "
                                        "beats on both axes; overlapping error bars mean the ranking is not resolved") if c)
    ax.margins(0.12)  # room for the labels
    ax.set_xlabel(_axis_label(x, usable), fontsize=8.5)
    ax.set_ylabel(_axis_label(y, usable), fontsize=8.5)
    ax.grid(True, alpha=0.3)
    _estimated_badge(ax, usable, [x, y])
    _legend_outside(ax)
    _title(fig, title)
    for leg in [ax.get_legend()] if ax.get_legend() else []:
        leg.set_in_layout(False)
    fig.tight_layout()  # before the labels are placed: they are placed where the axes finally are
    _place_labels(ax, labels)
    skipped = len(rows) - len(usable)
    note = f"{skipped} configuration(s) without both values not shown" if skipped else ""
    return Plot(title, _save(fig, out_dir, name), caption=caption, note=note)


# -- serving: latency against throughput, energy and goodput against the offered load ---------

def _load_x(r: Row) -> Optional[float]:
    """A serving point's offered load on the x axis: requests/s, or users for a closed loop."""
    return float(r.concurrency) if r.concurrency is not None else r.offered_rate_value


def _mark_saturated(ax, pts: Sequence[tuple[float, float, Row]]) -> None:
    sat = [(x, y) for x, y, r in pts if r.saturated]
    if sat:
        ax.scatter([p[0] for p in sat], [p[1] for p in sat], marker="x", s=60, color="#b00020", zorder=6,
                   label="saturated")


def _serving_panel(ax, rows: Sequence[Row], metrics: Sequence[Metric], xfn: Callable[[Row], Optional[float]],
                   xlabel: str, always: Sequence[str] = ("scheme",)) -> bool:
    drawn = False
    for label, line in series(rows, always).items():
        for metric, marker in zip(metrics, ("o", "s", "^", "D")):
            pts = sorted(((xv, v, metric.interval(r), r) for r in line
                          if (xv := xfn(r)) is not None and (v := metric.value(r)) is not None), key=lambda p: p[0])
            if not pts:
                continue
            drawn = True
            name = f"{label}: {metric.label.split(' (')[0]}"  # one figure legend: every entry names its metric
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=_yerr([(p[0], p[1], p[2]) for p in pts]),
                        marker=marker, markersize=4, capsize=3, label=text(name, 44), **_style(line, metric))
            _mark_saturated(ax, [(p[0], p[1], p[3]) for p in pts])
    if drawn:
        ax.set_xlabel(xlabel, fontsize=8.5)
        quantities = {m.label.split(" ")[0] for m in metrics}  # "TTFT" of "TTFT p50 (ms)"
        shared = f"{quantities.pop()} ({metrics[0].unit})" if len(quantities) == 1 else metrics[0].unit
        ax.set_ylabel(_axis_label(metrics[0], rows) if len(metrics) == 1 else shared, fontsize=8.5)
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0)
        ax.grid(True, alpha=0.3)
        _estimated_badge(ax, rows, metrics)
    return drawn


def serving_curves(rows: Sequence[Row], panels: Sequence[tuple[Sequence[Metric], Callable[[Row], Optional[float]], str]],
                   title: str, out_dir: Path, name: str, caption: str) -> Plot:
    usable = [(ms, fx, xl) for ms, fx, xl in panels if any(has_data(rows, m) for m in ms)
              and any(fx(r) is not None for r in rows)]
    if not usable:
        return Plot(title, None, note="; ".join(_why(m, rows) for ms, _, _ in panels for m in ms))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(usable), figsize=(PANEL_SIZE[0] * len(usable), PANEL_SIZE[1]),
                             squeeze=False)
    for ax, (ms, fx, xl) in zip(axes[0], usable):
        _serving_panel(ax, rows, ms, fx, xl)
    _title(fig, title, len(usable))
    fig.tight_layout()
    # one legend for all panels, right of the last one: a legend between panels would cover the next
    unique: dict = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            unique.setdefault(lab, h)  # "saturated" once
    right = axes[0][-1].get_position()
    fig.legend(list(unique.values()), list(unique.keys()), fontsize=7.5, loc="upper left", frameon=False,
               bbox_to_anchor=(right.x1 + 0.01, right.y1), borderaxespad=0.0)
    return Plot(title, _save(fig, out_dir, name), caption=caption)


def serving_plots(rows: Sequence[Row], heading: str, out_dir: Path, key: str) -> list[Plot]:
    m = METRICS
    achieved = lambda r: r.achieved_rate  # noqa: E731
    output_tps = lambda r: r.output_tokens_per_s  # noqa: E731
    load_label = "offered users (closed loop)" if any(r.concurrency is not None for r in rows) else "offered requests/s"
    lat_caption = ("p50 with its distribution-free 95% interval (p95 has none at these request counts); red x: the "
                   "engine saturated at that load")
    return [
        serving_curves(rows, [([m["ttft_p50"], m["ttft_p95"]], achieved, "achieved requests/s"),
                              ([m["tpot_p50"], m["tpot_p95"]], achieved, "achieved requests/s")],
                       f"Latency vs throughput (requests/s): {heading}", out_dir, f"serving-latency-{key}.png", lat_caption),
        serving_curves(rows, [([m["ttft_p50"], m["ttft_p95"]], output_tps, "output tokens/s"),
                              ([m["tpot_p50"], m["tpot_p95"]], output_tps, "output tokens/s")],
                       f"Latency vs throughput (tokens/s): {heading}", out_dir, f"serving-latency-tokens-{key}.png",
                       lat_caption),
        serving_curves(rows, [([m["joules_per_request"]], _load_x, load_label),
                              ([m["tokens_per_joule"]], _load_x, load_label),
                              ([m["achieved_rate"], m["goodput"]], _load_x, load_label)],
                       f"Energy and goodput vs load: {heading}", out_dir, f"serving-energy-{key}.png",
                       "energy error bars: the 95% energy uncertainty; dashed lines with hollow markers are estimated "
                       "energy; goodput: requests/s meeting every SLO; red x: saturated"),
    ]


# -- the standard set for one hardware x model group -------------------------------------------

def group_plots(rows: Sequence[Row], heading: str, out_dir: Path, key: str) -> list[Plot]:
    m = METRICS
    memory = [m["device_memory"]] if has_data(rows, m["device_memory"]) else [m["host_memory"]]
    return [
        vs_batch(rows, [m["prefill"], m["decode"]], f"Throughput vs batch size: {heading}", out_dir, f"throughput-{key}.png"),
        vs_batch(rows, [m["tokens_per_joule"]], f"Energy efficiency vs batch size: {heading}", out_dir, f"efficiency-{key}.png"),
        scatter(rows, m["tokens_per_joule"], m["decode"], f"Throughput vs energy efficiency: {heading}", out_dir,
                f"pareto-{key}.png", front=True),
        vs_batch(rows, memory, f"Memory vs batch size: {heading}", out_dir, f"memory-{key}.png"),
        scatter(rows, m["tokens_per_joule"], m["perplexity"], f"Quality vs energy efficiency: {heading}", out_dir,
                f"quality-{key}.png"),
        vs_batch(rows, [m["roofline"]], f"Achieved % of the decode roofline: {heading}", out_dir, f"roofline-{key}.png"),
    ]


def gpu_setting_plots(rows: Sequence[Row], heading: str, out_dir: Path, key: str) -> list[Plot]:
    """A power-limit / locked-clock sweep: tokens/J against TPOT across the settings, with the
    energy-latency Pareto front (lower TPOT and more tokens/J are better). None without a sweep."""
    if not any(r.power_limit_w is not None or r.sm_clock_mhz is not None for r in rows):
        return []
    m = METRICS
    return [scatter(rows, m["tpot"], m["tokens_per_joule"], f"Energy vs latency across GPU power limits and clocks: {heading}",
                    out_dir, f"gpu-settings-{key}.png", front=True, x_lower_is_better=True,
                    annotate=lambda r: f"{gpu_setting_label(r)} b{r.batch_size}")]


def hardware_plots(rows: Sequence[Row], heading: str, out_dir: Path, key: str) -> list[Plot]:
    """The same model on several machines: lines per hardware and scheme."""
    m = METRICS
    return [
        vs_batch(rows, [m["decode"], m["tokens_per_joule"]], f"Hardware comparison: {heading}", out_dir,
                 f"hardware-{key}.png", always=("hardware", "scheme")),
    ]
