"""Hardware profiles: the shipped set validates, user profiles and prices override, broken files
give one clear error naming file and key, detection matches real device names."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import assert_one_line_error
from conftest import run_effbench as effbench

import effbench.hardware.cpu as cpu_mod
from effbench.errors import EffbenchError
from effbench.hardware import (
    Detected,
    get_profile,
    load_profile_file,
    match_profile,
    parse_price_options,
    profile_for,
    profiles,
    resolve_profile_id,
)
from effbench.hardware.catalog import shipped_dir, user_dir

SHIPPED = {"h100-sxm", "h100-pcie", "h200", "a100-40gb", "a100-80gb", "l40s", "l4", "a10g", "t4", "rtx-4090", "mi300x",
           "b200", "v100-32gb", "rtx-6000-ada", "a30", "h100-nvl"}

TEST_GPU = {
    "id": "testgpu", "name": "Test GPU", "vendor": "test", "kind": "gpu", "memory_gb": 10,
    "memory_bandwidth_gbps": 1000, "peak_tflops": {"bf16": 100}, "tdp_w": 200, "match": ["^Test GPU$"],
    "price_per_hour_usd": 2.0, "price_source": "test", "price_date": "2026-01-01",
}


def write_user_profile(data: dict, name: str = "testgpu.yaml") -> Path:
    user_dir().mkdir(parents=True, exist_ok=True)
    path = user_dir() / name
    path.write_text(yaml.safe_dump(data) if isinstance(data, dict) else data)
    return path






# -- the shipped set -----------------------------------------------------------------------------
def test_every_shipped_profile_loads_with_the_contract_fields():
    files = sorted(shipped_dir().glob("*.yaml"))
    assert {f.stem for f in files} == SHIPPED
    for f in files:
        p = load_profile_file(f)
        assert p.id == f.stem, f
        assert p.kind == "gpu" and p.memory_gb > 0 and p.memory_bandwidth_gbps > 0 and p.tdp_w
        text = f.read_text()
        assert p.peak_tflops.fp32 and p.peak_tflops.fp16 and (p.peak_tflops.int8 or "no bf16, fp8 or int8" in text), f
        assert p.match and p.interconnect and p.interconnect_gbps, f
        # a price with its source and date, or a file that says none was recorded (never a made-up figure)
        assert (p.price_per_hour_usd and p.price_source and p.price_date) or "No list price recorded" in text, f
        assert "sparsity" in text.lower(), f"{f}: say whether sparsity is excluded"


def test_profiles_api_lists_the_shipped_set():
    assert {p.id for p in profiles()} == SHIPPED


@pytest.mark.parametrize("name, expected", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("NVIDIA H100 PCIe", "h100-pcie"), ("NVIDIA H200", "h200"),
    ("NVIDIA A100-SXM4-40GB", "a100-40gb"), ("NVIDIA A100-PCIE-40GB", "a100-40gb"),
    ("NVIDIA A100-SXM4-80GB", "a100-80gb"), ("NVIDIA A100 80GB PCIe", "a100-80gb"),
    ("NVIDIA L40S", "l40s"), ("NVIDIA L4", "l4"), ("NVIDIA A10G", "a10g"), ("Tesla T4", "t4"),
    ("NVIDIA GeForce RTX 4090", "rtx-4090"), ("AMD Instinct MI300X", "mi300x"),
    ("NVIDIA L40", None), ("NVIDIA A10", None), ("AMD EPYC 7B13", None),
])
def test_detection_matches_device_names(name, expected):
    p = match_profile(name)
    assert (p.id if p else None) == expected


def test_a_user_profile_can_be_more_specific_than_a_shipped_one():
    write_user_profile({**TEST_GPU, "id": "h100-sxm-custom", "match": ["NVIDIA H100 80GB HBM3"]}, "custom.yaml")
    assert match_profile("NVIDIA H100 80GB HBM3").id == "h100-sxm-custom"


# -- user profiles and validation ----------------------------------------------------------------
def test_user_profile_is_listed_and_replaces_a_shipped_one():
    write_user_profile(TEST_GPU)
    write_user_profile({**TEST_GPU, "id": "l4", "price_per_hour_usd": 0.1}, "l4.yaml")
    by_id = {p.id: p for p in profiles()}
    assert by_id["testgpu"].memory_bandwidth_gbps == 1000
    assert by_id["l4"].price_per_hour_usd == 0.1


@pytest.mark.parametrize("change, needles", [
    ({"memory_gb": "lots"}, ["memory_gb"]),
    ({"memory_bandwidth_gbps": -5}, ["memory_bandwidth_gbps"]),
    ({"kind": "tpu"}, ["kind"]),
    ({"peak_tflops": {"bf16": 100, "fp4": 9}}, ["peak_tflops.fp4", "unknown key"]),
    ({"colour": "green"}, ["colour", "unknown key"]),
    ({"match": ["H100("]}, ["match", "regular expression"]),
    ({"price_date": "last week"}, ["price_date"]),
    ({"id": "Has Spaces"}, ["id"]),
    ({"memory_bandwidth_gbps": float("inf")}, ["memory_bandwidth_gbps", "finite"]),
    ({"tdp_w": float("nan")}, ["tdp_w", "finite"]),
])
def test_broken_user_profile_names_file_and_key(change, needles):
    path = write_user_profile({**TEST_GPU, **change})
    with pytest.raises(EffbenchError) as e:
        profiles()
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    for n in needles:
        assert n in msg


def test_missing_key_and_bad_yaml_are_clear():
    data = dict(TEST_GPU)
    del data["memory_bandwidth_gbps"]
    write_user_profile(data)
    with pytest.raises(EffbenchError, match="memory_bandwidth_gbps': required key is missing"):
        profiles()
    write_user_profile("id: x\nname: [unclosed\n")
    with pytest.raises(EffbenchError, match="not valid YAML at line"):
        profiles()
    write_user_profile("- a list\n")
    with pytest.raises(EffbenchError, match="must be a YAML mapping"):
        profiles()


# -- look-up, resolution, prices -----------------------------------------------------------------
def test_unknown_id_suggests_the_closest():
    with pytest.raises(EffbenchError, match="unknown hardware profile 'h100sxm'; did you mean 'h100-sxm'"):
        get_profile("h100sxm")
    with pytest.raises(EffbenchError, match="did you mean 'h100-sxm'"):
        resolve_profile_id("h100sxm", Detected("x", "gpu", None))


def test_resolve_profile_id(tmp_path):
    assert resolve_profile_id(None, Detected("NVIDIA L4", "gpu", "l4")) == "l4"
    assert resolve_profile_id("t4", Detected("NVIDIA L4", "gpu", "l4")) == "t4"
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({**TEST_GPU, "id": "my-gpu"}))
    assert resolve_profile_id(str(path), Detected("x", "gpu", None)) == "my-gpu"
    assert get_profile("my-gpu").memory_gb == 10  # registered for later look-ups in this process
    with pytest.raises(EffbenchError, match="does not exist"):
        resolve_profile_id(str(tmp_path / "nope.yaml"), Detected("x", "gpu", None))


def test_price_file_and_command_line_override(monkeypatch, tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text("h100-sxm: 1.5\nl4: {price_per_hour_usd: 0.3, price_source: my contract, price_date: 2026-02-01}\n")
    monkeypatch.setenv("EFFBENCH_PRICES", str(prices))
    by_id = {p.id: p for p in profiles()}
    assert by_id["h100-sxm"].price_per_hour_usd == 1.5 and "price file" in by_id["h100-sxm"].price_source
    assert by_id["l4"].price_source == "my contract" and by_id["l4"].price_date == "2026-02-01"
    cli = parse_price_options(["h100-sxm=2.25,t4=0.2"])
    by_id = {p.id: p for p in profiles(cli)}
    assert by_id["h100-sxm"].price_per_hour_usd == 2.25 and by_id["t4"].price_per_hour_usd == 0.2
    assert by_id["h100-sxm"].price_source == "command line (--price)"
    for bad in ("h100-sxm", "h100-sxm=cheap", "h100-sxm=-1", "=2", "h100-sxm=nan", "h100-sxm=inf", "h100-sxm=-inf"):
        with pytest.raises(EffbenchError, match="--price"):
            parse_price_options([bad])


# -- CPU by detection ----------------------------------------------------------------------------
@pytest.fixture
def fake_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("EFFBENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cpu_mod, "LOCK_FILE", str(tmp_path / "cpu.lock"))
    monkeypatch.setattr(cpu_mod, "cpu_name", lambda: "Test CPU 9000 (R)")
    monkeypatch.setattr("effbench.hardware.detection.cpu_name", lambda: "Test CPU 9000 (R)")
    calls = []
    monkeypatch.setattr(cpu_mod, "measure_bandwidth_gbps", lambda: calls.append(1) or 12.5)
    return calls


def test_cpu_profile_is_detected_measured_once_and_cached(fake_cpu):
    from effbench.hardware import detect, local_cpu_profile

    d = detect("cpu")
    assert d == Detected("Test CPU 9000 (R)", "cpu", "cpu-test-cpu-9000")
    assert local_cpu_profile(measure=False) is None  # never measures unless allowed
    p = get_profile("cpu-test-cpu-9000")
    assert p.kind == "cpu" and p.memory_bandwidth_gbps == 12.5 and p.cores and "measured" in p.bandwidth_source
    get_profile("cpu-test-cpu-9000")
    assert len(fake_cpu) == 1  # cached per machine
    assert profile_for(None, "Test CPU 9000 (R)").id == "cpu-test-cpu-9000"
    assert get_profile("cpu-test-cpu-9000", parse_price_options(["cpu-test-cpu-9000=0.1"])).price_per_hour_usd == 0.1


def test_cpu_figure_taken_without_the_lock_is_remeasured_when_free(fake_cpu, monkeypatch):
    import contextlib

    monkeypatch.setattr(cpu_mod, "_cpu_lock", lambda wait_s: contextlib.nullcontext(False))
    assert cpu_mod.cached_bandwidth("Test CPU 9000 (R)")["locked"] is False
    assert cpu_mod.cached_bandwidth("Test CPU 9000 (R)")["locked"] is False and len(fake_cpu) == 1  # still busy: kept
    monkeypatch.setattr(cpu_mod, "_cpu_lock", lambda wait_s: contextlib.nullcontext(True))
    assert cpu_mod.cached_bandwidth("Test CPU 9000 (R)")["locked"] is True and len(fake_cpu) == 2


class ScriptedTimer:
    """``time`` for cpu.py whose ``perf_counter`` makes the n-th timed operation take ``durations[n]`` s."""

    def __init__(self, durations: list[float]) -> None:
        self.durations = list(durations)
        self.now = 0.0
        self.started = False

    def perf_counter(self) -> float:
        if self.started:  # the end of an operation
            self.now += self.durations.pop(0)
        self.started = not self.started
        return self.now


def test_bandwidth_counts_bytes_moved_and_keeps_the_best_round(monkeypatch):
    monkeypatch.setattr(cpu_mod, "ARRAY_BYTES", 8 * 1024)  # 1024 float64 per array: nothing to measure for real
    monkeypatch.setattr(cpu_mod, "ROUNDS", 2)
    nbytes = 8 * 1024
    # round 1: copy 4 us, triad 20 us; round 2: copy 2 us (the best: 2 arrays moved), triad 12 us
    timer = ScriptedTimer([4e-6, 20e-6, 2e-6, 12e-6])
    monkeypatch.setattr(cpu_mod, "time", timer)
    gbps = cpu_mod.measure_bandwidth_gbps()
    assert gbps == pytest.approx(2 * nbytes / 2e-6 / 1e9)  # 8.192 GB/s, not 5 x 8 KiB / 12 us = 3.41
    assert timer.durations == []  # exactly two timed operations per round
    monkeypatch.setattr(cpu_mod, "time", ScriptedTimer([4e-6, 8e-6, 4e-6, 8e-6]))
    assert cpu_mod.measure_bandwidth_gbps() == pytest.approx(5 * nbytes / 8e-6 / 1e9)  # triad moves 5 arrays: beats the copy


@pytest.mark.slow
def test_real_bandwidth_measurement_is_plausible(monkeypatch, tmp_path):
    gbps = cpu_mod.measure_bandwidth_gbps()  # the real thing: 128 MiB arrays, best of 5
    assert 0.5 < gbps < 2000


# -- CLI -----------------------------------------------------------------------------------------
def test_cli_list_and_show_json():
    import json

    p = effbench("hardware", "list", "--json")
    assert p.returncode == 0, p.stderr
    assert {d["id"] for d in json.loads(p.stdout)} == SHIPPED
    p = effbench("hardware", "show", str(shipped_dir() / "t4.yaml"), "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["id"] == "t4"


def test_cli_errors_are_one_line(tmp_path):
    assert_one_line_error(effbench("hardware", "show", "h100sxm"), "unknown hardware profile 'h100sxm'",
                          "did you mean 'h100-sxm'")
    assert_one_line_error(effbench("hardware", "show", str(tmp_path / "x.yaml")), "does not exist")
    write_user_profile({**TEST_GPU, "memory_gb": "lots"})
    assert_one_line_error(effbench("hardware", "list"), "testgpu.yaml", "memory_gb")
    assert_one_line_error(effbench("hardware", "list", "--price", "t4=free"), "--price 't4=free'")


def test_price_must_be_finite_everywhere(monkeypatch, tmp_path):
    assert_one_line_error(effbench("hardware", "list", "--price", "h100-sxm=nan"), "--price 'h100-sxm=nan'", "finite")
    assert_one_line_error(effbench("hardware", "list", "--price", "h100-sxm=inf"), "--price 'h100-sxm=inf'")
    prices = tmp_path / "prices.yaml"
    prices.write_text("h100-sxm: .inf\n")
    monkeypatch.setenv("EFFBENCH_PRICES", str(prices))
    with pytest.raises(EffbenchError, match="h100-sxm"):
        profiles()


def test_devices_are_checked_and_missing_cuda_is_one_line(monkeypatch):
    from effbench.hardware.detection import check_device, detect

    for good in ("auto", "cpu", "cuda", "cuda:1"):
        assert check_device(good) == good
    for bad in ("bogus", "cuda:", "cuda:x", "gpu"):
        with pytest.raises(EffbenchError, match="auto, cpu, cuda or cuda:N"):
            detect(bad)
    assert_one_line_error(effbench("hardware", "detect", "--device", "bogus"), "'bogus' is not a device")
    assert_one_line_error(effbench("sensors", "--device", "bogus"), "'bogus' is not a device")
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EffbenchError, match="no CUDA device here.*use --device cpu"):
        detect("cuda")
    monkeypatch.undo()
    if not torch.cuda.is_available():  # the real thing, on a machine without CUDA
        assert_one_line_error(effbench("hardware", "detect", "--device", "cuda"), "no CUDA device here", "--device cpu")
