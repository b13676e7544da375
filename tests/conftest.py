"""Shared test doubles: a simulated clock and a fake backend with known, exact timings."""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from effbench import backends
from effbench.backends.base import Backend, LoadedModel, OutputSize
from effbench.config import SweepConfig, load_config
from effbench.quant import CAPABILITIES
from effbench.sensors.base import EnergyReading, EnergySensor, SensorInfo, Window


def run_effbench(*args: str, cwd: Optional[Path] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``effbench ARGS`` as a user runs it: a fresh process, output captured."""
    return subprocess.run([sys.executable, "-m", "effbench", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def assert_one_line_error(p: subprocess.CompletedProcess, *needles: str) -> str:
    """The command failed with exactly one 'effbench: error:' line naming every needle, and no
    traceback anywhere; returns the line."""
    assert p.returncode != 0
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("effbench: error: "), p.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


class FakeClock:
    """A clock that only moves when the fake backend 'computes'."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@dataclass
class Timing:
    """Known cost model: prefill = base + per_token x B x P; each decode step = step + per_seq x B."""

    prefill_base: float = 0.020
    prefill_per_token: float = 0.0001
    step_base: float = 0.005
    step_per_seq: float = 0.0002

    def prefill_s(self, b: int, p: int) -> float:
        return self.prefill_base + self.prefill_per_token * b * p

    def step_s(self, b: int) -> float:
        return self.step_base + self.step_per_seq * b

    def full_s(self, b: int, p: int, n: int) -> float:
        return self.prefill_s(b, p) + (n - 1) * self.step_s(b)


class FakeBackend(Backend):
    """Spends known time (on a fake clock, or really sleeping) instead of running a model."""

    name = "fake"
    offers = frozenset(CAPABILITIES)  # runs every scheme: it spends known time and never looks at the weights

    def __init__(self, spend: Callable[[float], None] = time.sleep, timing: Optional[Timing] = None,
                 oom_at_batch: Optional[int] = None, jitter: Optional[list[float]] = None,
                 per_token: bool = True) -> None:
        self.spend = spend
        self.per_token = per_token  # False: an engine without a per-token hook (the loop times prefill apart)
        self.timing = timing or Timing()
        self.oom_at_batch = oom_at_batch
        self.jitter = list(jitter or [])  # multiplicative factors applied to successive generate calls
        self.calls = {"prefill": 0, "generate": 0}

    def version(self) -> str:
        return "fake 1.0"

    def resolve_device(self, requested: str) -> str:
        return "cpu"

    def load(self, model, scheme, device, threads, seed) -> LoadedModel:
        return LoadedModel(params=1000, weights_bytes=4000, kv_bytes_per_token=64, device="cpu", load_s=0.0)

    def prepare(self, prompts, batch_size: int, prompt_tokens: int, new_tokens: int = 0) -> Any:
        if self.oom_at_batch is not None and batch_size >= self.oom_at_batch:
            raise MemoryError(f"fake OOM at batch {batch_size}")
        return {"b": batch_size, "p": prompt_tokens}

    def prefill(self, batch: Any) -> Any:
        self.calls["prefill"] += 1
        self.spend(self.timing.prefill_s(batch["b"], batch["p"]))

    def generate(self, batch: Any, new_tokens: int) -> Any:
        return self.generate_timed(batch, new_tokens, None)[0]

    def generate_timed(self, batch: Any, new_tokens: int, clock: Optional[Callable[[], float]]) -> tuple[Any, Any]:
        """Prefill, then one step per further token, each marked on ``clock`` (when given) as a
        per-token hook would; ``jitter`` scales the whole call."""
        self.calls["generate"] += 1
        factor = self.jitter.pop(0) if self.jitter else 1.0
        times: list[float] = []
        self.spend(self.timing.prefill_s(batch["b"], batch["p"]) * factor)
        for i in range(new_tokens):
            if i:
                self.spend(self.timing.step_s(batch["b"]) * factor)
            if clock is not None:
                times.append(clock())
        return new_tokens, (times if self.per_token and clock is not None else None)

    def output_size(self, output: Any, batch: Any) -> OutputSize:
        return OutputSize(tokens=batch["b"] * output, chars=batch["b"] * output * 4)

    def perplexity(self, text: str, max_tokens: int = 512) -> tuple[float, int]:
        return 12.5, 100


class _ConstantPowerWindow(Window):
    def __init__(self, sensor: "ConstantPowerSensor") -> None:
        self.sensor = sensor
        self.t0 = sensor.clock()

    def stop(self) -> EnergyReading:
        d = self.sensor.clock() - self.t0
        return EnergyReading(status="measured", sensor="const", duration_s=d,
                             joules_by_domain={"gpu:0": self.sensor.watts * d},
                             sampling_interval_s=self.sensor.period, coverage=1.0, uncertainty_rel=0.0)


class ConstantPowerSensor(EnergySensor):
    """A perfect sensor on the fake clock: power is constant, so joules = watts x duration."""

    name = "const"

    def __init__(self, clock: Callable[[], float], watts: float = 100.0, period: Optional[float] = None) -> None:
        self.clock = clock
        self.watts = watts
        self.period = period

    def info(self) -> SensorInfo:
        return SensorInfo("const", "energy-counter", True, "test sensor", ("gpu:0",), self.period, 0.0)

    def start_window(self) -> Window:
        return _ConstantPowerWindow(self)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """Keep user config out of tests; keep the model cache shared across tests (it is slow to build)."""
    monkeypatch.setenv("EFFBENCH_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))


# -- sweeps over the fake backend -----------------------------------------------------------------
FAST = Timing(prefill_base=0.001, prefill_per_token=0.0, step_base=0.0005, step_per_seq=0.0)  # milliseconds per call


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A checkpoint directory the fake backend 'loads'."""
    d = tmp_path / "tiny-model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


def tiny_config(model_dir: Path, out: Path, **kw: Any) -> SweepConfig:
    """A sweep of two small configurations, fixed repeats, no sensor and no idle wait; ``kw`` overrides."""
    base: dict[str, Any] = dict(model=str(model_dir), out=str(out), backend=["fake"], batch_sizes=[1, 2], new_tokens=[4],
                                prompt_tokens=[8],
                                repeats=2, warmup=0, sensor="none", idle_s=0)
    base.update(kw)
    return load_config(base)


@pytest.fixture(autouse=True)
def fake_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``fake`` backend exists in every test (``tiny_config`` sweeps name it); ``stand_in`` swaps
    in a particular one."""
    monkeypatch.setitem(backends.BACKENDS.entries, FakeBackend.name, lambda: FakeBackend(timing=FAST))


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], Backend]], list[Backend]]:
    """``stand_in(make)`` registers ``make`` as the ``fake`` backend (it offers every capability, so
    any scheme runs on it) and returns the list of backends it makes."""
    made: list[Backend] = []

    def install(make: Callable[[], Backend]) -> list[Backend]:
        def tracked() -> Backend:
            b = make()
            made.append(b)
            return b
        monkeypatch.setitem(backends.BACKENDS.entries, FakeBackend.name, tracked)
        return made
    return install
