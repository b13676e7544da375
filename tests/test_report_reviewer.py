"""What a reviewer checks in a report of the committed runs (issue 17): rows of different runs told
apart, per-row threads / backend version / sensor / stop reason / flags in every output, the
methodology from each run's own records, the git sha as stored, best figures that skip
quality-flagged rows, one unit per column, plots in three formats at 300 dpi with their intervals,
the serving section, summary.json and CITATION.cff."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

import effbench
from effbench.report import write_report
from effbench.report.model import load_sources, tidy

ROOT = Path(__file__).resolve().parents[1]
ONE_THREAD = ROOT / "benchmarks" / "results" / "amd-epyc" / "cpu-sweep-20261123-220246"
TWO_THREADS = ROOT / "benchmarks" / "results" / "amd-epyc" / "quant-sweep"
FIXTURE = ROOT / "tests" / "data" / "r1_cpu_fp32"
SERVING = ROOT / "benchmarks" / "results" / "intel-r-xeon-r-processor" / "serving-20261201-102739"


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    return write_report([ONE_THREAD, TWO_THREADS, FIXTURE], tmp_path_factory.mktemp("three") / "rep")


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    return write_report([SERVING], tmp_path_factory.mktemp("serving") / "rep")


def md_table(md: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    lines = md.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith(f"| {first_header} |"))
    rows = []
    for x in lines[start + 2:]:
        if not x.startswith("|"):
            break
        rows.append([c.strip() for c in re.split(r"(?<!\\)\|", x)[1:-1]])
    return [c.strip() for c in lines[start].split("|")[1:-1]], rows


def test_rows_of_different_runs_are_distinguishable_everywhere(three):
    md = three.markdown.read_text()
    header, rows = md_table(md, "scheme")
    for col in ("threads", "backend version", "sensor", "stop", "flags", "run"):
        assert col in header, col
    key = [header.index(c) for c in ("scheme", "batch", "threads", "run")]
    assert len({tuple(r[i] for i in key) for r in rows}) == len(rows) == 24
    # the same scheme and batch at 1 and at 2 threads are two rows that say so
    fp32_b1 = [r for r in rows if r[header.index("scheme")] == "fp32" and r[header.index("batch")] == "1"]
    assert sorted(r[header.index("threads")] for r in fp32_b1) == ["1", "2", "2"]
    # the CSV has threads and the record's line
    data = list(csv.DictReader(io.StringIO(three.csv.read_text())))
    assert {"threads", "backend_version", "energy_sensor", "stop_reason", "line"} <= set(data[0])
    assert {(d["source"], d["threads"]) for d in data if d["scheme"] == "fp32"} >= {
        ("cpu-sweep-20261123-220246", "1"), ("quant-sweep", "2")}
    # LaTeX: Threads and a run letter keep duplicates apart; the caption keys the letters
    tex = three.latex.read_text()
    body = tex[tex.index("\\midrule") + 8:tex.index("\\bottomrule")].strip().splitlines()
    cells = [tuple(c.strip() for c in line.rstrip("\\ ").split("&")) for line in body]
    assert len(set((c[2], c[3], c[4], c[-1]) for c in cells)) == len(cells)
    assert "Threads" in tex and "Run: a = cpu-sweep-20261123-220246" in tex


def test_time_cap_interference_and_quality_are_marked_per_row(three):
    header, rows = md_table(three.markdown.read_text(), "scheme")
    rec = {(json.loads(x)["quantization"]["scheme"], json.loads(x)["workload"]["batch_size"]): json.loads(x)
           for x in (ONE_THREAD / "results.jsonl").read_text().splitlines()}
    ours = [r for r in rows if r[header.index("threads")] == "1"]
    for r in ours:
        record = rec[(r[header.index("scheme")], int(r[header.index("batch")]))]
        flags = r[header.index("flags")]
        assert r[header.index("stop")] == record["stats"]["stop_reason"]
        assert ("time cap" in flags) == (record["stats"]["stop_reason"] == "time-cap")
        assert ("quality: perplexity +267%" in flags) == bool(record["quality"]["flagged"])
    tex_rows = [line for line in three.latex.read_text().splitlines() if line.startswith("cpu-amd-epyc & smollm2-135m & "
                                                                                         "int8-dynamic & 16 & 1 &")]
    assert tex_rows and "T,Q" in tex_rows[0]


def test_methodology_threads_come_from_each_runs_records(three):
    md = three.markdown.read_text()
    one = md[md.index("### Run cpu-sweep-20261123-220246"):md.index("### Run quant-sweep")]
    assert "1 thread(s) per configuration (backend.threads); the process default at start was 2" in one
    assert "torch threads 2" not in md
    two = md[md.index("### Run quant-sweep"):]
    assert "2 thread(s) per configuration (backend.threads)" in two.split("### Run")[1]


def test_git_sha_is_quoted_exactly_as_stored(three):
    md = three.markdown.read_text()
    stored = json.loads((ONE_THREAD / "run.json").read_text())["environment"]["git_sha"]
    assert stored.endswith("-dirty")
    citable = next(x for x in md.splitlines() if x.startswith("Citable summary: ") and "8cc3f8" in x)
    assert f"(git {stored})" in citable
    summary = json.loads(three.summary.read_text())
    assert {r["label"]: r["git_sha"] for r in summary["runs"]}["cpu-sweep-20261123-220246"] == stored


def test_best_figures_skip_quality_flagged_rows(three):
    header, rows = md_table(three.markdown.read_text(), "hardware")
    (row,) = [r for r in rows if r[0] == "cpu-amd-epyc"]
    best_tpj = row[header.index("best tok/J \\[95% interval\\]")]
    # int8-dynamic (18.1 tok/J at 1 thread, 10.5 and 6.67 at 2) is quality-flagged: perplexity 174.97 vs
    # fp32 47.70. quant-sweep's int8-dynamic batch 4 record was written by a --resume session without
    # the baseline (flagged false, "no unquantized scheme"); the report compares it with its own run's
    # fp32 and flags it too. The best unflagged tok/J is fp32 batch 16 at 1 thread: 6.59.
    assert best_tpj.startswith("~6.59") and "fp32, batch 16, 1 thread, run cpu-sweep" in best_tpj
    assert "18.1" not in best_tpj and "6.67" not in best_tpj
    assert row[header.index("quality-flagged rows excluded")] == "6"
    summary = json.loads(three.summary.read_text())
    best = next(b for b in summary["best"] if b["hardware"] == "cpu-amd-epyc")["best_tokens_per_joule"]
    assert best["value"] == pytest.approx(6.5852, rel=1e-3) and best["excluded_quality_flagged"] == 6
    rows = tidy(load_sources([TWO_THREADS]))
    (resumed,) = [r for r in rows if r.scheme == "int8-dynamic" and r.batch_size == 4]
    assert resumed.quality_flagged and resumed.perplexity_rise == pytest.approx(174.97 / 47.70 - 1, rel=1e-3)
    assert resumed.hardware == "cpu-amd-epyc" and resumed.roofline_fraction is not None


def test_one_unit_per_column(three):
    header, rows = md_table(three.markdown.read_text(), "scheme")
    (mem,) = [h for h in header if h.startswith("peak mem")]
    assert mem in ("peak mem MiB", "peak mem GiB")
    cells = [r[header.index(mem)] for r in rows]
    assert all(re.fullmatch(r"[\d,]+(\.\d+)?", c) for c in cells), cells


def test_plots_in_three_formats_at_300_dpi(three):
    from PIL import Image

    assert three.plots and len(three.vector_plots) == 2 * len(three.plots)
    for png in three.plots:
        for ext in ("svg", "pdf"):
            other = png.with_suffix(f".{ext}")
            assert other.is_file() and other.stat().st_size > 1000
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
        with Image.open(png) as im:
            assert im.info["dpi"][0] == pytest.approx(300, abs=1)
    md = three.markdown.read_text()
    assert "[SVG](plots/" in md and "[PDF](plots/" in md


def test_pareto_plot_has_error_bars_on_both_axes(tmp_path):
    import matplotlib
    matplotlib.use("Agg", force=True)
    from effbench.report import plots
    from effbench.report.model import METRICS

    rows = [r for r in tidy(load_sources([ONE_THREAD])) if not r.error]
    captured = {}
    real = plots._save

    def keep(fig, out_dir, name):
        captured["fig"] = fig
        ax = fig.get_axes()[0]
        captured["bars"] = [c for c in ax.containers if c.__class__.__name__ == "ErrorbarContainer"]
        captured["legend"] = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
        captured["axes"] = ax.get_window_extent(fig.canvas.get_renderer())
        captured["texts"] = [t.get_window_extent(fig.canvas.get_renderer()) for t in ax.texts if t.get_text().startswith("b")]
        captured["badge"] = [t for t in ax.texts if "ESTIMATED" in t.get_text()]
        return real(fig, out_dir, name)

    plots._save = keep
    try:
        p = plots.scatter(rows, METRICS["tokens_per_joule"], METRICS["decode"], "t", tmp_path, "p.png", front=True)
    finally:
        plots._save = real
    assert p.file and captured["bars"]
    for bars in captured["bars"]:
        assert bars.has_xerr and bars.has_yerr
    # the legend lies right of the axes: it covers no point and no badge
    assert captured["legend"].x0 >= captured["axes"].x1
    # the badge sits above the axes
    (badge,) = captured["badge"]
    assert badge.get_position()[1] > 1.0
    # point labels do not overlap one another
    boxes = captured["texts"]
    assert boxes and not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_long_ids_are_shortened_not_wrapped():
    from effbench.report.plots import text

    long = "org/" + "x" * 200
    assert "\n" not in text(long, 60) and len(text(long, 60)) == 60 and text(long, 60).endswith("…")
    assert text("cost $5") == r"cost \$5"


def test_serving_section_in_every_output(serving):
    md = serving.markdown.read_text()
    assert "### Serving: smollm2-135m" in md or "#### Serving: smollm2-135m" in md
    header, rows = md_table(md, "scheme")
    for col in ("offered load", "achieved req/s", "TTFT p50 ms \\[95% CI\\]", "TTFT p95 ms", "TPOT p50 ms \\[95% CI\\]",
                "TPOT p95 ms", "goodput req/s", "J/request", "energy ±", "saturated"):
        assert col in header, col
    assert [r[header.index("offered load")] for r in rows] == ["0.5 req/s", "1.0 req/s", "2.0 req/s", "4.0 req/s"]
    assert [r[header.index("saturated")] for r in rows] == ["no", "no", "no", "SATURATED"]
    first = json.loads((SERVING / "results.jsonl").read_text().splitlines()[0])
    lo, hi = first["serving"]["ttft_ms"]["ci95"]["p50"]
    ttft_p50 = first["serving"]["ttft_ms"]["p50"]
    assert rows[0][header.index("TTFT p50 ms \\[95% CI\\]")] == f"{ttft_p50:.0f} \\[{lo:.0f}, {hi:.0f}\\]"
    assert rows[0][header.index("J/request")].startswith("~19.2")
    names = {p.name.rsplit("-", 1)[0].split("-cpu-")[0] for p in serving.plots}
    assert {"serving-latency", "serving-latency-tokens", "serving-energy"} <= names
    data = list(csv.DictReader(io.StringIO(serving.csv.read_text())))
    served = [d for d in data if d["scenario"] == "serving"]
    assert len(served) == 4 and float(served[0]["ttft_p50_ms"]) == pytest.approx(first["serving"]["ttft_ms"]["p50"])
    tex = serving.latex.read_text()
    assert "tab:effbench-serving" in tex and "4.0 req/s" in tex and "& yes \\\\" in tex
    summary = json.loads(serving.summary.read_text())
    figs = {f["quantity"]: f for f in summary["configurations"][0]["figures"]}
    assert figs["ttft_p50_ms"]["ci95"] == pytest.approx([lo, hi])
    assert figs["joules_per_request"]["estimated"]
    assert figs["joules_per_request"]["ci95"][0] < first["energy"]["joules_per_request"]


def test_summary_json_traces_every_quoted_figure_to_its_record(three):
    summary = json.loads(three.summary.read_text())
    assert summary["confidence"] == 0.95 and summary["generator"] == f"effbench {effbench.__version__}"
    figures = {f["id"]: f for c in summary["configurations"] for f in c["figures"]}
    for b in summary["best"]:
        for key in ("best_decode_tokens_per_s", "best_tokens_per_joule"):
            fig = figures[b[key]["figure"]]
            assert fig["value"] == b[key]["value"] and fig["ci95"] == b[key]["ci95"]
    paths = {r["label"]: Path(r["path"]) for r in summary["runs"]}
    for c in summary["configurations"]:
        src = c["source"]
        line = (paths[src["run"]] / "results.jsonl").read_text().splitlines()[src["results_line"] - 1]
        record = json.loads(line)
        assert record["config_id"] == src["config_id"]
        decode = next(f for f in c["figures"] if f["quantity"] == "decode_tokens_per_s")
        v, rel = record["throughput"]["decode_tokens_per_s"], record["stats"]["ci95_rel"]
        assert decode["value"] == pytest.approx(v) and decode["ci95"] == pytest.approx([v * (1 - rel), v * (1 + rel)])
        tpj = next(f for f in c["figures"] if f["quantity"] == "tokens_per_joule")
        assert tpj["estimated"] and tpj["energy_status"] == "estimated" and tpj["sensor"] == "estimate"


def test_citation_file_names_this_version():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["version"] == effbench.__version__ and "effbench" in cff["title"] and cff["authors"]


def test_a_serving_runs_method_comes_from_its_serving_records(serving):
    md = serving.markdown.read_text()
    method = md[md.index("### Run serving-20261201-102739"):]
    assert "arrival poisson; 16 measured request(s) per point after 2 warm-up request(s)" in method
    assert "offered 0.5 req/s, 1.0 req/s, 2.0 req/s, 4.0 req/s" in method and "saturated points**: 1 of 4" in method
    assert "not forced" in method and "(forced, greedy)" not in method
    assert "repeats until the CI95 of decode tokens/s" not in method  # the offline rule does not apply
    citable = next(x for x in method.splitlines() if x.startswith("Citable summary: "))
    assert citable.startswith("Citable summary: We loaded "
                              "smollm2-135m") and "16bd3016e9c12c577e04b4646aaec16cffc03eaf-dirty" in citable


def test_a_power_limit_sweep_gets_its_energy_latency_pareto_front(tmp_path):
    """tokens/J against TPOT across the limits; the front keeps the settings no other beats on both."""
    from effbench.report import plots
    from effbench.report.model import METRICS, pareto_front

    base = [r for r in tidy(load_sources([ONE_THREAD])) if not r.error and r.batch_size == 1][0]
    # (limit W, TPOT s, tokens/J): 300 W slow and frugal, 500 W balanced, 700 W fast, 600 W dominated by 500 W
    settings = [(300.0, 0.030, 9.0), (500.0, 0.020, 8.0), (600.0, 0.022, 7.0), (700.0, 0.015, 5.0)]
    rows = [base.__class__(**{**base.__dict__, "power_limit_w": w, "tpot_s": t, "tokens_per_joule": tpj,
                             "config_id": f"pl{w:g}"}) for w, t, tpj in settings]
    front = pareto_front(rows, METRICS["tpot"], METRICS["tokens_per_joule"], x_lower_is_better=True)
    assert [r.power_limit_w for r in front] == [700.0, 500.0, 300.0]
    (p,) = plots.gpu_setting_plots(rows, "m on h", tmp_path, "k")
    assert p.file and (tmp_path / p.file.split("/")[-1]).exists() and "Pareto" in p.caption
    assert plots.gpu_setting_plots([base], "m on h", tmp_path, "k") == []  # no sweep, no plot
