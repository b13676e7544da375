"""PNG plots with matplotlib (Agg, no display). Every function returns a ``Plot``: the file it wrote,
or no file and a note saying why (no data), so a run without energy still gets a report.

Estimated energy is drawn differently (dashed, hollow markers) and its axis says "estimated".
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from effbench.errors import EffbenchError
from effbench.report.model import METRICS, Metric, Row, has_data, pareto_front, series

DPI = 100
PANEL_SIZE = (5.2, 3.4)  # inches per panel: small PNGs (~30-60 kB) that stay legible


@dataclass(frozen=True)
class Plot:
    title: str
    file: Optional[str]  # relative to the report directory; None when skipped
    caption: str = ""
    note: str = ""  # why it was not drawn (file is None), or a caveat


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise EffbenchError("matplotlib is needed for report plots; pip install 'effbench[report]' (or matplotlib)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def text(s: str, limit: int = 60, wrap: int = 0) -> str:
    """A user string safe for a matplotlib label: '$' would start mathtext (and can raise).
    ``wrap`` > 0 breaks it into lines of at most that many characters."""
    import textwrap

    s = " ".join(str(s).split())
    s = s if len(s) <= limit else s[: limit - 1] + "…"
    s = "\n".join(textwrap.wrap(s, wrap)) if wrap else s
    return s.replace("$", r"\$")


def _axis_label(metric: Metric, rows: Sequence[Row]) -> str:
    shown = [r for r in rows if metric.value(r) is not None]
    if metric.energy and any(r.estimated for r in shown):
        return f"{metric.label} ({'ESTIMATED' if all(r.estimated for r in shown) else 'partly ESTIMATED'})"
    return metric.label


def _style(rows: Sequence[Row], metric: Optional[Metric]) -> dict:
    estimated = metric is not None and metric.energy and any(r.estimated for r in rows)
    return {"linestyle": "--", "markerfacecolor": "none"} if estimated else {"linestyle": "-"}


def _save(fig, out_dir: Path, name: str) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_dir / name, dpi=DPI)
    _pyplot().close(fig)
    return f"{out_dir.name}/{name}"


def _estimated_badge(ax, rows: Sequence[Row], metrics: Sequence[Metric]) -> None:
    estimated = [r.estimated for r in rows]
    if not any(m.energy for m in metrics) or not any(estimated):
        return
    label = "energy ESTIMATED, not measured" if all(estimated) else "dashed/hollow: energy ESTIMATED"
    ax.text(0.02, 0.97, label, transform=ax.transAxes, va="top", ha="left", fontsize=8, color="#8a4b00",
            bbox={"boxstyle": "round", "fc": "#fff3d6", "ec": "#d9a441"})


def vs_batch(rows: Sequence[Row], metrics: Sequence[Metric], title: str, out_dir: Path, name: str,
             always: Sequence[str] = ("scheme",)) -> Plot:
    """One panel per metric, value vs batch size, one line per series (scheme, or hardware/scheme),
    error bars from the CI95 / energy uncertainty where the record has them."""
    panels = [m for m in metrics if has_data(rows, m)]
    missing = [m.label for m in metrics if m not in panels]
    if not panels:
        return Plot(title, None, note="; ".join(_why(m) for m in metrics))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(PANEL_SIZE[0] * len(panels), PANEL_SIZE[1]), squeeze=False)
    lines = series(rows, always)
    for ax, metric in zip(axes[0], panels):
        for label, line in lines.items():
            pts = [(r.batch_size, metric.value(r), metric.error(r)) for r in line if metric.value(r) is not None]
            if not pts:
                continue
            xs, ys, es = zip(*pts)
            ax.errorbar(xs, ys, yerr=[e or 0.0 for e in es], marker="o", capsize=3, label=text(label, 40),
                        **_style(line, metric))
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r.batch_size for r in rows}))
        ax.get_xaxis().set_major_formatter(_int_formatter())
        ax.set_xlabel("batch size")
        top = max((metric.value(r) or 0) + (metric.error(r) or 0) for r in rows)
        if top > 0:  # zero baseline so ratios between batch sizes read true; headroom above the top point
            ax.set_ylim(0, top * 1.15)
        ax.set_ylabel(_axis_label(metric, rows))
        ax.grid(True, alpha=0.3)
        _estimated_badge(ax, rows, [metric])
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle(text(title, 120, wrap=60 * len(panels)), fontsize=10)
    note = "not shown: " + "; ".join(_why(m) for m in metrics if m not in panels) if missing else ""
    return Plot(title, _save(fig, out_dir, name), caption=_caption(metrics), note=note)


def _why(metric: Metric) -> str:
    return f"no {metric.label} in these records" + (f" ({metric.missing})" if metric.missing else "")


def _int_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v:g}")


def _caption(metrics: Sequence[Metric]) -> str:
    parts = []
    if any(m.err_key == "ci95_rel" for m in metrics):
        parts.append("error bars: CI95 of the mean over repeats")
    if any(m.err_key == "energy_uncertainty_rel" for m in metrics):
        parts.append("energy error bars: combined repeat spread and sensor accuracy")
    if any(m.energy for m in metrics):
        parts.append("dashed lines with hollow markers are estimated energy")
    if any(m.key == "roofline_fraction" for m in metrics):
        parts.append("bound = batch x memory bandwidth / (weight bytes + KV-cache bytes read per decode step)")
    return "; ".join(parts)


def scatter(rows: Sequence[Row], x: Metric, y: Metric, title: str, out_dir: Path, name: str,
            front: bool = False, annotate: Callable[[Row], str] = lambda r: f"b{r.batch_size}") -> Plot:
    """y vs x, one colour per series; with ``front`` the Pareto front (both maximised) is drawn."""
    usable = [r for r in rows if x.value(r) is not None and y.value(r) is not None]
    if not usable:
        missing = [_why(m) for m in (x, y) if not has_data(rows, m)]
        return Plot(title, None, note="; ".join(missing) or "no configuration has both values")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=PANEL_SIZE)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, pts) in enumerate(series(usable).items()):
        colour = colours[i % len(colours)]
        hollow = any(m.energy for m in (x, y)) and any(r.estimated for r in pts)
        ax.scatter([x.value(r) for r in pts], [y.value(r) for r in pts], label=text(label, 40),
                   facecolors="none" if hollow else colour, edgecolors=colour)
        for r in pts:
            ax.annotate(text(annotate(r), 20), (x.value(r), y.value(r)), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    caption = ""
    if front:
        best = pareto_front(usable, x, y)
        xs, ys = [x.value(r) for r in best], [y.value(r) for r in best]
        # Staircase between front points; rings mark them (a one-point front has no line to see).
        ax.step(xs, ys, where="pre", color="black", linewidth=1, alpha=0.6)
        ax.scatter(xs, ys, s=160, facecolors="none", edgecolors="black", linewidths=1, label="Pareto front")
        caption = "Pareto front: configurations no other configuration beats on both axes"
    ax.margins(0.12)  # room for the batch-size labels
    ax.set_xlabel(_axis_label(x, usable))
    ax.set_ylabel(_axis_label(y, usable))
    ax.grid(True, alpha=0.3)
    _estimated_badge(ax, usable, [x, y])
    ax.legend(fontsize=8, loc="best")
    ax.set_title(text(title, 120, wrap=60), fontsize=10)
    skipped = len(rows) - len(usable)
    note = f"{skipped} configuration(s) without both values not shown" if skipped else ""
    return Plot(title, _save(fig, out_dir, name), caption=caption, note=note)


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


def hardware_plots(rows: Sequence[Row], heading: str, out_dir: Path, key: str) -> list[Plot]:
    """The same model on several machines: lines per hardware and scheme."""
    m = METRICS
    return [
        vs_batch(rows, [m["decode"], m["tokens_per_joule"]], f"Hardware comparison: {heading}", out_dir,
                 f"hardware-{key}.png", always=("hardware", "scheme")),
    ]
