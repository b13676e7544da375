"""``effbench report``: files, self-containment, escaping of hostile record strings, merging of run
directories from several machines, skipped plots, and one-line CLI errors."""
from __future__ import annotations

import copy
import csv
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Optional

import pytest

pytest.importorskip("matplotlib")

from effbench.report import write_report
from effbench.report.export import csv_cell, latex_escape
from effbench.report.markdown import escape as md_escape
from effbench.report.model import METRICS, Row, collapse_texts, load_sources, pareto_front, tidy

REAL_RUN = Path(__file__).parent / "data" / "report_run"
SCRIPT = "<script>alert(1)</script>"
HOSTILE_SET = '"><img src=x onerror=alert(2)>'
HOSTILE_ERROR = '<iframe src="https://evil.example/x"></iframe> out of memory'
HOSTILE_HOST = "<b>host</b>&"
LATEX_NASTY = "q$\\x{}&%_#^~"


def _base() -> tuple[dict[str, Any], dict[str, Any]]:
    run = json.loads((REAL_RUN / "run.json").read_text())
    first = json.loads((REAL_RUN / "results.jsonl").read_text().splitlines()[0])
    return run, first


def _record(base: dict, *, profile: Optional[str], detected: str, model: str, scheme: str, batch: int,
            decode: float, tpj: Optional[float], status: str = "measured", prompt_set: str = "en",
            ppl: Optional[float] = 10.0, error: Optional[str] = None, interference: bool = False) -> dict:
    r = copy.deepcopy(base)
    r["config_id"] = f"{detected}-{model}-{scheme}-{batch}"
    r["model"]["id"] = model
    r["quantization"]["scheme"] = scheme
    r["workload"].update(batch_size=batch, prompt_set=prompt_set)
    r["throughput"].update(decode_tokens_per_s=decode, prefill_tokens_per_s=decode * 10)
    r["energy"].update(status=status, sensor="nvml" if status == "measured" else "estimate",
                       tokens_per_joule=tpj, uncertainty_rel=0.05 if tpj else None,
                       sampling_interval_s=0.1 if status == "measured" else None,
                       coverage=0.95 if status == "measured" else None,
                       basis=None if status == "measured" else "TDP x utilisation")
    r["memory"].update(peak_device_bytes=(2 + batch) * 2**30)
    r["quality"]["perplexity"] = ppl
    r["hardware"].update(profile=profile, detected_name=detected)
    r["stats"]["interference"] = interference
    r["error"] = error
    if error:
        for section in ("throughput", "energy"):
            r[section] = {"status": "unavailable"} if section == "energy" else {}
    return r


def _write_run(path: Path, run: dict, records: list[dict], hostname: str) -> Path:
    path.mkdir(parents=True)
    run = copy.deepcopy(run)
    run["environment"]["hostname"] = hostname
    run["sensor"] = {"name": "nvml", "kind": "energy-counter", "available": True, "reason": "NVML energy counter",
                     "domains": ["gpu:0"], "update_period_s": 0.1, "accuracy_rel": 0.05}
    run["idle_baseline"] = {"power_w": 61.5, "duration_s": 5.0, "sensor": "nvml", "status": "measured"}
    (path / "run.json").write_text(json.dumps(run))
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def two_machines(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two GPU machines: several schemes and batch sizes, one OOM, hostile strings everywhere."""
    tmp_path = tmp_path_factory.mktemp("runs")
    run, base = _base()
    a = [
        _record(base, profile="h100-sxm", detected="NVIDIA H100 80GB HBM3", model="m1", scheme=s, batch=b,
                decode=d * b, tpj=t * b)
        for s, d, t in (("bf16", 100.0, 2.0), ("torchao-int8wo", 140.0, 2.6)) for b in (1, 8, 32)
    ]
    a.append(_record(base, profile="h100-sxm", detected="NVIDIA H100 80GB HBM3", model=SCRIPT, scheme=LATEX_NASTY,
                     batch=4, decode=50.0, tpj=1.0, prompt_set=HOSTILE_SET, interference=True))
    a.append(_record(base, profile="h100-sxm", detected="NVIDIA H100 80GB HBM3", model="m1", scheme="bf16",
                     batch=64, decode=0.0, tpj=None, error=HOSTILE_ERROR))
    b = [
        _record(base, profile="l4", detected="NVIDIA L4", model="m1", scheme="bf16", batch=bs, decode=20.0 * bs,
                tpj=1.5 * bs, status="estimated")
        for bs in (1, 8)
    ]
    return [_write_run(tmp_path / "h100", run, a, HOSTILE_HOST), _write_run(tmp_path / "l4", run, b, "l4-box")]


@pytest.fixture(scope="module")
def report(two_machines: list[Path], tmp_path_factory: pytest.TempPathFactory):
    return write_report(two_machines, tmp_path_factory.mktemp("report") / "out")


# -- files -------------------------------------------------------------------------------------

def test_real_run_writes_every_file(tmp_path: Path) -> None:
    files = write_report([REAL_RUN], tmp_path / "rep")
    for f in (files.markdown, files.html, files.csv, files.latex):
        assert f.is_file() and f.stat().st_size > 0
    names = {p.name.split("-")[0] for p in files.plots}
    # the roofline comes from the profile stored in run.json (31.03 GB/s), whatever machine writes the report
    assert {"throughput", "efficiency", "pareto", "memory", "quality", "roofline"} <= names
    md = files.markdown.read_text()
    assert "Profile cpu-amd-epyc (AMD EPYC): memory bandwidth 31.0 GB/s" in md and not files.warnings
    assert "ESTIMATED" in md and "~0.68" in md  # estimated energy marked in the table
    assert "Citable summary" in md and "stated accuracy ±50%" in md


def test_default_out_is_inside_the_single_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(REAL_RUN, run)
    files = write_report([run])
    assert files.out == run / "report" and files.html.is_file()


def test_rerun_removes_stale_plots(tmp_path: Path) -> None:
    out = tmp_path / "same"
    first = write_report([REAL_RUN], out)
    files = write_report([_no_energy_run(tmp_path)], out)
    assert first.plots and {p.name for p in (out / "plots").glob("*.png")} == {p.name for p in files.plots}


# -- self-contained HTML -----------------------------------------------------------------------

_LOADS = re.compile(r"""(?:\bsrc\s*=|\bhref\s*=|url\(|@import)\s*["']?([^"'\s)>]*)""", re.IGNORECASE)


class _Attributes(HTMLParser):
    """Every real (parsed, not escaped-text) src/href attribute and every tag name."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        self.tags.add(tag)
        self.targets += [v or "" for k, v in attrs if k in ("src", "href", "action", "srcset", "poster")]


def test_html_loads_nothing_from_the_network(report) -> None:
    text = report.html.read_text()
    # Textual scan: nothing anywhere that a browser could fetch over the network.
    loads = _LOADS.findall(text)
    assert loads, "expected at least the embedded images"
    for target in loads:
        assert not re.match(r"(?i)(https?:)?//", target), target
    assert not re.search(r"(?i)(src|href)\s*=\s*[\"']?(https?:)?//", text)
    # Parsed: the real attributes are data URIs or in-page anchors only.
    parsed = _Attributes()
    parsed.feed(text)
    assert parsed.targets
    assert all(t.startswith(("data:image/png;base64,", "#")) for t in parsed.targets), parsed.targets
    assert not parsed.tags & {"script", "iframe", "link", "object", "embed"}
    assert "default-src 'none'" in text  # the CSP forbids loads even if something slipped through


def test_html_embeds_every_plot(report) -> None:
    text = report.html.read_text()
    assert text.count("data:image/png;base64,") == len(report.plots) > 0


# -- escaping ----------------------------------------------------------------------------------

def test_hostile_strings_are_escaped_in_html(report) -> None:
    text = report.html.read_text()
    assert SCRIPT not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert HOSTILE_SET not in text and "onerror=alert(2)&gt;" in text
    assert "<iframe" not in text and "&lt;iframe" in text
    assert "<b>host</b>" not in text


def test_hostile_strings_are_escaped_in_markdown(report) -> None:
    text = report.markdown.read_text()
    assert SCRIPT not in text and "<iframe" not in text and "&lt;script&gt;" in text


def test_hostile_strings_are_escaped_in_latex(report) -> None:
    text = report.latex.read_text()
    assert SCRIPT not in text
    assert r"\textless{}script\textgreater{}alert(1)\textless{}/script\textgreater{}" in text
    assert latex_escape(LATEX_NASTY) in text
    assert latex_escape(LATEX_NASTY) == r"q\$\textbackslash{}x\{\}\&\%\_\#\textasciicircum{}\textasciitilde{}"


def test_markdown_escape_neutralises_syntax() -> None:
    assert md_escape("a|b*c_[x](y)\n<t>") == r"a\|b\*c\_\[x\](y) &lt;t&gt;"


def test_csv_keeps_every_row_and_defuses_formulas(report) -> None:
    rows = list(csv.DictReader(io.StringIO(report.csv.read_text())))
    assert len(rows) == 10  # 6 + hostile + failed on one machine, 2 on the other
    assert {r["model"] for r in rows} == {"m1", SCRIPT}
    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and csv_cell(-1.5) == -1.5


# -- merging and comparison --------------------------------------------------------------------

def test_two_machines_merge_into_one_comparison(report) -> None:
    md = report.markdown.read_text()
    assert "## Hardware: h100-sxm" in md and "## Hardware: l4" in md
    assert "## Hardware comparison" in md
    assert any(p.name.startswith("hardware-") for p in report.plots)
    assert "Measured and estimated energy are mixed" in md
    assert "host(s): &lt;b&gt;host&lt;/b&gt;&amp;" in md


def test_errors_get_their_own_table(report) -> None:
    md = report.markdown.read_text()
    failed = md.split("## Failed configurations", 1)[1].split("## Methodology", 1)[0]
    assert "out of memory" in failed and "| 64 |" in failed


def test_methodology_states_sensor_idle_and_interference(report) -> None:
    md = report.markdown.read_text()
    method = md.split("## Methodology", 1)[1]
    assert "nvml (energy-counter)" in method and "stated accuracy ±5%" in method
    assert "61.5 W over 5.00 s" in method
    assert "FLAGGED" in method and "coverage of each window 95.0%" in method


def _no_energy_run(tmp_path: Path) -> Path:
    run, base = _base()
    rec = _record(base, profile=None, detected="Some CPU", model="m", scheme="fp32", batch=1, decode=5.0, tpj=None,
                  status="unavailable", ppl=None)
    return _write_run(tmp_path / "no-energy", run, [rec], "h")


def test_plots_without_data_are_skipped_with_a_note(tmp_path: Path) -> None:
    files = write_report([_no_energy_run(tmp_path)], tmp_path / "out")
    md = files.markdown.read_text()
    assert "not drawn, no tokens/J in these records" in md
    assert "Quality vs energy efficiency" in md and not any(p.name.startswith("efficiency-") for p in files.plots)
    assert any("tokens/J" in s for s in files.skipped)


def test_a_missing_energy_figure_says_why_in_the_records_own_words(tmp_path: Path) -> None:
    """No sensor: rerun with one. A sensor that ran but could not attribute energy (its timeline missed the
    window): the record's own reason, not 'no sensor'."""
    run, base = _base()
    for name, sensor, basis, needle in (("none", "none", None, "rerun with --sensor"),
                                        ("missed", "estimate", "the power timeline covers only 0% of the window",
                                         "sensor estimate ran, but the power timeline covers only 0% of the window")):
        rec = _record(base, profile=None, detected="Some CPU", model="m", scheme="fp32", batch=1, decode=5.0, tpj=None,
                      status="unavailable", ppl=None)
        rec["energy"].update(sensor=sensor, basis=basis)
        files = write_report([_write_run(tmp_path / name, run, [rec], "h")], tmp_path / f"out-{name}")
        assert needle in files.markdown.read_text(), name


# -- statistics --------------------------------------------------------------------------------

def test_pareto_front_keeps_only_non_dominated(two_machines: list[Path]) -> None:
    rows = [r for r in tidy(load_sources(two_machines[:1]), roofline=lambda rec: (None, None))
            if r.model == "m1" and not r.error]
    front = pareto_front(rows, METRICS["tokens_per_joule"], METRICS["decode"])
    assert [(r.scheme, r.batch_size) for r in front] == [("torchao-int8wo", 32)]


def test_collapse_texts_merges_numbers_into_ranges() -> None:
    assert collapse_texts(["util 97% of 2", "util 100% of 2", None, "other"]) == ["util 97-100% of 2", "other"]


def test_rows_flatten_records() -> None:
    rows = tidy(load_sources([REAL_RUN]), roofline=lambda rec: (None, None))
    assert [r.batch_size for r in rows] == [1, 4, 16]
    # the records name only the detected "AMD EPYC"; the section key is the profile id the run stored
    assert isinstance(rows[0], Row) and rows[0].estimated and rows[0].hardware == "cpu-amd-epyc"
    assert rows[0].detected_name == "AMD EPYC" and rows[0].threads == 2


# -- CLI ---------------------------------------------------------------------------------------

def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    from effbench.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_cli_one_line_error_for_a_non_run_dir(tmp_path: Path, capsys, make) -> None:
    code, _, err = _cli(["report", str(make(tmp_path)), "--out", str(tmp_path / "o")], capsys)
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("effbench: error:") and "Traceback" not in err


def test_cli_writes_report(tmp_path: Path, capsys) -> None:
    from effbench.cli import main

    try:
        main(["report", str(REAL_RUN), "--out", str(tmp_path / "o")])
    except SystemExit as e:
        assert not e.code
    assert "report.html" in capsys.readouterr().out
    assert (tmp_path / "o" / "report.html").is_file()


def test_the_profile_stored_in_run_json_is_used_for_the_roofline(tmp_path: Path) -> None:
    from effbench.report.build import hardware_section
    from effbench.report.model import group_rows, profile_lookup

    run = tmp_path / "run"
    shutil.copytree(REAL_RUN, run)
    meta = json.loads((run / "run.json").read_text())
    assert tidy(load_sources([REAL_RUN]))[0].hardware_profile is None
    meta["hardware"]["resolved"] = {"id": "cpu-stored", "name": "Stored CPU", "vendor": "test", "kind": "cpu", "memory_gb": 64,
                                    "memory_bandwidth_gbps": 40.0, "tdp_w": 120, "bandwidth_source": "measured at run time"}
    (run / "run.json").write_text(json.dumps(meta))
    sources = load_sources([run])
    assert profile_lookup(sources)(None, "AMD EPYC").id == "cpu-stored"
    rows = tidy(sources)
    assert all(r.roofline_bound_tokens_per_s is not None and r.roofline_fraction is not None for r in rows if not r.error)
    section = hardware_section("AMD EPYC", group_rows(rows), tmp_path / "out", [], sources)
    texts = [getattr(b, "text", "") for b in section.blocks]
    assert any("cpu-stored" in t and "measured at run time" in t for t in texts)
