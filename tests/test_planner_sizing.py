"""Sizing a planner can trust: models nobody ran here (reference data, then the fitted projection),
tensor parallelism, context-aware memory, schemes the device runs, quality, headroom and spares,
prices, and output that fits 100 columns and carries basis and band."""
from __future__ import annotations

import csv
import io
import json
from datetime import date

import pytest
from conftest import assert_one_line_error
from conftest import run_effbench as effbench
from test_planner import (  # noqa: F401  (the autouse test GPUs come with it)
    RUN,
    record,
    request,
    test_gpus,
)

from effbench.analysis.projection import project_point as pj_point
from effbench.errors import EffbenchError
from effbench.hardware import parse_price_options
from effbench.planner import Demand, PlanRequest, parse_redundancy, plan


def arch_plan(model: str, hardware: list[str], demand: Demand = Demand(tokens_per_s=2000), **kw):
    return plan([], PlanRequest(demand, hardware=hardware, model=model, **kw))


# -- headroom, spares, $/1M both ways ------------------------------------------------------------
def test_headroom_and_redundancy_by_hand():
    p = plan([record()], request(Demand(tokens_per_s=1200), max_utilisation=0.8, redundancy=1))
    (o,) = p.options
    assert o.active_replicas == 3 and o.replicas == 4          # ceil(1200 / (500 x 0.8)) + 1 spare
    assert o.utilisation == pytest.approx(0.8)                 # of the active replicas
    assert o.usd_per_hour == pytest.approx(8.0)                # 4 x $2
    assert o.usd_per_million_tokens == pytest.approx(8.0 / (1200 * 3600) * 1e6)               # at the target load
    assert o.usd_per_million_tokens_at_capacity == pytest.approx(2.0 / (500 * 3600) * 1e6)   # one replica fully used
    assert o.kwh_per_month == pytest.approx(4 * 150 * 730 / 1000)


def test_a_tiny_load_still_needs_one_replica():
    p = plan([record()], request(Demand(tokens_per_s=1e-9)))
    (o,) = p.options
    assert o.active_replicas == o.replicas == 1 and 0 < o.utilisation < 1e-9


def test_a_replica_that_cannot_hold_one_sequence_says_what_does_not_fit():
    """The weights alone, or one sequence's KV cache beside them, each against the memory vLLM can use."""
    with pytest.raises(EffbenchError, match=r"its weights need 141\.1 GB of the 75\.3 GB vLLM can use"):
        pj_point("arch:llama-3.1-70b", "h100-sxm", concurrency=1, workload="gpqa")
    with pytest.raises(EffbenchError, match="one sequence's KV cache at 10,000,000 prompt tokens needs"):
        pj_point("arch:llama-4-scout", "b200", gpus=8, concurrency=1, prompt_tokens=10_000_000, output_tokens=1)
    p = arch_plan("arch:llama-3.1-70b", ["h100-sxm"], Demand(tokens_per_s=2000))
    assert any("bf16 on 1x h100-sxm: does not fit (its weights need" in e for e in p.excluded)


@pytest.mark.parametrize("text, k", [("N+1", 1), ("n + 2", 2), ("N", 0), (None, 0)])
def test_parse_redundancy(text, k):
    assert parse_redundancy(text) == k


@pytest.mark.parametrize("kw, needle", [({"max_utilisation": 0}, "--max-utilisation"), ({"max_utilisation": 1.5},
                                                                                        "--max-utilisation"),
                                        ({"redundancy": -1}, "--redundancy")])
def test_bad_headroom(kw, needle):
    with pytest.raises(EffbenchError, match=needle):
        request(Demand(tokens_per_s=1), **kw)
    with pytest.raises(EffbenchError, match="N\\+k"):
        parse_redundancy("2+N")


# -- prices ----------------------------------------------------------------------------------------
def test_stale_prices_are_flagged_and_warned():
    old = plan([record()], request(Demand(tokens_per_s=100), today=date(2026, 12, 1)))  # price_date 2026-01-01
    assert old.options[0].price_stale and any("older than 180 days" in w and "testgpu" in w for w in old.warnings)
    fresh = plan([record()], request(Demand(tokens_per_s=100), today=date(2026, 2, 1)))
    assert not fresh.options[0].price_stale and not fresh.warnings


def test_unknown_price_id_is_an_error_also_without_results():
    with pytest.raises(EffbenchError, match="unknown hardware profile 'nope'"):
        arch_plan("arch:llama-3.1-8b", ["h100-sxm"], prices=parse_price_options(["nope=1"]))


# -- quality -----------------------------------------------------------------------------------------
def test_quality_flagged_schemes_are_excluded_or_marked():
    base = record(quality={"perplexity": 10.0})
    bad = record(config_id="q", quantization={"scheme": "int8-dynamic"}, quality={"perplexity": 36.7})  # +267%, rise not stored
    p = plan([base, bad], request(Demand(tokens_per_s=100)))
    assert [o.scheme for o in p.options] == ["bf16"] and any("perplexity +267%" in e for e in p.excluded)
    shown = plan([base, bad], request(Demand(tokens_per_s=100), show_flagged=True))
    flagged = [o for o in shown.options if o.scheme == "int8-dynamic"]
    assert flagged and "+267%" in flagged[0].quality_flag and any(n.startswith("QUALITY") for n in flagged[0].notes)
    loose = plan([base, bad], request(Demand(tokens_per_s=100), max_ppl_rise=3.0))
    assert {o.scheme for o in loose.options} == {"bf16", "int8-dynamic"}


# -- CPU runs are not projected to GPUs unless asked; schemes the device runs ----------------------
CPU_RECORD = {"hardware": {"profile": "cpu-test", "detected_name": "Test CPU"}, "memory": {"peak_device_bytes": None,
                                                                                           "peak_host_bytes": 2_000_000_000}}


@pytest.fixture
def cpu_profile():
    import yaml

    from effbench.hardware.catalog import user_dir

    (user_dir() / "cpu-test.yaml").write_text(yaml.safe_dump({"id": "cpu-test", "name": "Test CPU", "vendor": "t", "kind": "cpu",
                                                              "memory_gb": 64, "memory_bandwidth_gbps": 50, "tdp_w": 100}))


def test_cpu_runs_reach_gpus_only_with_project_from_cpu(cpu_profile):
    recs = [record(**CPU_RECORD), record(config_id="i8", quantization={"scheme": "int8-dynamic"}, **CPU_RECORD)]
    off = plan(recs, request(Demand(tokens_per_s=100), hardware=["cpu-test", "testgpu"]))
    assert {o.hardware for o in off.options} == {"cpu-test"} and any("--project-from-cpu" in w for w in off.warnings)
    on = plan(recs, request(Demand(tokens_per_s=100), hardware=["cpu-test", "testgpu"], project_from_cpu=True))
    gpu = [o for o in on.options if o.hardware == "testgpu"]
    assert gpu and all(o.basis == "projected" and o.band and o.band["output_tokens_per_s"] >= 9 for o in gpu)
    assert {o.scheme for o in gpu} == {"bf16"}  # int8-dynamic is a CPU-only scheme (the quantization registry)
    assert any("int8-dynamic" in e and "CPU only" in e for e in on.excluded)


# -- models nobody measured: reference first, then the fitted projection -----------------------------
def test_arch_plan_without_results_uses_reference_then_projection():
    p = arch_plan("arch:llama-3.1-8b", ["h100-sxm", "h200"], max_tpot_ms=50)
    bases = {(o.hardware, o.basis) for o in p.options}
    assert ("h100-sxm", "reference") in bases and ("h200", "projected") in bases
    ref = next(o for o in p.options if o.basis == "reference")
    assert ref.source and "Chung" in ref.source and ref.band is None and ref.tpot_ms <= 50
    proj = next(o for o in p.options if o.basis == "projected")
    assert proj.band["confidence"] == 0.95 and proj.band["output_tokens_per_s"] > 0 and proj.tpot_ms <= 50
    assert all(o.model == "arch:llama-3.1-8b" for o in p.options)


def test_70b_is_offered_on_several_gpus_as_replicas_x_gpus_per_replica():
    p = arch_plan("arch:llama-3.1-70b", ["h100-sxm"], Demand(tokens_per_s=2000))
    combos = {(o.gpus_per_replica, o.scheme) for o in p.options}
    assert (2, "fp8") in combos and (4, "bf16") in combos
    assert (1, "bf16") not in combos and any("bf16 on 1x h100-sxm: does not fit" in e for e in p.excluded)
    two = next(o for o in p.options if (o.gpus_per_replica, o.scheme) == (2, "fp8"))
    assert two.price_per_hour_usd == pytest.approx(2 * 2.69) and two.memory_gb == 160


def test_arch_plan_projects_one_grid_and_shows_the_kv_limited_concurrency(monkeypatch):
    import effbench.analysis.projection as pj

    calls = []
    real = pj.project_grid
    monkeypatch.setattr(pj, "project_grid", lambda *a, **k: calls.append(k) or real(*a, **k))
    monkeypatch.setattr(pj, "project_point", lambda *a, **k: pytest.fail("the planner projects a grid, not point by point"))
    p = arch_plan("arch:llama-3.1-70b", ["h100-sxm", "h200"], Demand(tokens_per_s=2000), max_tpot_ms=50)
    assert len(calls) == 1 and calls[0]["kv_limited"]
    proj = [o for o in p.options if o.basis == "projected"]
    assert proj and all(o.kv_max_concurrency and o.batch_size <= o.kv_max_concurrency for o in proj)
    assert all(o.tpot_ms <= 50 for o in proj)  # the predicted p95, not the median
    assert all(any("TPOT = projected p95" in n for n in o.notes) for o in proj)


def test_a_model_shipped_in_mxfp4_is_sized_in_it_too():
    p = arch_plan("arch:gpt-oss-20b", ["h100-sxm"], Demand(tokens_per_s=2000))
    assert {"bf16", "fp8", "mxfp4"} <= {o.scheme for o in p.options}
    assert all(o.scheme != "mxfp4" for o in arch_plan("arch:qwen3-8b", ["h100-sxm"], Demand(tokens_per_s=500)).options)


def test_a_config_json_is_sized_like_the_shipped_architecture_it_copies(tmp_path):
    """``--model arch:PATH`` (a Hugging Face config.json, as ``effbench project`` takes it) is sized on GPUs
    like a shipped architecture: the same projected throughput per option (the projection reads shapes, not
    names)."""
    from effbench.models.arch import config_dict

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text(json.dumps(config_dict("arch:qwen3-8b")))
    mine = arch_plan(f"arch:{tmp_path / 'mine'}", ["h200"], Demand(tokens_per_s=500))
    shipped = arch_plan("arch:qwen3-8b", ["h200"], Demand(tokens_per_s=500))
    key = lambda o: (o.gpus_per_replica, o.scheme, o.batch_size)  # noqa: E731
    ours = {key(o): o.capacity_tokens_per_s for o in mine.options}
    # within 1%: only the output length differs (qwen3-8b's own published chat length vs the models' median)
    assert ours and ours == pytest.approx({key(o): o.capacity_tokens_per_s for o in shipped.options}, rel=0.01)
    assert all(o.basis == "projected" and o.band for o in mine.options)
    with pytest.raises(EffbenchError, match="lacks 'hidden_size'"):
        (tmp_path / "bad.json").write_text(json.dumps({"model_type": "llama"}))
        arch_plan(f"arch:{tmp_path / 'bad.json'}", ["h200"], Demand(tokens_per_s=500))


def test_only_schemes_the_gpu_runs():
    p = arch_plan("arch:qwen3-8b", ["a100-80gb", "t4"], Demand(tokens_per_s=500))
    assert {o.scheme for o in p.options if o.hardware == "a100-80gb"} == {"bf16"}  # no fp8 tensor cores
    assert {o.scheme for o in p.options if o.hardware == "t4"} <= {"fp16"}  # no bf16 on Turing


# -- context ------------------------------------------------------------------------------------------
def test_lengths_beyond_the_models_context_are_refused():
    with pytest.raises(EffbenchError, match="at most 131,072 tokens"):
        arch_plan("arch:llama-3.1-8b", ["h100-sxm"], Demand(requests_per_s=1, prompt_tokens=200_000, output_tokens=100_000))


def test_memory_holds_the_kv_cache_of_the_asked_lengths():
    # measured at 100+50 tokens, batch 4, 1e5 B/token; asked 10,000+2,000: 4 x (12,000 - 150) x 1e5 = 4.74 GB more
    r = record()
    p = plan([r], request(Demand(requests_per_s=0.1, prompt_tokens=10_000, output_tokens=2_000)))
    (o,) = p.options
    assert o.peak_memory_gb == pytest.approx(2.0 + 4 * 11_850 * 1e5 / 1e9)
    too_long = plan([r], request(Demand(requests_per_s=0.1, prompt_tokens=30_000, output_tokens=2_000)))
    assert not too_long.options and "KV cache at 30000+2000 tokens" in too_long.excluded[0]


def test_largest_concurrency_that_fits_bounds_projected_options():
    long = arch_plan("arch:llama-3.1-8b", ["l40s"], Demand(requests_per_s=0.05, prompt_tokens=60_000, output_tokens=4_000))
    for o in long.options:
        assert o.peak_memory_gb <= o.memory_gb and o.memory_headroom_gb >= 0


# -- output ---------------------------------------------------------------------------------------------
def test_table_fits_100_columns_with_whole_headers():
    from rich.console import Console

    from effbench.cli.plan import _table

    p = arch_plan("arch:llama-3.1-8b", ["h100-sxm", "l40s", "rtx-6000-ada"], redundancy=1)
    buf = io.StringIO()
    Console(file=buf, width=100, color_system=None).print(_table(p, 30))
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 100 and "…" not in text
    for header in ("hardware", "basis", "scheme", "conc", "/replica", "band", "repl", "p95 ms", "$/month", "at cap.",
                   "at target"):
        assert header in text


def test_json_and_csv_carry_basis_band_and_both_costs():
    from effbench.cli.plan import _csv

    p = arch_plan("arch:qwen3-8b", ["h100-sxm", "h200"])
    d = p.to_dict()
    proj = [o for o in d["options"] if o["basis"] == "projected"]
    assert proj and all(o["band"]["output_tokens_per_s"] > 0 and o["band"]["joules_per_token"] > 0 for o in proj)
    assert all(o["usd_per_million_tokens_at_capacity"] <= o["usd_per_million_tokens"] for o in d["options"])
    rows = list(csv.DictReader(io.StringIO(_csv(p))))
    assert {"basis", "band_tokens_per_s", "band_joules_per_token", "usd_per_million_tokens_at_capacity", "gpus_per_replica",
            "price_stale", "source"} <= set(rows[0])
    assert {r["basis"] for r in rows} <= {"reference", "projected"}


def test_cli_plan_for_an_architecture_without_results():
    p = effbench("plan", "--model", "arch:llama-3.1-8b", "--target-tokens-per-s", "2000", "--max-tpot-ms", "50",
                 "--hardware", "h100-sxm,h200,a100-80gb,l40s", "--redundancy", "N+1", "--json", timeout=300)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert {o["basis"] for o in d["options"]} == {"reference", "projected"} and d["redundancy"] == 1
    assert all(o["replicas"] == o["active_replicas"] + 1 for o in d["options"])
    table = effbench("plan", "--model", "arch:llama-3.1-8b", "--target-tokens-per-s", "2000", "--hardware", "h100-sxm",
                     timeout=300)
    assert table.returncode == 0 and "ref" in table.stdout and "older than 180 days" in table.stderr


@pytest.mark.parametrize("args, needle", [
    (["--target-tokens-per-s", "10"], "--model arch:NAME"),
    (["--target-tokens-per-s", "10", "--model", "arch:nope"], "architecture 'nope' not found"),
    (["--target-tokens-per-s", "10", "--model", "arch:llama-3.1-8b", "--workload", "chat"], "unknown workload 'chat'"),
    (["--target-tokens-per-s", "10", "--model", "arch:llama-3.1-8b", "--redundancy", "2"], "N+k"),
    (["--target-tokens-per-s", "10", "--model", "arch:llama-3.1-8b", "--max-utilisation", "0"], "--max-utilisation"),
    (["--target-requests-per-s", "1", "--prompt-tokens", "200000", "--output-tokens", "100000", "--model", "arch:llama-3.1-8b"],
     "at most 131,072 tokens"),
    (["--target-tokens-per-s", "10", "--model", "arch:llama-3.1-8b", "--price", "h100=2"], "unknown hardware profile 'h100'"),
])
def test_cli_plan_errors_are_one_line(args, needle):
    assert_one_line_error(effbench("plan", *args, timeout=300), needle)


def test_cli_plan_refuses_a_bundled_model_beyond_its_context():
    assert_one_line_error(effbench("plan", "--results", str(RUN), "--target-requests-per-s", "1", "--prompt-tokens", "200000",
                                   "--output-tokens", "100000"), "smollm2-135m supports at most 8,192 tokens")


def test_an_architecture_plan_imports_no_heavy_library():
    """``plan --model arch:NAME`` projects its grid from the shipped fit: no numpy, scipy or torch (what
    keeps a full 70B plan to about a second on a 2-core machine)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        from effbench.cli import main
        try:
            main(["plan", "--model", "arch:llama-3.1-70b", "--target-tokens-per-s", "5000", "--max-tpot-ms", "50", "--json"])
        except SystemExit as e:
            assert not e.code, e.code
        heavy = sorted({m.split(".")[0] for m in sys.modules} & {"numpy", "scipy", "torch", "transformers", "matplotlib"})
        sys.stderr.write("HEAVY:" + ",".join(heavy) + "\\n")
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "HEAVY:\n" in p.stderr, p.stderr[-2000:]
    assert json.loads(p.stdout)["options"]
