"""The GPU projection model: its arithmetic by hand, the fit recovering known terms, leave-one-model-out,
the shipped fit being current, and `effbench project --json` (the contract)."""
from __future__ import annotations

import json
import math

import pytest

from conftest import assert_one_line_error
from conftest import run_effbench as effbench
from effbench.analysis import projection as pj
from effbench.errors import EffbenchError
from effbench.hardware.catalog import HardwareProfile
from effbench.models.arch import ArchShape

GPU = HardwareProfile(id="toygpu", name="Toy", vendor="t", kind="gpu", memory_gb=80, memory_bandwidth_gbps=1000,
                      peak_tflops={"bf16": 100}, tdp_w=500, interconnect_gbps=100)
DENSE = ArchShape(name="toy", layers=10, hidden=1000, heads=8, head_dim=125, kv_heads=2, vocab=1000,
                  total_params=1_000_000_000, embedding_params=1_000_000, expert_params=0, experts=0, experts_per_token=0,
                  layer_windows=(None,) * 10, max_context_tokens=4096)
MOE = ArchShape(name="moe", layers=10, hidden=1000, heads=8, head_dim=125, kv_heads=2, vocab=1000,
                total_params=9_000_000_000, embedding_params=1_000_000, expert_params=8_000_000_000, experts=8,
                experts_per_token=2, layer_windows=(None, 100) * 5, max_context_tokens=4096)
COEF = pj.Coefficients({"toygpu": pj.DeviceTerms(0.5, 0.25, 10.0, (0.5, 0.5))}, tp_layer_us=5.0)


def test_step_time_by_hand() -> None:
    s = pj.Shape(DENSE, GPU, 1, 4, 100, 200)
    kv = 2 * 10 * 2 * 125 * 2 * (100 + 100)  # K and V, layers, kv heads, head dim, bf16, mean context 200
    t_mem = (1e9 * 2 + 4 * kv) / (1e12 * 0.5)
    flops = 4 * (2 * (1e9 - 1e6) * (1 + 100 / 200) + 10 * 4 * 8 * 125 * 200)
    t_comp = flops / (100e12 * 0.25)
    t = pj.terms(s, COEF)
    assert t.t_mem == pytest.approx(t_mem) and t.t_comp == pytest.approx(t_comp)
    assert t.t_fixed == pytest.approx(10 * 10e-6)
    p = pj.predict(s, COEF)
    step = t_mem + t_comp + 100e-6
    assert p.output_tokens_per_s == pytest.approx(4 / step) and p.tpot_ms == pytest.approx(step * 1000)
    assert p.power_w == pytest.approx(500 * (0.5 + 0.5 * t_comp / step))
    assert p.joules_per_token == pytest.approx(p.power_w / p.output_tokens_per_s)


def test_tensor_parallel_adds_layer_and_all_reduce_costs() -> None:
    t1, t2 = pj.terms(pj.Shape(DENSE, GPU, 1, 4, 100, 200), COEF), pj.terms(pj.Shape(DENSE, GPU, 2, 4, 100, 200), COEF)
    assert t2.t_mem == pytest.approx(t1.t_mem / 2) and t2.t_comp == pytest.approx(t1.t_comp / 2)
    all_reduce = 10 * 2 * 2 * (1 / 2) * 4 * 1000 * 2 / 100e9
    assert t2.t_fixed == pytest.approx(10 * 15e-6 + all_reduce)


def test_moe_reads_only_the_experts_its_tokens_touch() -> None:
    one = pj._bytes_per_step(pj.Shape(MOE, GPU, 1, 1, 0, 2))
    dense_bytes, expert_bytes = 1e9 * 2, 8e9 * 2
    kv = 5 * 2 * 2 * 125 * 2 * 1 + 5 * 2 * 2 * 125 * 2 * 1  # mean context 1 token, both layer kinds
    assert one == pytest.approx(dense_bytes + expert_bytes * 2 / 8 + kv)
    many = pj._bytes_per_step(pj.Shape(MOE, GPU, 1, 64, 0, 2))
    assert many < dense_bytes + expert_bytes + 64 * kv + 1 and many > dense_bytes + 0.99 * expert_bytes
    assert MOE.active_params == 9e9 - 8e9 * 6 / 8


def test_sliding_window_layers_stop_growing() -> None:
    per = 2 * 2 * 125 * 2
    assert MOE.kv_bytes(1000) == pytest.approx(5 * per * 1000 + 5 * per * 100)


def test_memory_and_largest_concurrency_by_hand() -> None:
    s = pj.Shape(DENSE, GPU, 1, 10, 1000, 1000)
    per_seq = DENSE.kv_bytes(2000)
    assert pj.memory_gb(s) == pytest.approx((2e9 + 10 * per_seq) / 1e9 + 2.0)
    assert pj.max_concurrency(s) == int(((80 * 0.9 - 2) * 1e9 - 2e9) // per_seq)


def test_fit_recovers_known_terms_and_lomo_is_exact_on_exact_data() -> None:
    truth = pj.Coefficients({"toygpu": pj.DeviceTerms(0.6, 0.3, 20.0, (0.55, 0.4))}, tp_layer_us=8.0)
    samples = []
    for i, arch in enumerate((DENSE, MOE, ArchShape(**{**DENSE.__dict__, "name": "deep", "layers": 40, "layer_windows": (None,) * 40}))):
        for gpus in (1, 2):
            for c in (1, 8, 64, 256):
                s = pj.Shape(arch, GPU, gpus, c, 200, 400)
                p = pj.predict(s, truth)
                samples.append(pj.Sample(s, arch.name, p.output_tokens_per_s, p.power_w, f"{arch.name}/{gpus}/{c}"))
    c = pj.fit(samples)
    d = c.devices["toygpu"]
    assert (d.bw_eff, d.flops_eff, d.layer_us, c.tp_layer_us) == pytest.approx((0.6, 0.3, 20.0, 8.0), rel=1e-3)
    assert d.power == pytest.approx((0.55, 0.4), rel=1e-3)
    errors = pj.leave_one_model_out(samples)
    assert errors.tokens_per_s["p95"] < 1e-3 and errors.joules_per_token["p95"] < 1e-3
    assert errors.models == ["deep", "moe", "toy"] and errors.points == len(samples)


def test_lomo_never_sees_the_model_it_predicts(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[set[str]] = []
    real_fit = pj.fit

    def spy(samples):
        seen.append({s.model for s in samples})
        return real_fit(samples)

    monkeypatch.setattr(pj, "fit", spy)
    samples = [pj.Sample(pj.Shape(a, GPU, 1, c, 10, 10), a.name, 100.0 * c, 300.0, f"{a.name}{c}")
               for a in (DENSE, MOE, ArchShape(**{**DENSE.__dict__, "name": "third"})) for c in (1, 4, 16)]
    pj.leave_one_model_out(samples)
    assert seen == [{"third", "toy"}, {"moe", "toy"}, {"moe", "third"}]  # moe, third, toy left out in turn


def test_shipped_fit_is_the_fit_of_the_shipped_data() -> None:
    fresh, shipped = pj.fit_reference(), pj.fitted()
    assert fresh.fitted_on == shipped.fitted_on and len(shipped.fitted_on) > 200
    for dev, terms in fresh.coefficients.devices.items():
        s = shipped.coefficients.devices[dev]
        assert (s.bw_eff, s.flops_eff, s.layer_us + 1) == pytest.approx((terms.bw_eff, terms.flops_eff, terms.layer_us + 1), rel=1e-3)
    assert shipped.errors.tokens_per_s["median"] == pytest.approx(fresh.errors.tokens_per_s["median"], rel=1e-3)
    assert len(shipped.errors.models) >= 8  # every architecture with published points


def test_exact_published_point_is_reference_else_projected_with_a_band() -> None:
    r = pj.project_point("arch:llama-3.1-8b", "h100-sxm", concurrency=64, workload="lm-arena-chat")
    assert r["basis"] == "reference" and r["output_tokens_per_s"] == 5147.15 and r["joules_per_token"] == 0.11858
    p = pj.project_point("arch:llama-3.1-8b", "h100-sxm", concurrency=48, workload="lm-arena-chat")
    assert p["basis"] == "projected" and p["band"]["confidence"] == 0.95
    lo, hi = p["band"]["interval"]["output_tokens_per_s"]
    assert lo < p["output_tokens_per_s"] < hi and hi / p["output_tokens_per_s"] == pytest.approx(1 + p["band"]["output_tokens_per_s"])
    assert p["fitted_on"] and p["joules_per_token"] == pytest.approx(p["power_w"] / p["output_tokens_per_s"])
    h200 = pj.project_point("arch:llama-3.1-8b", "h200", concurrency=64, workload="lm-arena-chat")
    assert h200["basis"] == "projected" and any("h100-sxm" in n for n in h200["notes"])
    assert h200["output_tokens_per_s"] > r["output_tokens_per_s"]  # more bandwidth, same software terms, anchored


def test_projection_follows_the_published_trend() -> None:
    a = pj.project_point("arch:qwen3-8b", "h100-sxm", concurrency=24, workload="lm-arena-chat")
    b = pj.project_point("arch:qwen3-8b", "h100-sxm", concurrency=200, workload="lm-arena-chat")
    assert b["output_tokens_per_s"] > a["output_tokens_per_s"] and b["tpot_ms"] > a["tpot_ms"]
    assert b["joules_per_token"] < a["joules_per_token"]  # batching amortises the weights


@pytest.mark.parametrize("kwargs, needle", [
    ({"gpus": 3}, "--gpus must be one of 1, 2, 4, 8"),
    ({"prompt_tokens": 200_000, "output_tokens": 10}, "at most 131,072 tokens"),
    ({"workload": "gpqa", "prompt_tokens": 5, "output_tokens": 5}, "not both"),
    ({"workload": "chat"}, "unknown workload"),
    ({}, "--workload"),
])
def test_bad_projection_requests_are_one_line_errors(kwargs, needle) -> None:
    with pytest.raises(EffbenchError, match=needle):
        pj.project_point("arch:llama-3.1-8b", "h100-sxm", concurrency=8, **kwargs)


def test_devices_and_schemes_the_projection_refuses() -> None:
    with pytest.raises(EffbenchError, match="fp8"):
        pj.project_point("arch:llama-3.1-8b", "a100-80gb", concurrency=8, workload="gpqa", scheme="fp8")
    with pytest.raises(EffbenchError, match="does not fit"):
        pj.project_point("arch:llama-3.1-405b", "h100-sxm", gpus=2, concurrency=8, workload="gpqa")


def test_cli_project_json_is_the_contract() -> None:
    p = effbench("project", "--model", "arch:qwen3-32b", "--hardware", "h200", "--gpus", "2", "--concurrency", "64",
                 "--prompt-tokens", "1000", "--output-tokens", "300", "--scheme", "bf16", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    for key in ("output_tokens_per_s", "joules_per_token", "power_w", "tpot_ms", "memory_gb", "band", "basis", "fitted_on"):
        assert key in d, key
    assert d["basis"] == "projected" and d["gpus"] == 2 and d["band"]["output_tokens_per_s"] > 0 and d["band"]["joules_per_token"] > 0
    assert all(math.isfinite(d[k]) and d[k] > 0 for k in ("output_tokens_per_s", "joules_per_token", "power_w", "tpot_ms", "memory_gb"))
    ref = json.loads(effbench("project", "--model", "arch:llama-3.1-8b", "--hardware", "h100-sxm", "--concurrency", "64",
                              "--workload", "lm-arena-chat", "--json").stdout)
    assert ref["basis"] == "reference" and ref["source"].startswith("ML.ENERGY")
    table = effbench("project", "--model", "arch:gpt-oss-20b", "--hardware", "l40s", "--concurrency", "16", "--workload", "gpqa",
                     "--scheme", "mxfp4")
    assert table.returncode == 0 and "95% band" in table.stdout and "projected" in table.stdout


def test_cli_project_errors_are_one_line() -> None:
    assert_one_line_error(effbench("project", "--model", "arch:nope", "--hardware", "h100-sxm", "--concurrency", "8", "--workload", "gpqa"),
                          "architecture 'nope' not found")
    assert_one_line_error(effbench("project", "--model", "arch:llama-3.1-8b", "--hardware", "h100sxm", "--concurrency", "8",
                                   "--workload", "gpqa"), "did you mean 'h100-sxm'")
    assert_one_line_error(effbench("project", "--model", "arch:llama-3.1-8b", "--hardware", "h100-sxm", "--concurrency", "0",
                                   "--workload", "gpqa"), "--concurrency")
