"""compare: matching, Welch's t-test / CI overlap, regression exit code, mixed-energy refusal."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_effbench as effbench

from effbench.analysis.compare import compare_records, load_side
from effbench.errors import EffbenchError
from effbench.results.schema import Record
from effbench.results.store import read_run_dir
from effbench.stats import t95, welch, welch_p

RUN = Path(__file__).parent / "data" / "r1_cpu_fp32"




def records() -> list[Record]:
    return read_run_dir(RUN)[1]


def slowed(rs: list[Record], factor: float) -> list[Record]:
    """The same run with decode ``factor`` times as fast (samples and means), as a slower build would be."""
    out = []
    for r in rs:
        s = dict(r.stats.samples)
        s["decode_tokens_per_s"] = [v * factor for v in s["decode_tokens_per_s"]]
        t = r.throughput.model_copy(update={"decode_tokens_per_s": r.throughput.decode_tokens_per_s * factor,
                                            "tpot_s": r.throughput.tpot_s / factor})
        out.append(r.model_copy(update={"throughput": t, "stats": r.stats.model_copy(update={"samples": s})}))
    return out


def write(tmp_path: Path, name: str, rs: list[Record]) -> Path:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r.to_json_dict()) + "\n" for r in rs))
    return path


# -- statistics ----------------------------------------------------------------------------------
def test_t_critical_values_from_tables():
    # two-sided 95% Student-t critical values, from printed tables
    assert t95(1) == pytest.approx(12.706, abs=1e-3)
    assert t95(5) == pytest.approx(2.571, abs=1e-3)
    assert t95(30) == pytest.approx(2.042, abs=1e-3)
    assert t95(1e9) == pytest.approx(1.960, abs=1e-3)
    assert t95(0) == float("inf")


def test_welch_difference_interval_by_hand():
    # means 2.5 and 4.0, variances 5/3 and 5/3, n 4 and 4: se = sqrt(5/6), df = 6
    d = welch([1, 2, 3, 4], [2.5, 3.5, 4.5, 5.5])
    assert d.delta == pytest.approx(1.5)
    assert d.df == pytest.approx(6.0)
    half = 2.446912 * (5 / 6) ** 0.5
    assert d.ci95 == pytest.approx((1.5 - half, 1.5 + half), rel=1e-5)
    assert d.ci95[0] < 0 < d.ci95[1] and d.p > 0.05


def test_welch_matches_scipy_when_available():
    a, b = [13.99, 13.44, 13.49, 13.83], [12.1, 12.5, 11.9, 12.4, 12.2]
    stats = pytest.importorskip("scipy.stats")
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-6)


def test_welch_zero_variance():
    assert welch_p([1.0, 1.0], [1.0, 1.0]) == 1.0
    assert welch_p([1.0, 1.0], [2.0, 2.0]) == 0.0


# -- the comparison ------------------------------------------------------------------------------
def test_identical_runs_pass():
    c = compare_records(records(), records())
    assert len(c.configs) == 3 and not c.regressions
    assert all(d.delta_rel == 0 for cfg in c.configs for d in cfg.deltas if d.delta_rel is not None)


def test_a_slower_run_is_flagged_by_welch():
    c = compare_records(records(), slowed(records(), 0.8))
    regs = {(label.split(" on ")[0], d.metric) for label, d in c.regressions}
    assert ("smollm2-135m transformers fp32 b1 p64 n32 en", "decode_tokens_per_s") in regs
    d = next(d for cfg in c.configs for d in cfg.deltas if d.metric == "decode_tokens_per_s")
    assert d.method == "welch" and d.p_value < 0.05 and d.delta_rel == pytest.approx(-0.2)
    tpot = next(d for cfg in c.configs for d in cfg.deltas if d.metric == "tpot_s")
    assert tpot.regression and tpot.worse  # TPOT up is worse


def test_faster_run_is_not_a_regression():
    c = compare_records(records(), slowed(records(), 1.25))
    assert not c.regressions
    assert any(d.significant and not d.worse for cfg in c.configs for d in cfg.deltas)


def test_threshold_decides_on_small_significant_changes():
    tight = {"decode_tokens_per_s": [100.0, 100.1, 99.9, 100.0]}
    r = records()[0]
    base = [r.model_copy(update={"stats": r.stats.model_copy(update={"samples": tight}),
                                 "throughput": r.throughput.model_copy(update={"decode_tokens_per_s": 100.0})})]
    new = slowed(base, 0.97)
    d = next(x for x in compare_records(base, new).configs[0].deltas if x.metric == "decode_tokens_per_s")
    assert d.significant and d.worse and d.delta_rel == pytest.approx(-0.03)
    assert not compare_records(base, new, threshold=0.05).regressions
    assert compare_records(base, new, threshold=0.01).regressions


def test_ci_overlap_when_no_samples():
    def strip(rs):
        return [r.model_copy(update={"stats": r.stats.model_copy(update={"samples": {}})}) for r in rs]
    base = strip(records())
    c = compare_records(base, strip(slowed(records(), 0.8)))
    d = next(x for x in c.configs[0].deltas if x.metric == "decode_tokens_per_s")
    assert d.method == "ci-overlap" and d.significant and d.regression
    d = next(x for x in compare_records(base, strip(slowed(records(), 0.99))).configs[0].deltas
             if x.metric == "decode_tokens_per_s")
    assert d.method == "ci-overlap" and not d.significant


def test_exact_metrics_use_threshold_only():
    new = [r.model_copy(update={"quality": r.quality.model_copy(update={"perplexity": r.quality.perplexity * 1.10})})
           for r in records()]
    c = compare_records(records(), new)
    assert {d.metric for _, d in c.regressions} == {"perplexity"}


def test_measured_vs_estimated_is_refused_unless_allowed():
    measured = [r.model_copy(update={"energy": r.energy.model_copy(update={"status": "measured"})}) for r in records()]
    with pytest.raises(EffbenchError, match="--allow-mixed-energy"):
        compare_records(records(), measured)
    c = compare_records(records(), measured, allow_mixed_energy=True)
    assert c.mixed_energy
    assert all(not d.regression for cfg in c.configs for d in cfg.deltas if d.metric == "tokens_per_joule")


def test_unmatched_and_failed_configurations_are_listed():
    rs = records()
    failed = rs[2].model_copy(update={"error": "out of memory"})
    c = compare_records(rs[:2], [rs[0], failed])
    assert len(c.configs) == 1 and len(c.only_in_base) == 1 and len(c.failed) == 1
    other_hw = [r.model_copy(update={"hardware": r.hardware.model_copy(update={"detected_name": "Other CPU"})}) for r in rs]
    with pytest.raises(EffbenchError, match="no configuration"):
        compare_records(rs, other_hw)


def test_loads_a_dir_or_a_results_file(tmp_path):
    assert len(load_side(RUN)) == len(load_side(RUN / "results.jsonl")) == 3
    with pytest.raises(EffbenchError, match="does not exist"):
        load_side(tmp_path / "missing")


# -- CLI -----------------------------------------------------------------------------------------
def test_cli_exit_codes(tmp_path):
    slow = write(tmp_path, "slow", slowed(records(), 0.8))
    p = effbench("compare", str(RUN), str(RUN))
    assert p.returncode == 0, p.stderr
    assert "no significant regression" in p.stdout
    p = effbench("compare", str(RUN), str(slow))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "REGRESSION" in p.stdout and "significant regression" in p.stderr
    p = effbench("compare", str(RUN), str(slow), "--json")
    assert p.returncode == 1 and json.loads(p.stdout)["regression"] is True


def test_cli_one_line_errors(tmp_path):
    def check(p, *needles):
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert p.returncode not in (0, 1) and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
        for n in needles:
            assert n in lines[0]

    check(effbench("compare", str(tmp_path / "nope"), str(RUN)), "does not exist")
    check(effbench("compare", str(RUN), str(RUN), "--threshold", "-1"), "--threshold")
    measured = write(tmp_path, "measured",
                     [r.model_copy(update={"energy": r.energy.model_copy(update={"status": "measured"})}) for r in records()])
    check(effbench("compare", str(RUN), str(measured)), "--allow-mixed-energy")
    assert effbench("compare", str(RUN), str(measured), "--allow-mixed-energy").returncode == 0


def test_failed_or_vanished_in_new_is_a_regression(tmp_path):
    rs = records()
    failed = rs[2].model_copy(update={"error": "out of memory"})
    c = compare_records(rs, [rs[0], failed])
    assert c.regression and not c.regressions and len(c.lost) == 2
    assert any("failed in NEW: out of memory" in x for x in c.lost) and any("missing in NEW" in x for x in c.lost)
    assert not compare_records(rs, [rs[0], failed], allow_missing=True).regression
    assert not compare_records(rs[:1], rs).regression  # new configurations are not regressions
    new = write(tmp_path, "new", [rs[0], failed])
    p = effbench("compare", str(RUN), str(new))
    assert p.returncode == 1 and "failed in" in p.stderr and "missing in" in p.stderr and "--allow-missing" in p.stderr, p.stderr
    assert json.loads(effbench("compare", str(RUN), str(new), "--json").stdout)["lost"]
    assert effbench("compare", str(RUN), str(new), "--allow-missing").returncode == 0


def test_prefill_significance_from_ttft_samples():
    rs = records()
    slow = []
    for r in rs:
        s = dict(r.stats.samples)
        s["ttft_s"] = [v * 1.5 for v in s["ttft_s"]]
        t = r.throughput.model_copy(update={"ttft_s": r.throughput.ttft_s * 1.5,
                                            "prefill_tokens_per_s": r.throughput.prefill_tokens_per_s / 1.5})
        slow.append(r.model_copy(update={"throughput": t, "stats": r.stats.model_copy(update={"samples": s})}))
    assert "prefill_tokens_per_s" not in rs[0].stats.samples
    c = compare_records(rs, slow)
    d = next(d for d in c.configs[0].deltas if d.metric == "prefill_tokens_per_s")
    assert d.method == "welch" and d.significant and d.regression


# -- the setup match key, hardware ids, intervals, energy uncertainty (issue 17) -----------------
SWEEP_1T = Path(__file__).parents[1] / "benchmarks" / "results" / "amd-epyc" / "cpu-sweep-20261123-220246"
QUANT_2T = Path(__file__).parents[1] / "benchmarks" / "results" / "amd-epyc" / "quant-sweep"
SERVING = Path(__file__).parents[1] / "benchmarks" / "results" / "intel-r-xeon-r-processor" / "serving-20261201-102739"


def with_backend(rs: list[Record], **update) -> list[Record]:
    return [r.model_copy(update={"backend": r.backend.model_copy(update=update)}) for r in rs]


def with_energy(rs: list[Record], **update) -> list[Record]:
    return [r.model_copy(update={"energy": r.energy.model_copy(update=update)}) for r in rs]


def test_other_thread_count_is_not_comparable_unless_loosened():
    base, new = with_backend(records(), threads=1), with_backend(records(), threads=2)
    with pytest.raises(EffbenchError, match=r"threads \(1 vs 2\).*--match-loose threads"):
        compare_records(base, new)
    c = compare_records(base, new, match_loose=["threads"])
    assert len(c.configs) == 3 and c.match_loose == ["threads"]
    assert [d.field for d in c.configs[0].loosened] == ["threads"]
    # one configuration differs, the others compare: it is listed with the differing key
    mixed = new[:2] + with_backend(new[2:], threads=1, version="transformers 9")
    c = compare_records(with_backend(records(), threads=2), mixed)
    assert len(c.configs) == 2 and len(c.not_comparable) == 1
    assert {d.field for d in c.not_comparable[0].differences} == {"backend_version", "threads"}


@pytest.mark.parametrize("field_update, name", [({"name": "llamacpp"}, "backend"), ({"version": "torch 9"}, "backend_version"),
                                                ({"device": "cuda:0"}, "device")])
def test_each_backend_field_is_in_the_key(field_update, name):
    rs = [r.model_copy(update={"hardware": r.hardware.model_copy(update={"profile": "cpu-amd-epyc"})}) for r in records()]
    with pytest.raises(EffbenchError, match=f"--match-loose {name} "):
        compare_records(rs, with_backend(rs, **field_update))
    assert compare_records(rs, with_backend(rs, **field_update), match_loose=[name.replace("_", "-")]).configs


def test_unknown_match_loose_field_is_one_clear_line():
    with pytest.raises(EffbenchError, match="unknown field.*threads"):
        compare_records(records(), records(), match_loose=["thread"])


def test_hardware_ids_are_normalised():
    named = [r.model_copy(update={"hardware": r.hardware.model_copy(update={"profile": None, "detected_name": "AMD EPYC"})})
             for r in records()]
    profiled = [r.model_copy(update={"hardware": r.hardware.model_copy(update={"profile": "cpu-amd-epyc"})}) for r in records()]
    c = compare_records(named, profiled)
    assert len(c.configs) == 3 and c.configs[0].label.endswith("on cpu-amd-epyc")
    # the committed runs: one stores no profile id in its records, the other does
    p = effbench("compare", str(RUN), str(QUANT_2T), "--json")
    assert p.returncode in (0, 1), p.stderr
    assert len(json.loads(p.stdout)["configs"]) == 3


def test_different_sensors_are_refused_like_measured_vs_estimated():
    nvml = with_energy(records(), status="measured", sensor="nvml", joules_by_domain={"gpu:0": 1.0})
    rapl = with_energy(records(), status="measured", sensor="rapl", joules_by_domain={"cpu:package-0": 1.0})
    with pytest.raises(EffbenchError, match="sensor"):
        compare_records(nvml, rapl)
    c = compare_records(nvml,
                        [r.model_copy(update={"energy": r.energy.model_copy(
                            update={"tokens_per_joule": r.energy.tokens_per_joule / 3})})
                         for r in rapl], match_loose=["sensor", "domains"])
    tpj = [d for cfg in c.configs for d in cfg.deltas if d.metric == "tokens_per_joule"]
    assert tpj and all(not d.regression and "different sensor" in d.note for d in tpj)


def test_deltas_carry_the_welch_interval():
    c = compare_records(records(), slowed(records(), 0.8))
    r0, s0 = records()[0], slowed(records(), 0.8)[0]
    d = next(x for x in c.configs[0].deltas if x.metric == "decode_tokens_per_s")
    w = welch(r0.stats.samples["decode_tokens_per_s"], s0.stats.samples["decode_tokens_per_s"])
    mean = sum(r0.stats.samples["decode_tokens_per_s"]) / len(r0.stats.samples["decode_tokens_per_s"])
    half = (w.ci95[1] - w.ci95[0]) / 2 / mean
    assert d.ci95_rel == pytest.approx((d.delta_rel - half, d.delta_rel + half))
    assert d.ci95_rel[1] < 0  # a 20% slowdown with 3-4% repeat spread: the interval excludes zero


def test_an_energy_change_inside_the_estimates_uncertainty_is_not_significant():
    # tokens/J halved (estimate +-50% on both sides): Welch on the repeats says p ~ 0, but the stated
    # uncertainties propagated to the difference are hypot(0.68*0.5, 0.34*0.5)/0.68 = 55.9% > 50%.
    rs = records()
    halved = []
    for r in rs:
        s = dict(r.stats.samples)
        s["joules_total"] = [j * 2 for j in s["joules_total"]]
        e = r.energy.model_copy(update={"joules_total": r.energy.joules_total * 2,
                                        "tokens_per_joule": r.energy.tokens_per_joule / 2})
        halved.append(r.model_copy(update={"energy": e, "stats": r.stats.model_copy(update={"samples": s})}))
    c = compare_records(rs, halved)
    d = next(x for x in c.configs[0].deltas if x.metric == "tokens_per_joule")
    u0, u1 = rs[0].energy.uncertainty_rel, halved[0].energy.uncertainty_rel
    assert d.delta_rel == pytest.approx(-0.5) and d.p_value < 0.05
    assert d.energy_uncertainty_rel == pytest.approx((u0 ** 2 + (u1 / 2) ** 2) ** 0.5)
    assert not d.significant and not d.regression and "energy uncertainty" in d.note
    assert d.ci95_rel[0] == pytest.approx(-1.0) and d.ci95_rel[1] > 0  # clipped at -100%
    assert d.base_estimated and d.new_estimated
    # the same halving with a measured +-5% energy figure is a regression
    tight = with_energy(rs, uncertainty_rel=0.05, status="measured")
    tight_new = [h.model_copy(update={"energy": h.energy.model_copy(update={"uncertainty_rel": 0.05, "status": "measured"})})
                 for h in halved]
    d = next(x for x in compare_records(tight, tight_new).configs[0].deltas if x.metric == "tokens_per_joule")
    assert d.regression


def test_issue_runs_differ_in_threads_and_say_so():
    p = effbench("compare", str(SWEEP_1T), str(QUANT_2T))
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "threads (1 vs 2)" in lines[0] and "--match-loose threads" in lines[0]
    p = effbench("compare", str(SWEEP_1T), str(QUANT_2T), "--match-loose", "threads", "--json")
    data = json.loads(p.stdout)
    tpj = [d for cfg in data["configs"] for d in cfg["deltas"] if d["metric"] == "tokens_per_joule"]
    assert len(tpj) == 6 and not any(d["regression"] or d["significant"] for d in tpj)
    assert all(d["ci95_rel"][0] < 0 < d["ci95_rel"][1] for d in tpj)


def test_table_and_markdown_explain_every_mark():
    slow = slowed(records(), 0.8)
    for fmt in ([], ["--md"]):
        p = effbench("compare", str(RUN), str(RUN / "results.jsonl"), *fmt)
        assert p.returncode == 0, p.stderr
        assert "TTFT ms" in p.stdout and "TTFT s" not in p.stdout and "peak memory MiB" in p.stdout
        assert "~0.680" in p.stdout  # estimated energy is marked
        for mark in ("* = significant", "REGRESSION =", "~ = energy ESTIMATED", "95% interval"):
            assert mark.replace("*", "\\*") in p.stdout or mark in p.stdout, (mark, p.stdout)
    c = compare_records(records(), slow)
    from effbench.cli.compare import markdown
    md = markdown(c)
    assert md.count("|") > 20 and "REGRESSION" in md and "[" in md


def test_json_and_md_are_exclusive_and_md_is_a_table(tmp_path):
    p = effbench("compare", str(RUN), str(RUN), "--json", "--md")
    assert p.returncode == 2 and "--json" in p.stderr
    p = effbench("compare", str(RUN), str(RUN), "--md")
    assert p.stdout.splitlines()[4].startswith("| configuration | metric | base | new | delta [95% CI] |")


def test_serving_points_match_on_their_offered_load():
    side = load_side(SERVING)
    c = compare_records(side, side)
    assert len(c.configs) == 4 and all(cfg.serving for cfg in c.configs)
    assert {cfg.label.split(" serving ")[1].split(" ")[1] for cfg in c.configs} == {"0.5/s", "1.0/s", "2.0/s", "4.0/s"}
    shown = {d.metric for d in c.configs[0].deltas if d.base is not None}
    assert {"ttft_p50_ms", "ttft_p95_ms", "tpot_p50_ms", "goodput", "joules_per_request", "achieved_rate"} <= shown
    assert "decode_tokens_per_s" not in shown
    # a TTFT p50 three times as slow: the recorded distribution-free intervals separate (p95 has none at n=16)
    slower = []
    for r in side:
        if r.serving is None:
            slower.append(r)
            continue
        t = r.serving.ttft_ms
        t2 = t.model_copy(update={"p50": t.p50 * 3, "ci95": {k: [v[0] * 3, v[1] * 3] for k, v in t.ci95.items()}})
        slower.append(r.model_copy(update={"serving": r.serving.model_copy(update={"ttft_ms": t2})}))
    c = compare_records(side, slower)
    d = [x for cfg in c.configs for x in cfg.deltas if x.metric == "ttft_p50_ms"]
    assert d and all(x.method == "ci-overlap" and x.regression and x.delta_rel == pytest.approx(2.0) for x in d)
    assert all(x.ci95_rel[0] > 0 for x in d)


def test_poisson_rate_interval_matches_the_exact_table():
    from effbench.stats import poisson_rate_ci95

    lo, hi = poisson_rate_ci95(10, 1.0)  # Garwood's exact 95% interval for 10 events: 4.795 to 18.39
    assert lo == pytest.approx(4.7954, abs=1e-3) and hi == pytest.approx(18.3904, abs=1e-3)
    assert poisson_rate_ci95(0, 2.0) == (0.0, pytest.approx(3.6889 / 2, abs=1e-3))
    assert poisson_rate_ci95(5, 0.0) is None


def test_serving_rates_carry_count_intervals_and_a_real_drop_is_a_regression():
    """Achieved rate, output tokens/s and goodput: a drop the request counts pin is a regression;
    one inside what the counts allow is not."""
    side = load_side(SERVING)

    def scaled(f):
        out = []
        for r in side:
            s = r.serving
            if s is None or not s.achieved_rate:
                out.append(r)
                continue
            # the same span, f times the completions (and so f times the rate, tokens and goodput)
            span = s.completed / s.achieved_rate
            completed = max(1, round(s.completed * f))
            upd = {"completed": completed, "achieved_rate": completed / span,
                   "output_tokens_per_s": s.output_tokens_per_s * completed / s.completed,
                   "goodput": s.goodput * completed / s.completed if s.goodput is not None else None}
            out.append(r.model_copy(update={"serving": s.model_copy(update=upd)}))
        return out

    big = scaled(8.0)  # many requests: tight intervals
    c = compare_records(big, scaled(8.0 * 0.5))
    for name in ("achieved_rate", "output_tokens_per_s", "goodput"):
        d = [x for cfg in c.configs for x in cfg.deltas if x.metric == name and x.base]
        assert d and all(x.method == "ci-overlap" for x in d), name
        assert all(x.regression and x.delta_rel == pytest.approx(-0.5, abs=0.02) for x in d), name
    c = compare_records(big, scaled(8.0 * 0.97))  # 3% fewer: inside what the counts allow
    d = [x for cfg in c.configs for x in cfg.deltas if x.metric == "achieved_rate" and x.base]
    assert d and not any(x.significant for x in d)
    assert all(x.ci95_rel[0] < x.delta_rel < x.ci95_rel[1] for x in d)
