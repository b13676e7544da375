"""compare: matching, Welch's t-test / CI overlap, regression exit code, mixed-energy refusal."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_effbench as effbench

from effbench.analysis.compare import compare_records, load_side
from effbench.stats import t95, welch, welch_p
from effbench.errors import EffbenchError
from effbench.results.schema import Record
from effbench.results.store import read_run_dir

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
    d = next(x for x in compare_records(base, strip(slowed(records(), 0.99))).configs[0].deltas if x.metric == "decode_tokens_per_s")
    assert d.method == "ci-overlap" and not d.significant


def test_exact_metrics_use_threshold_only():
    new = [r.model_copy(update={"quality": r.quality.model_copy(update={"perplexity": r.quality.perplexity * 1.10})}) for r in records()]
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
    measured = write(tmp_path, "measured", [r.model_copy(update={"energy": r.energy.model_copy(update={"status": "measured"})}) for r in records()])
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
