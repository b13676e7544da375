"""One run loader (effbench.results.run): run.json typed, one hardware id per record and one
perplexity baseline, the same in report, compare and plan."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_effbench

from effbench.errors import EffbenchError
from effbench.results.run import RunMeta, load_run
from effbench.results.schema import Record
from effbench.results.store import RunStore

DATA = Path(__file__).parent / "data"
RUN = DATA / "r1_cpu_fp32"  # records name only the detected "AMD EPYC"; run.json stores the profile


def _record(config_id: str, scheme: str, ppl: float | None, **quality) -> Record:
    return Record(run_id="r1", config_id=config_id, model={"id": "m"}, backend={"name": "fake", "device": "cpu"},
                  quantization={"scheme": scheme}, quality={"perplexity": ppl, **quality},
                  workload={"batch_size": 1, "prompt_tokens": 8, "new_tokens": 4, "prompt_set": "en"},
                  hardware={"profile": None, "detected_name": "AMD EPYC"})


def _legacy(tmp_path: Path) -> Path:
    """RUN as effbench < 0.2 wrote it: run.json without the resolved profile."""
    run = tmp_path / "legacy"
    run.mkdir()
    shutil.copy(RUN / "results.jsonl", run / "results.jsonl")
    meta = load_run(RUN).meta.model_dump(mode="json", exclude={"hardware": {"resolved"}})  # typed, written back
    (run / "run.json").write_text(json.dumps(meta))
    return run


# -- run.json, typed --------------------------------------------------------------------------------
def test_run_json_is_typed_and_unknown_keys_are_kept(tmp_path):
    run = load_run(RUN)
    assert run.described and len(run.records) == 3
    assert run.meta.environment.hostname and run.meta.environment.cpu.logical_cpus
    assert run.meta.sensor is not None and run.meta.sensor.name
    assert run.meta.sessions[-1].status
    # an older or hand-edited run.json: keys effbench never wrote load, and are kept
    meta = RunMeta.parse({"run_id": "x", "my_note": {"by": "hand"}, "environment": {"hostname": "h", "rack": 7}})
    assert meta.run_id == "x" and meta.model_extra == {"my_note": {"by": "hand"}}
    assert meta.environment.model_extra == {"rack": 7} and meta.sensor is None and meta.config.ppl_threshold is None


def test_a_key_of_the_wrong_type_is_one_line_naming_it(tmp_path):
    store = RunStore(tmp_path / "run")
    store.append(_record("a", "fp32", 10.0))
    store.write_run({"run_id": "x", "idle_baseline": {"power_w": "lots"}})
    with pytest.raises(EffbenchError, match=r"run\.json is invalid at 'idle_baseline\.power_w'") as e:
        load_run(store.path)
    assert "\n" not in str(e.value)
    for verb in (["report", str(store.path), "--out", str(tmp_path / "rep")], ["compare", str(store.path), str(store.path)],
                 ["plan", "--results", str(store.path), "--target-tokens-per-s", "10"]):
        assert_one_line_error(run_effbench(*verb), "is invalid at 'idle_baseline.power_w'")


def test_a_bare_results_file_and_a_missing_run_json(tmp_path):
    bare = tmp_path / "mine.jsonl"
    shutil.copy(RUN / "results.jsonl", bare)
    run = load_run(bare)
    assert len(run.records) == 3 and not run.described and run.missing_profile and run.meta.run_id is None
    assert load_run(RUN / "results.jsonl").meta.run_id == load_run(RUN).meta.run_id  # what users paste
    with pytest.raises(EffbenchError, match="does not exist"):
        load_run(tmp_path / "missing")


# -- one hardware id ---------------------------------------------------------------------------------
def test_a_copied_record_keeps_its_runs_profile():
    run = load_run(RUN)
    r = run.records[0]
    copy = r.model_copy(update={"quality": r.quality.model_copy(update={"note": "x"})})
    assert run.profile_of(copy) is run.profile_of(r) is not None
    assert run.hardware_id(copy) == run.hardware_id(r) == run.profile_of(r).id


def test_report_compare_and_plan_name_a_runs_hardware_alike(tmp_path):
    """A run that stores no profile and whose records name only the detected "AMD EPYC": compare
    called it cpu-amd-epyc, the report "AMD EPYC" and the plan "AMD EPYC". One rule now."""
    from effbench.analysis.compare import compare_paths
    from effbench.planner import Demand, PlanRequest, plan
    from effbench.report.model import load_sources, tidy

    legacy = _legacy(tmp_path)
    run = load_run(legacy)
    assert run.missing_profile and {run.hardware_id(r) for r in run.records} == {"cpu-amd-epyc"}
    rows = tidy(load_sources([legacy]), roofline=lambda rec: (None, None))
    c = compare_paths(legacy, legacy)
    p = plan(run.records, PlanRequest(Demand(tokens_per_s=10.0), projections=False))  # the records alone
    assert {r.hardware for r in rows} == {c.configs[0].hardware} == {"cpu-amd-epyc"}
    assert c.configs[0].label.endswith("on cpu-amd-epyc")
    assert {o.hardware for o in p.options} == {"cpu-amd-epyc"}


# -- one perplexity baseline --------------------------------------------------------------------------
def test_the_sweep_report_and_plan_take_the_same_perplexity_baseline(tmp_path):
    """fp32 measured first (12.0), bf16 next (10.0), then int8 whose rise a --resume session did not
    store. The sweep compares with the first unquantized record (fp32: +8%); the planner used the lowest
    (bf16: +30%), so a plan could drop a scheme the report showed unflagged. One rule now: the first."""
    from effbench.planner import scheme_rises
    from effbench.report.model import load_sources, tidy
    from effbench.sweep.baseline import Baselines

    records = [_record("a", "fp32", 12.0), _record("b", "bf16", 10.0), _record("c", "int8-dynamic", 13.0)]
    store = RunStore(tmp_path / "run")
    for r in records:
        store.append(r)
    store.write_run({"run_id": "r1", "config": {"ppl_threshold": 0.2}})
    sweep = Baselines(0.2)
    sweep.add_stored(r.to_json_dict() for r in records[:2])
    swept = sweep.apply(records[2]).quality
    run = load_run(store.path)
    (reported,) = [r for r in tidy(load_sources([store.path]), roofline=lambda rec: (None, None))
                   if r.scheme == "int8-dynamic"]
    planned = scheme_rises(run.records)[("m", "fake", "int8-dynamic")]
    assert swept.baseline_scheme == "fp32" and run.baselines.by_key[("m", "fake")] == ("fp32", 12.0)
    assert swept.perplexity_rise == pytest.approx(13 / 12 - 1)
    assert reported.perplexity_rise == pytest.approx(swept.perplexity_rise) == pytest.approx(planned)
    assert not reported.quality_flagged and not swept.flagged  # +8% under the run's 20% threshold


def test_a_stored_rise_is_kept_and_failed_records_are_no_baseline():
    from effbench.results.baseline import Baselines

    failed = _record("x", "fp32", 5.0).model_copy(update={"error": "out of memory"})
    stored = _record("q", "int8-dynamic", 30.0, perplexity_rise=0.5, baseline_scheme="fp32")
    b = Baselines().add([failed, _record("a", "fp32", 20.0), stored])
    assert b.by_key == {("m", "fake"): ("fp32", 20.0)}
    assert b.rise(stored) == 0.5 and b.completed([stored])[0] is stored
