"""The architecture catalogue additions: 70B-class and MoE models with their active parameters, max
context and the shapes sizing uses; and the hardware profiles the reference data and the Korean and
Japanese clouds need."""
from __future__ import annotations

import json

import pytest
from conftest import run_effbench as effbench

from effbench.hardware import profiles
from effbench.models import arch, stepshape

REQUIRED = {"qwen3-8b", "qwen3-14b", "qwen3-32b", "gemma-3-12b", "gemma-3-27b", "llama-3.1-70b", "llama-3.3-70b", "qwen2.5-72b",
            "llama-3.1-405b", "exaone-4.0-32b", "qwen3-30b-a3b", "gpt-oss-20b", "gpt-oss-120b"}


def test_catalogue_has_the_sizing_models_with_their_sources():
    cat = arch.catalog()
    assert REQUIRED <= set(cat)
    raw = json.loads(arch._data_dir().joinpath(arch.CATALOG_FILE).read_text())
    for name in REQUIRED:
        assert raw[name]["config_source"].startswith("config.json values from huggingface.co/") and cat[name].stated_source


@pytest.mark.parametrize("name", ["qwen3-30b-a3b", "gpt-oss-20b", "gpt-oss-120b", "qwen3-235b-a22b", "qwen3-coder-480b-a35b",
                                  "deepseek-v3", "llama-4-scout", "llama-4-maverick"])
def test_moe_active_parameters_match_the_model_card(name):
    """Dense-first (DeepSeek-V3) and interleaved (Llama 4 Maverick) MoE layers included."""
    summary = arch.summarize(f"arch:{name}")
    assert summary.active_params is not None and summary.stated_active_params
    assert abs(summary.active_params / summary.stated_active_params - 1) < 0.03, (name, summary.active_params)
    assert summary.active_params < summary.params.total / 5  # a mixture of experts uses a small share per token


@pytest.mark.parametrize("name", ["nemotron-nano-9b-v2", "nemotron-nano-12b-v2", "llama-3.1-70b"])
def test_models_without_experts_use_every_parameter(name):
    assert arch.summarize(f"arch:{name}").active_params is None


def test_dense_models_use_every_parameter_and_state_their_context():
    s = stepshape.shipped("llama-3.1-70b")
    assert s.active_params == s.total_params - s.embedding_params and s.experts == 0 and s.layers == 80
    assert s.max_context == 131_072
    assert s.kv_bytes(1) == 2 * 80 * 8 * 128 * 2  # K and V, layers, KV heads, head dim, bf16
    assert arch.summarize("arch:llama-3.1-70b").kv_bytes_per_token_bf16 == 2 * 80 * 8 * 128 * 2


def test_kv_per_token_counts_only_what_the_cache_holds():
    """Nemotron-H caches K and V in its 4 attention layers only; DeepSeek-V3 caches MLA's 576-wide latent."""
    assert arch.summarize("arch:nemotron-nano-9b-v2").kv_bytes_per_token_bf16 == 4 * 2 * 8 * 128 * 2
    assert arch.summarize("arch:deepseek-v3").kv_bytes_per_token_bf16 == 61 * (512 + 64) * 2


def test_sliding_window_kv_for_gpt_oss():
    s = stepshape.shipped("gpt-oss-20b")
    per = 2 * 8 * 64 * 2
    assert s.kv_bytes(1000) == pytest.approx(12 * per * 1000 + 12 * per * 128)  # half the layers keep 128 tokens


def test_models_command_shows_active_params_and_context():
    p = effbench("models", "--json", timeout=300)
    assert p.returncode == 0, p.stderr
    rows = {a["name"]: a for a in json.loads(p.stdout)["architectures"]}
    assert rows["gpt-oss-120b"]["active_params"] == pytest.approx(5.13e9, rel=0.01)
    assert rows["llama-3.1-405b"]["max_context_tokens"] == 131_072 and rows["qwen3-8b"]["max_context_tokens"] == 40_960


def test_new_hardware_profiles_and_interconnects():
    by_id = {p.id: p for p in profiles()}
    assert {"b200", "v100-32gb", "rtx-6000-ada", "a30", "h100-nvl"} <= set(by_id)
    b200 = by_id["b200"]
    assert b200.memory_gb == 180 and b200.peak_tflops.fp8 == 2 * b200.peak_tflops.bf16 and b200.tdp_w == 1000
    assert all(p.interconnect_gbps for p in by_id.values()
               if p.kind == "gpu" and p.origin.endswith(".yaml") and "hardware" in p.origin)
    assert by_id["h100-sxm"].interconnect_gbps > 5 * by_id["h100-pcie"].interconnect_gbps  # NVLink vs PCIe
    assert by_id["v100-32gb"].peak_tflops.bf16 is None  # Volta has no bf16


@pytest.mark.parametrize("name, expected", [("nemotron-nano-9b-v2", 4 * 2 * 8 * 128 * 2), ("llama-3.1-8b", 32 * 2 * 8 * 128 * 2)])
def test_backends_kv_per_token_skips_mamba_layers(name, expected):
    """What the transformers and vLLM backends record (and the memory check sizes by): K and V of the
    attention layers only."""
    from effbench.models.kv import kv_bytes_per_token

    assert kv_bytes_per_token(arch.load_config(f"arch:{name}"), 2) == expected
