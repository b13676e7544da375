"""Sweeps end to end on a fake backend: one record per configuration, resume, OOM, unsupported
schemes and interruption (in-process and SIGKILL) lose no finished record and duplicate none."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import FAST, FakeBackend
from conftest import tiny_config as config

from effbench.errors import EffbenchError
from effbench.results.store import RunStore
from effbench.sweep import SweepObserver, run_sweep

TESTS_DIR = Path(__file__).parent


@pytest.fixture
def fake(stand_in):
    """``fake(**kw)``: the fake backend, with ``kw`` (e.g. oom_at_batch), stands in for transformers."""
    return lambda **kw: stand_in(lambda: FakeBackend(timing=FAST, **kw))


def test_one_record_per_configuration_with_contract_fields(tmp_path, model_dir, fake, monkeypatch):
    import psutil

    fake()
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 7 if logical else 3)  # what this "machine" reports
    run = run_sweep(config(model_dir, tmp_path / "run", quant=["fp32", "bf16"], prompts=["en", "ko"]))
    assert len(run.records) == 2 * 2 * 2
    assert len({r.config_id for r in run.records}) == 8
    r = run.records[0]
    assert r.throughput.decode_tokens_per_s > 0 and r.throughput.ttft_s > 0
    assert r.energy.status == "unavailable" and r.stats.repeats == 2
    assert r.memory.peak_host_bytes > 0 and r.quality.perplexity == 12.5
    meta = json.loads((run.path / "run.json").read_text())
    assert meta["run_id"] == run.run_id and meta["config"]["batch_sizes"] == [1, 2]
    assert meta["environment"]["packages"]
    assert (meta["environment"]["cpu"]["logical_cpus"], meta["environment"]["cpu"]["physical_cores"]) == (7, 3)
    assert meta["sessions"][-1]["status"] == "complete"


def test_existing_run_dir_needs_resume(tmp_path, model_dir, fake):
    fake()
    cfg = config(model_dir, tmp_path / "run")
    run_sweep(cfg)
    with pytest.raises(EffbenchError, match="--resume"):
        run_sweep(cfg)


def test_resume_skips_finished_configurations(tmp_path, model_dir, fake):
    made = fake()
    run_sweep(config(model_dir, tmp_path / "run", batch_sizes=[1, 2]))
    run = run_sweep(config(model_dir, tmp_path / "run", batch_sizes=[1, 2, 3], resume=True))
    assert sorted(r.workload.batch_size for r in run.records) == [1, 2, 3]
    assert made[-1].calls["generate"] == 2  # only batch 3 was measured the second time
    meta = json.loads((run.path / "run.json").read_text())
    assert len(meta["sessions"]) == 2 and meta["sessions"][1]["resumed"]


def test_oom_records_the_error_and_skips_larger_batches(tmp_path, model_dir, fake):
    fake(oom_at_batch=4)
    run = run_sweep(config(model_dir, tmp_path / "run", batch_sizes=[1, 2, 4, 8]))
    by_batch = {r.workload.batch_size: r for r in run.records}
    assert by_batch[1].error is None and by_batch[2].error is None
    assert by_batch[4].error.startswith("out of memory")
    assert by_batch[8].error == "skipped: batch size 4 ran out of memory"


def test_unsupported_scheme_is_recorded_and_the_sweep_goes_on(tmp_path, model_dir, fake):
    fake()
    run = run_sweep(config(model_dir, tmp_path / "run", quant=["bnb-int8", "fp32"], batch_sizes=[1]))
    errors = {r.quantization.scheme: r.error for r in run.records}
    assert errors["fp32"] is None
    assert errors["bnb-int8"].startswith("unsupported:") and "CUDA" in errors["bnb-int8"]


def test_keyboard_interrupt_keeps_finished_records_and_resume_completes(tmp_path, model_dir, fake):
    fake()

    class StopAfterTwo(SweepObserver):
        n = 0

        def config_done(self, point, record):
            self.n += 1
            if self.n == 2:
                raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config(model_dir, out, batch_sizes=[1, 2, 3, 4]), StopAfterTwo())
    store = RunStore(out)
    assert len(store.record_dicts()) == 2
    assert json.loads(store.run_file.read_text())["sessions"][-1]["status"] == "interrupted"
    run = run_sweep(config(model_dir, out, batch_sizes=[1, 2, 3, 4], resume=True))
    assert sorted(r.workload.batch_size for r in run.records) == [1, 2, 3, 4]


SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from conftest import FakeBackend, Timing
    import effbench.backends as b
    b.register_backend("fake", lambda: FakeBackend(timing=Timing(0.02, 0.0, 0.01, 0.0)))
    from effbench.config import load_config
    from effbench.sweep import run_sweep
    run_sweep(load_config(dict(model={model!r}, out={out!r}, backend=["fake"], resume=True, batch_sizes=[1, 2, 3, 4, 5, 6],
                               new_tokens=[8], prompt_tokens=[8], repeats=3, warmup=0, sensor="none", idle_s=0)))
""")


def test_sigkill_mid_sweep_then_resume_gives_exactly_one_record_per_configuration(tmp_path, model_dir):
    out = tmp_path / "run"
    script = tmp_path / "sweep.py"
    script.write_text(SCRIPT.format(tests=str(TESTS_DIR), model=str(model_dir), out=str(out)))
    results = out / "results.jsonl"
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if results.exists() and results.read_text().count("\n") >= 2:
            break
        if proc.poll() is not None:
            pytest.fail(f"sweep ended early: {proc.stderr.read().decode()[-500:]}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = [json.loads(line) for line in results.read_text().splitlines() if line.endswith("}")]
    assert 2 <= len(before) < 6
    done = subprocess.run([sys.executable, str(script)], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-500:]
    after = RunStore(out).record_dicts()
    assert sorted(d["workload"]["batch_size"] for d in after) == [1, 2, 3, 4, 5, 6]
    assert len({d["config_id"] for d in after}) == 6
    assert [d["config_id"] for d in after[: len(before)]] == [d["config_id"] for d in before]


def test_resume_with_another_sensor_is_refused(tmp_path, model_dir, fake):
    fake()
    run_sweep(config(model_dir, tmp_path / "run", batch_sizes=[1]))
    with pytest.raises(EffbenchError, match="sensor 'none', not 'estimate'"):
        run_sweep(config(model_dir, tmp_path / "run", batch_sizes=[1, 2], resume=True, sensor="estimate"))


def test_a_gpu_profile_for_a_cpu_run_is_refused(tmp_path, model_dir, fake):
    fake()
    with pytest.raises(EffbenchError, match="'h100-sxm' is a gpu"):
        run_sweep(config(model_dir, tmp_path / "run", hardware="h100-sxm"))


def test_single_repeat_energy_is_flagged(tmp_path, model_dir, fake):
    fake()
    run = run_sweep(config(model_dir, tmp_path / "run", batch_sizes=[1], repeats=1, sensor="estimate"))
    assert "single-repeat" in run.records[0].energy.flags
