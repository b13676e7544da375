"""Planner arithmetic against hand-computed cases, projections, filters and CLI errors."""
from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import assert_one_line_error
from conftest import run_effbench as effbench

from effbench.errors import EffbenchError
from effbench.hardware import parse_price_options
from effbench.hardware.catalog import user_dir
from effbench.planner import Demand, PlanRequest, plan
from effbench.results.schema import Record

RUN = Path(__file__).parent / "data" / "r1_cpu_fp32"

GPU = {"name": "Test GPU", "vendor": "test", "kind": "gpu", "memory_gb": 10, "memory_bandwidth_gbps": 1000,
       "peak_tflops": {"bf16": 100}, "tdp_w": 200, "price_per_hour_usd": 2.0, "price_source": "test", "price_date": "2026-01-01"}

# On testgpu: e2e 500 tok/s, decode 600 tok/s, prefill 5,000 tok/s, TTFT 80 ms, TPOT 10 ms, 300 J per 2 s call = 150 W,
# peak 2 GB of 10 GB. Roofline on testgpu: 4 x 1e12 / (1e9 + 4 x 1e5 x 125) = 3,809.5 tok/s, so 600 is 15.75%.
RECORD: dict[str, Any] = {
    "run_id": "r", "config_id": "c",
    "model": {"id": "m", "weights_bytes": 1_000_000_000},
    "backend": {"name": "transformers"},
    "quantization": {"scheme": "bf16"},
    "workload": {"batch_size": 4, "prompt_tokens": 100, "new_tokens": 50, "prompt_set": "en"},
    "throughput": {"e2e_tokens_per_s": 500.0, "decode_tokens_per_s": 600.0, "prefill_tokens_per_s": 5000.0,
                   "ttft_s": 0.080, "tpot_s": 0.010, "e2e_latency_s": 2.0},
    "energy": {"status": "measured", "joules_total": 300.0},
    "memory": {"weights_bytes": 1_000_000_000, "kv_bytes_per_token": 100_000, "peak_device_bytes": 2_000_000_000},
    "hardware": {"profile": "testgpu", "detected_name": "Test GPU"},
}


@pytest.fixture(autouse=True)
def test_gpus():
    user_dir().mkdir(parents=True, exist_ok=True)
    (user_dir() / "testgpu.yaml").write_text(yaml.safe_dump({**GPU, "id": "testgpu"}))
    (user_dir() / "testgpu2.yaml").write_text(yaml.safe_dump({
        **GPU, "id": "testgpu2", "name": "Test GPU 2", "memory_bandwidth_gbps": 2000, "peak_tflops": {"bf16": 200},
        "tdp_w": 300, "price_per_hour_usd": 3.0}))


def record(**sections: dict) -> Record:
    d = copy.deepcopy(RECORD)
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return Record.model_validate(d)


def request(demand: Demand, **kw) -> PlanRequest:
    kw.setdefault("hardware", ["testgpu"])
    kw.setdefault("grid_g_per_kwh", 400.0)
    kw.setdefault("max_utilisation", 1.0)  # the hand-computed cases below leave no queueing headroom
    return PlanRequest(demand, **kw)




# -- arithmetic ----------------------------------------------------------------------------------
def test_tokens_target_by_hand():
    p = plan([record()], request(Demand(tokens_per_s=1200)))
    (o,) = p.options
    assert (o.hardware, o.basis, o.rank) == ("testgpu", "measured", 1)
    assert o.capacity_tokens_per_s == 500
    assert o.replicas == 3                               # ceil(1200 / 500)
    assert o.utilisation == pytest.approx(0.8)           # 1200 / (3 x 500)
    assert o.usd_per_hour == pytest.approx(6.0)          # 3 x $2
    assert o.usd_per_month == pytest.approx(4380.0)      # $6 x 730 h
    assert o.usd_per_million_tokens == pytest.approx(6.0 / (1200 * 3600) * 1e6)  # $1.389
    assert (o.power_w, o.power_basis) == (150.0, "measured")  # 300 J / 2 s
    assert o.kwh_per_month == pytest.approx(328.5)       # 3 x 150 W x 730 h / 1000
    assert o.kg_co2e_per_month == pytest.approx(131.4)   # 328.5 kWh x 400 g / 1000
    assert o.memory_headroom_gb == pytest.approx(8.0)    # 10 GB - 2 GB
    assert (o.ttft_ms, o.tpot_ms) == (pytest.approx(80.0), pytest.approx(10.0))


def test_requests_target_by_hand():
    # per replica: 200 / (1000 / 5000 + 200 / 600) = 375 tok/s; demand 2 x 200 = 400 tok/s -> 2 replicas
    p = plan([record()], request(Demand(requests_per_s=2, prompt_tokens=1000, output_tokens=200)))
    (o,) = p.options
    assert p.demand_tokens_per_s == 400
    assert o.capacity_tokens_per_s == pytest.approx(375.0)
    assert o.replicas == 2
    assert o.ttft_ms == pytest.approx(800.0)  # batch 4 x 1000 prompt tokens / 5000 tok/s
    assert any("measured at 100/50" in n for n in o.notes)


def test_hours_and_prices_override():
    p = plan([record()], request(Demand(tokens_per_s=1000), hours_per_month=100, prices=parse_price_options(["testgpu=1.5"])))
    (o,) = p.options
    assert o.replicas == 2 and o.usd_per_month == pytest.approx(2 * 1.5 * 100) and o.price_source == "command line (--price)"


def test_tdp_when_no_energy():
    p = plan([record(energy={"status": "unavailable", "joules_total": None})], request(Demand(tokens_per_s=500)))
    (o,) = p.options
    assert (o.power_w, o.power_basis) == (200, "tdp") and o.kwh_per_month == pytest.approx(200 * 730 / 1000)


def test_latency_limits_and_memory_exclude_with_reasons():
    r = record()
    assert plan([r], request(Demand(tokens_per_s=100), max_ttft_ms=100, max_tpot_ms=10)).options
    p = plan([r], request(Demand(tokens_per_s=100), max_ttft_ms=50))
    assert not p.options and "TTFT 80 ms > 50 ms" in p.excluded[0]
    p = plan([r], request(Demand(tokens_per_s=100), max_tpot_ms=5))
    assert not p.options and "TPOT" in p.excluded[0]
    p = plan([record(memory={"peak_device_bytes": 12_000_000_000})], request(Demand(tokens_per_s=100)))
    assert not p.options and "does not fit" in p.excluded[0]
    p = plan([record(), record(workload={"batch_size": 8}, hardware={}, error="out of memory")],
             request(Demand(tokens_per_s=100)))
    assert len(p.options) == 1 and any("failed" in e for e in p.excluded)


def test_ranking_is_by_monthly_cost():
    cheap = record(throughput={"e2e_tokens_per_s": 1000.0}, workload={"batch_size": 16})
    p = plan([record(), cheap], request(Demand(tokens_per_s=1500)))
    assert [o.batch_size for o in p.options] == [16, 4]  # 2 replicas vs 3
    assert [o.rank for o in p.options] == [1, 2]


# -- projection ----------------------------------------------------------------------------------
def test_projection_by_hand():
    p = plan([record()], request(Demand(tokens_per_s=1200), hardware=["testgpu2"]))
    (o,) = p.options
    assert (o.hardware, o.basis, o.projected_from) == ("testgpu2", "projected", "testgpu")
    frac = 600 / (4 * 1e12 / 1.05e9)                 # achieved on testgpu
    decode = frac * (4 * 2e12 / 1.05e9)              # x bound on testgpu2 = 1200 tok/s
    assert decode == pytest.approx(1200)
    ttft = 0.080 / 2                                 # prefill scales with bf16 TFLOPs 200/100
    tpot = 4 / decode
    e2e = 4 * 50 / (ttft + 49 * tpot)
    assert o.capacity_tokens_per_s == pytest.approx(e2e)
    assert o.ttft_ms == pytest.approx(40.0) and o.tpot_ms == pytest.approx(tpot * 1000)
    assert (o.power_w, o.power_basis) == (300, "tdp")
    assert o.peak_memory_gb == pytest.approx((1e9 + 4 * 1e5 * 150) / 1e9)  # weights + full KV
    assert o.replicas == -(-1200 // e2e) and o.usd_per_hour == pytest.approx(o.replicas * 3.0)


def test_measured_hardware_is_never_projected_and_projection_can_be_off():
    p = plan([record()], request(Demand(tokens_per_s=100), hardware=None))
    by_basis = {(o.hardware, o.basis) for o in p.options}
    assert ("testgpu", "measured") in by_basis and ("testgpu", "projected") not in by_basis
    assert ("h100-sxm", "projected") in by_basis
    assert ("t4", "projected") not in by_basis  # T4 has no bf16
    assert any("t4" in e and "no bf16" in e for e in p.excluded)
    p = plan([record()], request(Demand(tokens_per_s=100), hardware=None, projections=False))
    assert {o.basis for o in p.options} == {"measured"}


# -- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, needle", [
    ({"tokens_per_s": -5}, "--target-tokens-per-s must be a positive number"),
    ({"tokens_per_s": 0}, "--target-tokens-per-s"),
    ({}, "give exactly one target"),
    ({"tokens_per_s": 1, "requests_per_s": 1}, "give exactly one target"),
    ({"requests_per_s": 1}, "--prompt-tokens"),
])
def test_bad_demand(kwargs, needle):
    with pytest.raises(EffbenchError, match=needle):
        Demand(**kwargs)


def test_unknown_hardware_is_an_error():
    with pytest.raises(EffbenchError, match="did you mean 'testgpu'"):
        plan([record()], request(Demand(tokens_per_s=1), hardware=["testgpu3"]))


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_plan_on_the_real_cpu_run():
    p = effbench("plan", "--results", str(RUN), "--target-tokens-per-s", "500", "--hardware", "l4,h100-sxm", "--json",
                 "--project-from-cpu")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["options"] and all(o["basis"] == "projected" for o in data["options"])  # the CPU run is not in --hardware
    assert {o["hardware"] for o in data["options"]} == {"l4", "h100-sxm"}
    p = effbench("plan", "--results", str(RUN), "--target-tokens-per-s", "500", "--csv", "--no-projections")
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert len(rows) == 3 and {r["basis"] for r in rows} == {"measured"}
    p = effbench("plan", "--results", str(RUN), "--target-tokens-per-s", "500", "--top", "5", "--project-from-cpu")
    assert p.returncode == 0 and "projected" in p.stdout


@pytest.mark.parametrize("args, needles", [
    (["--target-tokens-per-s", "-10"], ["--target-tokens-per-s must be a positive number"]),
    (["--target-tokens-per-s", "10", "--hardware", "h100sxm"], ["unknown hardware profile 'h100sxm'", "did you mean 'h100-sxm'"]),
    (["--target-requests-per-s", "2"], ["--prompt-tokens"]),
    (["--target-tokens-per-s", "10", "--price", "l4=cheap"], ["--price 'l4=cheap'"]),
    (["--target-tokens-per-s", "10", "--region", "mars"], ["mars"]),
    (["--target-tokens-per-s", "10", "--hours-per-month", "0"], ["--hours-per-month"]),
])
def test_cli_one_line_errors(args, needles):
    assert_one_line_error(effbench("plan", "--results", str(RUN), *args), *needles)


def test_grid_intensity_sources():
    from effbench.planner import grid_intensity

    assert grid_intensity(None, 123.0) == (123.0, "command line (--grid-intensity)")
    g, source = grid_intensity(None, None)
    assert g > 0 and "world" in source.lower()


def test_cli_missing_results_dir(tmp_path):
    assert_one_line_error(effbench("plan", "--results", str(tmp_path / "nope"), "--target-tokens-per-s", "10"), "does not exist")


# -- random weights and the profile stored in run.json -------------------------------------------
def test_random_weights_are_marked_in_notes_json_and_csv(tmp_path):
    from effbench.cli.plan import _csv, _notes

    p = plan([record(model={"id": "m", "weights": "random", "weights_bytes": 1_000_000_000})],
             request(Demand(tokens_per_s=1000.0), hardware=None))
    assert p.options and all(o.random_weights for o in p.options)
    from effbench.models.arch import RANDOM_WEIGHTS_NOTE

    assert any(RANDOM_WEIGHTS_NOTE in line for line in _notes(p.options))
    assert {o.basis for o in p.options} == {"measured", "projected"}
    assert all(RANDOM_WEIGHTS_NOTE in line for line in _notes(p.options))  # projected rows too
    assert all(o["random_weights"] for o in p.to_dict()["options"])
    assert {r["random_weights"] for r in csv.DictReader(io.StringIO(_csv(p)))} == {"True"}
    assert not any(o.random_weights for o in plan([record()], request(Demand(tokens_per_s=1000.0))).options)


def _stored_run(profile: dict, pid: str, name: str) -> dict:
    from effbench.hardware import HardwareProfile

    return {"run_id": "r", "hardware": {"profile": pid, "detected_name": name, "kind": profile["kind"],
                                        "resolved": HardwareProfile.model_validate(profile).model_dump(mode="json")}}


def test_the_profile_stored_in_run_json_is_used_first(monkeypatch):
    import effbench.hardware.cpu as cpu_mod

    remote = {**GPU, "id": "remotegpu", "name": "Remote GPU", "price_per_hour_usd": 7.0}
    r = record(hardware={"profile": "remotegpu", "detected_name": "Remote GPU"})
    d = Demand(tokens_per_s=1000.0)
    without = plan([r], request(d, hardware=None, projections=False))
    assert without.options[0].price_per_hour_usd is None and without.options[0].memory_gb is None  # not known here
    p = plan([r], request(d, hardware=["remotegpu"], projections=False), [_stored_run(remote, "remotegpu", "Remote GPU")])
    assert p.options[0].hardware == "remotegpu" and p.options[0].price_per_hour_usd == 7.0
    assert plan([r], request(d, hardware=None, projections=False, prices=parse_price_options(["remotegpu=1"])),
                [_stored_run(remote, "remotegpu", "Remote GPU")]).options[0].price_per_hour_usd == 1.0
    # a CPU run that stored its (measured) profile: nothing is measured again
    name = cpu_mod.cpu_name()
    monkeypatch.setattr(cpu_mod, "measure_bandwidth_gbps", lambda: (_ for _ in ()).throw(AssertionError("measured")))
    cpu = {"name": name, "vendor": "test", "kind": "cpu", "memory_gb": 64, "memory_bandwidth_gbps": 50.0, "tdp_w": 100}
    rc = record(hardware={"profile": None, "detected_name": name}, memory={"peak_device_bytes": None,
                                                                           "peak_host_bytes": 2_000_000_000})
    p = plan([rc], request(d, hardware=None, projections=False), [_stored_run({**cpu, "id": "cpu-stored"}, None, name)])
    assert p.options[0].hardware == "cpu-stored" and p.options[0].memory_gb == 64


def test_cli_plan_uses_the_profile_stored_in_run_json(tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    meta = json.loads((run / "run.json").read_text())
    meta["hardware"]["resolved"] = {"id": "cpu-stored", "name": "Stored CPU", "vendor": "test", "kind": "cpu",
                                    "memory_gb": 64, "memory_bandwidth_gbps": 40.0, "tdp_w": 120, "price_per_hour_usd": 0.5}
    (run / "run.json").write_text(json.dumps(meta))
    p = effbench("plan", "--results", str(run), "--target-tokens-per-s", "500", "--hardware", "cpu-stored", "--no-projections",
                 "--json")
    assert p.returncode == 0, p.stderr
    opts = json.loads(p.stdout)["options"]
    assert opts and {o["hardware"] for o in opts} == {"cpu-stored"} and {o["price_per_hour_usd"] for o in opts} == {0.5}
    assert all(o["random_weights"] is False for o in opts)


# -- serving records: capacity per replica = the highest measured load meeting the SLO ------------
def serving_record(rate: float, tokens_per_s: float, ttft_p95: float, tpot_p95: float, watts: float,
                   saturated: bool = False) -> Record:
    return record(config_id=f"s{rate}", workload={"batch_size": 1},
                  serving={"rate": rate, "arrival": "poisson", "achieved_rate": tokens_per_s / 100,
                           "output_tokens_per_s": tokens_per_s, "ttft_ms": {"p50": ttft_p95 / 2, "p95": ttft_p95},
                           "tpot_ms": {"p50": tpot_p95 / 2, "p95": tpot_p95}, "saturated": saturated,
                           "saturation_reason": "achieved rate below 90% of the offered rate" if saturated else None},
                  energy={"status": "measured", "joules_total": watts * 10, "mean_power_w": watts})


def test_serving_capacity_is_the_highest_rate_that_meets_the_slo_at_p95():
    points = [serving_record(1, 100, 50, 20, 120), serving_record(2, 200, 80, 30, 150),
              serving_record(4, 380, 400, 60, 190), serving_record(8, 390, 2000, 90, 200, saturated=True)]
    p = plan(points, request(Demand(tokens_per_s=1000), max_ttft_ms=100))
    (o,) = p.options
    assert o.serving_load == "rate 2.0/s" and o.capacity_tokens_per_s == 200
    assert o.replicas == 5 and (o.ttft_ms, o.tpot_ms) == (80, 30)  # p95s, not means
    assert (o.power_w, o.power_basis) == (150, "measured")  # the point's steady-state mean power
    assert any("TTFT 400 ms > 100 ms" in e for e in p.excluded)
    assert any("saturated at rate 8.0/s" in e for e in p.excluded)
    assert any("rate 1.0/s" in e and "higher load" in e for e in p.excluded)
    # Without a TTFT limit the rate-4 point is the replica's capacity; saturated points never are.
    (o4,) = plan(points, request(Demand(tokens_per_s=1000))).options
    assert o4.serving_load == "rate 4.0/s" and o4.replicas == 3
    # The requests form: achieved requests/s x the demand's output length.
    (oreq,) = plan(points, request(Demand(requests_per_s=10, prompt_tokens=64, output_tokens=50), max_ttft_ms=100)).options
    assert oreq.capacity_tokens_per_s == pytest.approx(2.0 * 50)
