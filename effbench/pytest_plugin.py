"""pytest plugin: energy beside pytest-benchmark's timings, and model benchmarks through the runner.

Fixtures
- ``energy_benchmark``: use it like pytest-benchmark's ``benchmark``
  (``energy_benchmark(fn, *args, tokens=128, **kwargs)`` or ``energy_benchmark.pedantic(...)``). It
  opens one energy window around the whole benchmark and adds to ``benchmark.extra_info``:
  ``joules_per_call``, ``mean_power_w``, ``energy_status``, ``energy_sensor``,
  ``energy_uncertainty_rel`` (and, when one call's output is declared with ``tokens=`` or
  ``@pytest.mark.effbench(tokens=N)``, ``tokens_per_s`` and ``tokens_per_joule``). extra_info is
  part of ``--benchmark-json`` and of saved runs, so it survives ``--benchmark-compare``.
- ``effbench_model``: ``effbench_model(**config) -> Record`` runs one configuration through
  ``effbench.run`` (the same loop, sensors and record as ``effbench run``), with defaults from
  ``@pytest.mark.effbench(...)``, and copies the headline figures into ``benchmark.extra_info``.

Why one window around the whole benchmark, not one per round: pytest-benchmark calibrates a round
to be short (microseconds to milliseconds), far below what a sensor can resolve (a window spans at
least 10 sensor update periods: docs/method.md, "Windows, coverage, totals"); opening and closing a
window per round would also add its own cost to every timed round. The window spans calibration,
warm-up and rounds (all calls of the same function), so its mean power is the function's; joules per call are that mean power x
pytest-benchmark's mean time per call, which leaves out the bookkeeping between rounds. A window
that is still too short is extended by calling the function again inside it.

This module is loaded by every pytest run in a project that installs effbench: it imports only
pytest and the standard library at import time; sensors, torch and pytest-benchmark load on use.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import pytest

if TYPE_CHECKING:  # pragma: no cover
    from effbench.results.schema import Record
    from effbench.sensors import EnergyReading, EnergySensor

MARKER = "effbench"
# A floor under the window for sensors without an update period (the estimate reads the process's
# CPU time, which advances in scheduler ticks of ~10 ms): 100 ticks.
DEFAULT_MIN_WINDOW_S = 1.0
SENSOR_CHOICES = ("auto", "nvml", "rapl", "estimate", "none")


# -- options and marker ------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("effbench", "effbench energy measurement")
    group.addoption("--effbench-sensor", choices=SENSOR_CHOICES, default="auto",
                    help="energy sensor for energy_benchmark and effbench_model (default: auto)")
    group.addoption("--effbench-device", default="cpu",
                    help="device the benchmarks run on: cpu, cuda or cuda:N (picks the sensor, "
                         "synchronises CUDA around energy windows; default: cpu)")
    group.addoption("--effbench-min-window", type=float, default=DEFAULT_MIN_WINDOW_S, metavar="SECONDS",
                    help=f"shortest energy window; the sensor's 10 update periods raise it (default: {DEFAULT_MIN_WINDOW_S})")
    group.addoption("--effbench-out", default=None, metavar="DIR",
                    help="where effbench_model writes its run directories (default: pytest's tmp dir)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(tokens=None, **config): tokens one call produces (energy_benchmark) and the sweep "
        "options of a model benchmark (effbench_model)",
    )


@dataclass(frozen=True)
class EnergyOptions:
    sensor: str
    device: str
    min_window_s: float

    @classmethod
    def from_config(cls, config: pytest.Config) -> "EnergyOptions":
        return cls(config.getoption("--effbench-sensor"), config.getoption("--effbench-device"),
                   max(0.0, config.getoption("--effbench-min-window")))


def _marker_kwargs(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Keyword arguments of every ``effbench`` marker on the test, the closest one winning."""
    out: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers(MARKER))):
        out.update(marker.kwargs)
    return out


# -- the arithmetic (pure; the tests check it against a known sensor) ----------------------------
@dataclass(frozen=True)
class EnergyFigures:
    """What ``energy_benchmark`` adds to ``extra_info``; keys follow the record schema's names."""

    energy_status: str
    energy_sensor: str
    energy_window_s: float
    energy_extra_calls: int  # calls made after the benchmark to lengthen a short window
    seconds_per_call: float
    mean_power_w: Optional[float] = None
    joules_per_call: Optional[float] = None
    energy_uncertainty_rel: Optional[float] = None
    energy_coverage: Optional[float] = None
    energy_basis: Optional[str] = None
    energy_error: Optional[str] = None
    tokens_per_call: Optional[float] = None
    tokens_per_s: Optional[float] = None
    joules_per_token: Optional[float] = None
    tokens_per_joule: Optional[float] = None

    def to_extra_info(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _rss(*parts: Optional[float]) -> Optional[float]:
    known = [p for p in parts if p is not None and math.isfinite(p)]
    return math.sqrt(sum(p * p for p in known)) if known else None


def energy_figures(reading: "EnergyReading", seconds_per_call: float, time_rel: Optional[float] = None,
                   tokens: Optional[float] = None, extra_calls: int = 0) -> EnergyFigures:
    """Per-call energy from one window's reading and the benchmark's mean seconds per call.

    ``time_rel`` is the relative CI95 half-width of that mean; the uncertainty combines it with the
    sensor's own (docs/method.md, "Uncertainty: one 95% interval")."""
    power = reading.mean_power_w
    joules = power * seconds_per_call if power is not None else None
    tps = tokens / seconds_per_call if tokens and seconds_per_call > 0 else None
    return EnergyFigures(
        energy_status=reading.status, energy_sensor=reading.sensor, energy_window_s=reading.duration_s,
        energy_extra_calls=extra_calls, seconds_per_call=seconds_per_call,
        mean_power_w=power, joules_per_call=joules,
        energy_uncertainty_rel=_rss(reading.uncertainty_rel, time_rel) if joules is not None else None,
        energy_coverage=reading.coverage, energy_basis=reading.basis, energy_error=reading.error,
        tokens_per_call=tokens, tokens_per_s=tps,
        joules_per_token=joules / tokens if joules is not None and tokens else None,
        tokens_per_joule=tokens / joules if joules and tokens else None,
    )


def _mean_and_rel(stats: Any) -> tuple[float, Optional[float]]:
    """Mean seconds per call and its relative CI95 half-width from pytest-benchmark's ``Stats``:
    the same Student-t interval as every other effbench figure (docs/method.md)."""
    from effbench.stats import t95

    mean, n = float(stats.mean), int(stats.rounds)
    if n < 2 or mean <= 0:
        return mean, None
    return mean, t95(n - 1) * float(stats.stddev) / math.sqrt(n) / mean


# -- energy_benchmark --------------------------------------------------------------------------
def _sync_for(device: str) -> Callable[[], None]:
    """Wait for queued CUDA work before a window opens or closes."""
    if not device.startswith("cuda"):
        return lambda: None
    import torch

    return lambda: torch.cuda.synchronize(device)


def _min_window_s(sensor: "EnergySensor", floor_s: float) -> float:
    from effbench.sensors.base import min_window_s  # the one home of the rule (docs/method.md)

    return max(floor_s, min_window_s(sensor.info()))


class EnergyBenchmark:
    """pytest-benchmark's fixture with an energy window around it. Attribute access falls through
    to the wrapped fixture (``extra_info``, ``group``, ``stats``, ...)."""

    def __init__(self, benchmark: Any, sensor: "EnergySensor", options: EnergyOptions,
                 tokens: Optional[float] = None, record: Optional[Callable[[EnergyFigures], None]] = None) -> None:
        self._benchmark = benchmark
        self._sensor = sensor
        self._options = options
        self._tokens = tokens
        self._record = record
        self.figures: Optional[EnergyFigures] = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._benchmark, name)

    def __call__(self, function: Callable[..., Any], *args: Any, tokens: Optional[float] = None, **kwargs: Any) -> Any:
        """``benchmark(function, *args, **kwargs)``; ``tokens`` (reserved) is what one call produces."""
        function = self._synced(function)
        return self._measured(lambda: self._benchmark(function, *args, **kwargs),
                              lambda: function(*args, **kwargs), tokens)

    def _synced(self, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` followed by a device sync, so each timed round includes its queued GPU work
        (CUDA calls return before the work is done)."""
        sync = _sync_for(self._options.device)
        if not self._options.device.startswith("cuda"):
            return function

        def synced(*args: Any, **kwargs: Any) -> Any:
            result = function(*args, **kwargs)
            sync()
            return result

        return synced

    def pedantic(self, target: Callable[..., Any], args: tuple = (), kwargs: Optional[dict] = None,
                 setup: Optional[Callable[[], Any]] = None, *, tokens: Optional[float] = None, **options: Any) -> Any:
        """``benchmark.pedantic(...)``, same arguments, plus ``tokens``."""
        target = self._synced(target)

        def again() -> Any:
            a, k = (setup() or (args, kwargs)) if setup else (args, kwargs)
            return target(*a, **(k or {}))

        return self._measured(
            lambda: self._benchmark.pedantic(target, args=args, kwargs=kwargs, setup=setup, **options), again, tokens)

    def _measured(self, run: Callable[[], Any], again: Callable[[], Any], tokens: Optional[float]) -> Any:
        if not self._benchmark.enabled:  # --benchmark-disable: run once as a plain test
            return run()
        sync = _sync_for(self._options.device)
        min_window = _min_window_s(self._sensor, self._options.min_window_s)
        sync()
        window = self._sensor.start_window()
        t0 = time.perf_counter()
        try:
            result = run()
            extra = 0
            while time.perf_counter() - t0 < min_window:  # docs/method.md: lengthen a short window
                again()
                extra += 1
            sync()
        finally:
            reading = window.stop()
        mean, rel = _mean_and_rel(self._benchmark.stats.stats)
        self.figures = energy_figures(reading, mean, rel, tokens if tokens is not None else self._tokens, extra)
        # Update in place: pytest-benchmark's stats hold this very dict.
        self._benchmark.extra_info.update(self.figures.to_extra_info())
        if self._record:
            self._record(self.figures)
        return result


# -- fixtures ----------------------------------------------------------------------------------
_RESULTS = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def effbench_sensor(pytestconfig: pytest.Config) -> Iterator["EnergySensor"]:
    """The session's energy sensor, chosen by ``--effbench-sensor`` / ``--effbench-device``."""
    from effbench import sensors
    from effbench.errors import EffbenchError

    opts = EnergyOptions.from_config(pytestconfig)
    try:
        sensor = sensors.create(opts.sensor, opts.device)
    except EffbenchError as e:
        raise pytest.UsageError(f"--effbench-sensor {opts.sensor}: {e}") from None
    try:
        yield sensor
    finally:
        sensor.close()


@pytest.fixture
def energy_benchmark(benchmark: Any, effbench_sensor: "EnergySensor", request: pytest.FixtureRequest) -> EnergyBenchmark:
    """pytest-benchmark's ``benchmark`` plus energy in ``extra_info`` (see the module docstring)."""
    results = request.config.stash.setdefault(_RESULTS, [])
    return EnergyBenchmark(
        benchmark, effbench_sensor, EnergyOptions.from_config(request.config),
        tokens=_marker_kwargs(request).get("tokens"),
        record=lambda f: results.append((request.node.nodeid, f)),
    )


# The sweep options that would make one call into several configurations.
_LIST_KEYS = ("model", "backend", "quant", "batch_sizes", "prompt_tokens", "new_tokens", "prompts")
# Headline figures of a record copied into extra_info, as "section.field" -> key.
_RECORD_FIGURES = {
    "throughput.prefill_tokens_per_s": "prefill_tokens_per_s",
    "throughput.decode_tokens_per_s": "decode_tokens_per_s",
    "throughput.e2e_tokens_per_s": "e2e_tokens_per_s",
    "throughput.ttft_s": "ttft_s",
    "throughput.tpot_s": "tpot_s",
    "energy.status": "energy_status",
    "energy.sensor": "energy_sensor",
    "energy.joules_per_token": "joules_per_token",
    "energy.tokens_per_joule": "tokens_per_joule",
    "energy.uncertainty_rel": "energy_uncertainty_rel",
    "memory.peak_host_bytes": "peak_host_bytes",
    "memory.peak_device_bytes": "peak_device_bytes",
    "quality.perplexity": "perplexity",
    "stats.repeats": "repeats",
    "stats.ci95_rel": "ci95_rel",
    "stats.interference": "interference",
    "config_id": "config_id",
    "error": "error",
}


def record_figures(record: "Record") -> dict[str, Any]:
    """The headline figures of a record, flat, for ``extra_info``."""
    data = record.to_json_dict()
    out: dict[str, Any] = {}
    for path, key in _RECORD_FIGURES.items():
        value: Any = data
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            out[key] = value
    return out


def _values(value: Any) -> int:
    """How many values a sweep option holds (a list, or a comma-separated string as on the CLI)."""
    if isinstance(value, (list, tuple)):
        return len(value)
    return len(value.split(",")) if isinstance(value, str) else 1


def _one_configuration(config: dict[str, Any]) -> None:
    several = [k for k in _LIST_KEYS if _values(config.get(k)) > 1]
    if several:
        raise pytest.UsageError(f"effbench_model runs one configuration; give one value for: {', '.join(several)} "
                                "(parametrize the test for more)")


class ModelBenchmark:
    """``effbench_model(**config)``: one configuration through ``effbench.run``; returns its record.

    Nothing is asserted or timed by the test itself: the figures are the runner's, copied into
    ``benchmark.extra_info`` (pytest-benchmark's time column for such a test is the wall time of
    the whole configuration: load, perplexity, warm-up and repeats)."""

    def __init__(self, request: pytest.FixtureRequest, out_dir: Any) -> None:
        self._request = request
        self._out_dir = out_dir
        self.run: Any = None

    def _config(self, overrides: dict[str, Any]) -> dict[str, Any]:
        opts = EnergyOptions.from_config(self._request.config)
        config: dict[str, Any] = {"sensor": opts.sensor, "device": opts.device, "out": str(self._out_dir)}
        config.update({k: v for k, v in _marker_kwargs(self._request).items() if k != "tokens"})
        config.update(overrides)
        _one_configuration(config)
        return config

    def __call__(self, **overrides: Any) -> "Record":
        import effbench

        config = self._config(overrides)
        benchmark = self._benchmark()
        if benchmark is not None and benchmark.enabled:
            self.run = benchmark.pedantic(effbench.run, args=(config,), rounds=1, iterations=1)
        else:
            self.run = effbench.run(config)
        record = self.run.records[-1]
        if benchmark is not None:
            benchmark.extra_info.update({**record_figures(record), "run_dir": str(self.run.path)})
        return record

    def _benchmark(self) -> Any:
        try:
            return self._request.getfixturevalue("benchmark")
        except pytest.FixtureLookupError:  # pytest-benchmark not installed: records only
            return None


@pytest.fixture
def effbench_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ModelBenchmark:
    """Run one model configuration through effbench's runner (see ``ModelBenchmark``)."""
    root = request.config.getoption("--effbench-out")
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in request.node.name)[:80]
    if root:
        from pathlib import Path

        out = Path(root) / name
    else:
        out = tmp_path_factory.mktemp("effbench") / name
    return ModelBenchmark(request, out)


# -- terminal summary ----------------------------------------------------------------------------
_COLUMNS = (("J/call", 11, ".4g"), ("W", 8, ".3g"), ("tokens/s", 10, ".4g"), ("tokens/J", 10, ".4g"), ("±%", 5, ".0f"))


def _cells(f: EnergyFigures) -> list[str]:
    unc = 100 * f.energy_uncertainty_rel if f.energy_uncertainty_rel is not None else None
    values = (f.joules_per_call, f.mean_power_w, f.tokens_per_s, f.tokens_per_joule, unc)
    return [("-" if v is None else format(v, spec)).rjust(width) for v, (_, width, spec) in zip(values, _COLUMNS)]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """A short table of what energy_benchmark measured (pytest-benchmark's own table shows time only)."""
    results = config.stash.get(_RESULTS, [])
    if not results:
        return
    tr = terminalreporter
    tr.section("effbench energy")
    head = " ".join(name.rjust(width) for name, width, _ in _COLUMNS)
    tr.write_line(f"{'test':<40} {'status':<10} {'sensor':<9} {head}")
    for nodeid, f in results:
        name = nodeid.split("::", 1)[-1][-40:]
        tr.write_line(f"{name:<40} {f.energy_status:<10} {f.energy_sensor:<9} {' '.join(_cells(f))}")
    if any(f.energy_status == "estimated" for _, f in results):
        tr.write_line("estimated: no sensor measures this device; the figures are TDP x utilisation, not measurements")
