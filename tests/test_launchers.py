"""Launchers: the same records wherever a group runs; a group that dies becomes error records and
the sweep goes on; remote launchers that cannot work here fail in seconds with one line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST, FakeBackend, Timing, assert_one_line_error, run_effbench, tiny_config

from effbench.errors import EffbenchError
from effbench.sweep import run_sweep


class _DyingBackend(FakeBackend):
    """Kills its own process (as the kernel's OOM killer would) or hangs at one batch size."""

    def __init__(self, die_at: int, how: str) -> None:
        super().__init__(timing=FAST)
        self.die_at, self.how = die_at, how

    def prepare(self, prompts, batch_size: int, prompt_tokens: int, new_tokens: int = 0):
        if batch_size == self.die_at:
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(600)
        return super().prepare(prompts, batch_size, prompt_tokens, new_tokens)


def _config(model_dir: Path, out: Path, **kw):
    return tiny_config(model_dir, out, **{"batch_sizes": [1, 2, 4], "quant": ["fp32", "bf16"], **kw})


@pytest.mark.parametrize("how, needle", [("kill", "worker process killed by SIGKILL"), ("hang", "timed out after 3 s")])
def test_a_group_that_dies_becomes_error_records_and_the_next_group_runs(tmp_path, model_dir, stand_in, how, needle):
    # fork: the child inherits the fake standing in for transformers (spawn would import the real one)
    stand_in(lambda: _DyingBackend(2, how))
    t0 = time.monotonic()
    run = run_sweep(_config(model_dir, tmp_path / "run", launcher="process",
                            launcher_opt={"start_method": "fork", "timeout": "3"}))
    assert time.monotonic() - t0 < 60
    by = {(r.quantization.scheme, r.workload.batch_size): r for r in run.records}
    assert len(by) == 6  # every configuration has its record
    for scheme in ("fp32", "bf16"):  # both groups ran: the second was not lost with the first
        assert by[(scheme, 1)].error is None and by[(scheme, 1)].throughput.decode_tokens_per_s > 0
        assert needle in by[(scheme, 2)].error and needle in by[(scheme, 4)].error
    meta = json.loads((run.path / "run.json").read_text())
    assert meta["sessions"][-1]["status"] == "complete" and meta["config"]["launcher"] == "process"


def test_process_and_inline_give_the_same_records_for_a_deterministic_engine(tmp_path, model_dir, stand_in):
    # steps of 5 ms: a busy machine's sleep jitter (about a millisecond) stays well inside the tolerance
    steady = Timing(prefill_base=0.01, prefill_per_token=0.0, step_base=0.005, step_per_seq=0.0)
    stand_in(lambda: FakeBackend(timing=steady))
    a = run_sweep(_config(model_dir, tmp_path / "inline"))
    b = run_sweep(_config(model_dir, tmp_path / "process", launcher="process", launcher_opt={"start_method": "fork"}))
    assert [r.config_id for r in a.records] == [r.config_id for r in b.records]
    for x, y in zip(a.records, b.records):
        assert (x.error, x.quality.perplexity, x.stats.repeats) == (y.error, y.quality.perplexity, y.stats.repeats)
        assert y.throughput.decode_tokens_per_s == pytest.approx(x.throughput.decode_tokens_per_s, rel=0.5)


def test_launcher_options_and_names_are_checked_before_anything_runs(tmp_path, model_dir):
    with pytest.raises(EffbenchError, match="not an option of the process launcher; its options: timeout, start_method"):
        run_sweep(_config(model_dir, tmp_path / "a", launcher="process", launcher_opt={"timout": "3"}))
    with pytest.raises(EffbenchError, match="did you mean 'process'"):
        _config(model_dir, tmp_path / "b", launcher="proces")
    assert not (tmp_path / "a").exists()






def test_slurm_without_slurm_fails_in_seconds(tmp_path):
    t0 = time.monotonic()
    p = run_effbench("run", "--launcher", "slurm", "--out", str(tmp_path / "r"), "--sensor", "none")
    line = assert_one_line_error(p)
    assert ("no SLURM here (sbatch not found)" in line or "pip install 'effbench[slurm]'" in line)
    assert time.monotonic() - t0 < 30 and not (tmp_path / "r").exists()


def test_ray_with_an_unreachable_address_fails_in_seconds(tmp_path):
    t0 = time.monotonic()
    p = run_effbench("run", "--launcher", "ray", "--launcher-opt", "address=ray://127.0.0.1:9", "--out", str(tmp_path / "r"),
                  "--sensor", "none")
    line = assert_one_line_error(p)
    assert "cannot reach a Ray cluster at ray://127.0.0.1:9" in line or "pip install 'effbench[ray]'" in line
    assert time.monotonic() - t0 < 30


def test_a_malformed_launcher_opt_is_one_line(tmp_path):
    assert "is not KEY=VALUE" in assert_one_line_error(run_effbench("run", "--launcher", "process", "--launcher-opt", "timeout"))


TINY = ["--batch-sizes", "1,2", "--prompt-tokens", "8", "--new-tokens", "4", "--repeats", "2", "--warmup", "0",
        "--sensor", "none", "--idle-s", "0", "--no-perplexity", "--quiet"]


def _remote_run(tmp_path: Path, *launcher_args: str) -> dict:
    """A tiny real-model sweep through a launcher that runs the worker elsewhere; its run.json."""
    out = tmp_path / "run"
    p = run_effbench("run", *TINY, *launcher_args, "--out", str(out), timeout=600)
    assert p.returncode == 0, p.stderr
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["workload"]["batch_size"] for r in records] == [1, 2]
    assert all(r["error"] is None and r["throughput"]["decode_tokens_per_s"] > 0 for r in records)
    return json.loads((out / "run.json").read_text())


@pytest.mark.model
def test_slurm_launcher_through_submitits_local_executor_on_the_real_model(tmp_path):
    pytest.importorskip("submitit")
    meta = _remote_run(tmp_path, "--launcher", "slurm", "--launcher-opt", "cluster=local")
    host = meta["hardware"]["targets"][0]  # the job said where it ran, with its profile: self-contained
    assert host["detected_name"] and host["resolved"]["kind"] == "cpu"


@pytest.mark.model
def test_resume_after_killing_the_parent_loses_nothing(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "effbench", "run", *TINY, "--batch-sizes", "1,2,3", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    results = out / "results.jsonl"
    while time.monotonic() < deadline and not (results.is_file() and results.read_text().count("\n") >= 1):
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    kept = [json.loads(x)["config_id"] for x in results.read_text().splitlines()]
    assert kept  # the first configuration was fsynced before the kill
    p = run_effbench("run", *TINY, "--batch-sizes", "1,2,3", "--out", str(out), "--resume", timeout=600)
    assert p.returncode == 0, p.stderr
    ids = [json.loads(x)["config_id"] for x in results.read_text().splitlines()]
    assert ids[:len(kept)] == kept and len(ids) == len(set(ids)) == 3


@pytest.mark.model
def test_ray_launcher_on_a_local_ray_runs_the_real_model(tmp_path):
    pytest.importorskip("ray")
    meta = _remote_run(tmp_path, "--launcher", "ray", "--launcher-opt", "cpus=1")
    assert meta["hardware"]["targets"][0]["resolved"]["kind"] == "cpu"


def test_a_fleet_sweep_runs_every_group_once_per_target(tmp_path, model_dir, stand_in):
    stand_in(lambda: FakeBackend(timing=FAST))
    cfg = _config(model_dir, tmp_path / "fleet", quant=["fp32"], batch_sizes=[1],
                  launcher={"name": "inline", "targets": [{"name": "a"}, {"name": "b"}]})
    run = run_sweep(cfg)
    assert len(run.records) == 2 and len({r.config_id for r in run.records}) == 2  # the target is part of the id
    assert all(r.error is None for r in run.records)
    again = run_sweep(cfg.model_copy(update={"resume": True}))  # both targets done: nothing reruns
    assert [r.config_id for r in again.records] == [r.config_id for r in run.records]
