"""Decode roofline: hand-computed bounds and achieved fractions."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from effbench.analysis.roofline import achieved_fraction, decode_bound_tokens_per_s, kv_bytes_per_step
from effbench.hardware import HardwareProfile, get_profile
from effbench.results.schema import Record
from effbench.results.store import read_run_dir

DATA = Path(__file__).parent / "data"

BASE: dict[str, Any] = {
    "run_id": "r", "config_id": "c",
    "model": {"id": "m", "weights_bytes": 1_000_000_000},
    "backend": {"name": "transformers"},
    "quantization": {"scheme": "bf16"},
    "workload": {"batch_size": 4, "prompt_tokens": 100, "new_tokens": 50, "prompt_set": "en"},
    "throughput": {"decode_tokens_per_s": 1904.7619047619048},
    "memory": {"weights_bytes": 1_000_000_000, "kv_bytes_per_token": 100_000},
    "hardware": {"profile": "testgpu"},
}

PROFILE = HardwareProfile(id="testgpu", name="Test GPU", vendor="test", kind="gpu", memory_gb=10,
                          memory_bandwidth_gbps=1000, tdp_w=200)


def record(**sections: dict) -> Record:
    d = copy.deepcopy(BASE)
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return Record.model_validate(d)


def test_bound_by_hand():
    r = record()
    # mean context 100 + 50/2 = 125; KV per step 4 x 100,000 x 125 = 5e7 bytes; step = 1.05e9 bytes
    assert kv_bytes_per_step(r) == 5e7
    assert decode_bound_tokens_per_s(r, PROFILE) == pytest.approx(4 * 1e12 / 1.05e9)
    assert achieved_fraction(r, PROFILE) == pytest.approx(0.5)


def test_missing_kv_means_weights_only_bound():
    r = record(memory={"kv_bytes_per_token": None})
    assert decode_bound_tokens_per_s(r, PROFILE) == pytest.approx(4 * 1e12 / 1e9)


def test_unknown_inputs_give_none():
    no_weights = record(model={"id": "m", "weights_bytes": None}, memory={"weights_bytes": None})
    assert decode_bound_tokens_per_s(no_weights, PROFILE) is None
    assert achieved_fraction(record(throughput={"decode_tokens_per_s": None}), PROFILE) is None
    assert achieved_fraction(record(hardware={"profile": "no-such-gpu", "detected_name": "Nothing"})) is None
    assert achieved_fraction(record(error="out of memory"), PROFILE) is None


def test_profile_by_id_and_from_record():
    r = record(hardware={"profile": "h100-sxm"})
    h100 = get_profile("h100-sxm")
    assert decode_bound_tokens_per_s(r, "h100-sxm") == pytest.approx(4 * 3350e9 / 1.05e9)
    assert decode_bound_tokens_per_s(r) == decode_bound_tokens_per_s(r, h100)


def test_real_cpu_run_fraction_is_plausible():
    _, records = read_run_dir(DATA / "r1_cpu_fp32")
    cpu = PROFILE.model_copy(update={"id": "cpu", "kind": "cpu", "memory_bandwidth_gbps": 30.0})
    for r in records:
        frac = achieved_fraction(r, cpu)
        assert frac is not None and 0 < frac < 1
    # a larger batch reads the weights once for more tokens: the bound grows with batch
    bounds = [decode_bound_tokens_per_s(r, cpu) for r in records]
    assert bounds == sorted(bounds)
