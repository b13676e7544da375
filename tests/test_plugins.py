"""Plugins that reach every worker (issue 24): an installed package adds a backend or sensor through
entry points, found by name here and in spawned workers; a backend registered at run time reaches a
``--launcher process`` worker; a registration a worker cannot import is one line before any work;
a name clash is an error."""
from __future__ import annotations

import functools
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import FakeBackend, Timing, tiny_config

import effbench
from effbench import registry
from effbench.backends import BACKENDS, canonical_backend_name, create_backend, register_backend
from effbench.errors import ConfigError
from effbench.quant import SCHEMES, Scheme
from effbench.quant import register as register_scheme
from effbench.results.schema import Throughput
from effbench.scenarios import SCENARIOS, Scenario
from effbench.scenarios.serving.engines import ENGINES
from effbench.sensors import SENSORS, register_sensor
from effbench.sensors.base import NullSensor
from effbench.sensors.estimate import EstimateSensor
from effbench.sweep import Sweep

PLUGIN = textwrap.dedent('''
    from conftest import FAST, FakeBackend
    from effbench.sensors.base import NullSensor

    class PluggedBackend(FakeBackend):
        name = "plugged"

        def __init__(self):
            super().__init__(timing=FAST)

    class PlugSensor(NullSensor):
        name = "plugsense"
''')


@pytest.fixture
def fresh_registries(monkeypatch):
    """Every registry as if no entry point had been read yet; restored after the test."""
    for reg in list(registry._REGISTRIES.values()):
        monkeypatch.setattr(reg, "entries", dict(reg.entries))
        monkeypatch.setattr(reg, "_fixed", None if reg._fixed is None else dict(reg._fixed))
        monkeypatch.setattr(reg, "_plugin_of", dict(reg._plugin_of))
        monkeypatch.setattr(reg, "_discovered", False)


def install_dist(root: Path, name: str, entry_points: str, module: str = "", code: str = "") -> Path:
    """A package 'installed' the way pip leaves it: NAME-1.0.dist-info with entry_points.txt, on sys.path."""
    root.mkdir(parents=True, exist_ok=True)
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    if module:
        (root / f"{module}.py").write_text(code)
    return root


@pytest.fixture
def plugin(tmp_path, monkeypatch, fresh_registries):
    root = install_dist(tmp_path / "site", "effbench-fakeplug", """
        [effbench.backends]
        plugged = effbench_fakeplug:PluggedBackend

        [effbench.sensors]
        plugsense = effbench_fakeplug:PlugSensor
    """, "effbench_fakeplug", PLUGIN)
    monkeypatch.syspath_prepend(str(root))  # also invalidates the import and metadata caches
    monkeypatch.delitem(sys.modules, "effbench_fakeplug", raising=False)
    yield root
    sys.modules.pop("effbench_fakeplug", None)


# -- entry points --------------------------------------------------------------------------------
def test_an_installed_plugin_adds_a_backend_and_a_sensor_by_name(plugin):
    assert canonical_backend_name("plugged") == "plugged"
    assert "plugsense" in SENSORS.names()
    assert "effbench_fakeplug" not in sys.modules  # listed without being imported
    assert type(create_backend("plugged")).__name__ == "PluggedBackend"
    assert issubclass(SENSORS.get("plugsense"), NullSensor)
    assert "plugged" not in BACKENDS.added() and SENSORS.added() == {}  # installed, not registered at run time


def test_a_plugin_backend_runs_a_sweep_inline_and_in_a_spawned_worker(plugin, tmp_path, model_dir):
    for launcher in ("inline", "process"):
        run = effbench.run(tiny_config(model_dir, tmp_path / launcher, backend=["plugged"], launcher=launcher))
        assert [r.error for r in run.records] == [None, None], launcher
        assert {r.backend.name for r in run.records} == {"plugged"}


def test_a_plugin_name_that_clashes_with_a_built_in_or_another_plugin_is_an_error(tmp_path, monkeypatch, fresh_registries):
    root = install_dist(tmp_path / "a", "effbench-clash", """
        [effbench.backends]
        transformers = somewhere:Other
    """)
    monkeypatch.syspath_prepend(str(root))
    with pytest.raises(ConfigError, match=r"backend 'transformers' from 'effbench-clash' \(entry point effbench.backends: "
                                          r"somewhere:Other\) clashes with effbench.backends.transformers:TransformersBackend"):
        BACKENDS.names()


def test_two_plugins_with_one_name_clash(tmp_path, monkeypatch, fresh_registries):
    for dist, target in (("effbench-one", "one:Sensor"), ("effbench-two", "two:Sensor")):
        monkeypatch.syspath_prepend(str(install_dist(tmp_path / dist, dist, f"[effbench.sensors]\ntwin = {target}\n")))
    with pytest.raises(ConfigError, match=r"sensor 'twin' from 'effbench-\w+' .* clashes with the sensor of 'effbench-\w+'"):
        SENSORS.names()


# -- run-time registrations ----------------------------------------------------------------------
def test_a_backend_registered_at_run_time_reaches_a_spawned_process_worker(tmp_path, model_dir):
    register_backend("fake", FakeBackend, replace=True)  # conftest registered a lambda under this name
    config = tiny_config(model_dir, tmp_path / "run", launcher="process")  # start method spawn: a fresh interpreter
    assert Sweep(config).plugins == {"effbench.backends": {"fake": "conftest:FakeBackend"}}
    run = effbench.run(config)
    assert [r.error for r in run.records] == [None, None]
    assert {r.backend.version for r in run.records} == {"fake 1.0"}


def test_a_registration_a_worker_cannot_import_is_one_line_before_any_work(tmp_path, model_dir):
    # conftest's fake backend is a lambda: a spawned worker could not rebuild it
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as e:
        Sweep(tiny_config(model_dir, out, launcher="process"))
    msg = str(e.value)
    assert "\n" not in msg and not out.exists()
    assert msg.startswith("backend 'fake' is registered at run time as conftest.fake_backend.<locals>.<lambda>, which "
                          "a worker of the process launcher cannot import")
    # a forked worker inherits it, and the inline launcher runs in this process: nothing to carry
    assert Sweep(tiny_config(model_dir, out, launcher="process", launcher_opt={"start_method": "fork"})).plugins == {}
    assert Sweep(tiny_config(model_dir, out)).plugins == {}


def test_an_unused_registration_that_cannot_travel_is_left_behind(tmp_path, model_dir, monkeypatch):
    monkeypatch.setitem(SENSORS.entries, "closure", type("Local", (NullSensor,), {"__qualname__": "f.<locals>.Local"}))
    register_backend("fake", FakeBackend, replace=True)
    plugins = Sweep(tiny_config(model_dir, tmp_path / "run", launcher="process")).plugins  # sensor none: unused
    assert plugins == {"effbench.backends": {"fake": "conftest:FakeBackend"}}


def test_install_re_registers_in_a_worker(monkeypatch, fresh_registries):
    registry.install({"effbench.backends": {"fake": "conftest:FakeBackend"}})
    assert isinstance(create_backend("fake"), FakeBackend)


def test_a_scheme_or_a_partial_registered_at_run_time_travels_as_itself(monkeypatch, fresh_registries):
    scheme = Scheme("test-fp32", "torch", 32, "float32", ("cpu",), "a test scheme")
    register_scheme(scheme)
    slow = functools.partial(FakeBackend, timing=Timing(prefill_base=0.5))
    register_backend("slow", slow)
    carried = registry.carried_registrations({}, "a worker")
    assert carried["effbench.quant"] == {"test-fp32": scheme}
    assert "fp32" not in carried["effbench.quant"]  # built-ins are every process's own
    assert carried["effbench.backends"] == {"slow": slow}  # conftest's lambda cannot travel, and is not used
    register_backend("local", lambda: FakeBackend())
    with pytest.raises(ConfigError, match="backend 'local' is registered at run time as test_plugins.test_a_scheme_or_"):
        registry.carried_registrations({"effbench.backends": ["local"]}, "a worker")


# -- clashes and kinds ---------------------------------------------------------------------------
def test_register_of_a_taken_name_is_an_error_unless_replace(monkeypatch, fresh_registries):
    with pytest.raises(ConfigError, match=r"backend 'transformers' is already registered \(effbench.backends.transformers:"
                                          r"TransformersBackend\); register conftest.FakeBackend under another name, "
                                          r"or pass replace=True"):
        register_backend("transformers", FakeBackend)
    with pytest.raises(ConfigError, match="backend 'pytorch' is already registered \\(an alias of 'transformers'\\)"):
        register_backend("PyTorch", FakeBackend)
    with pytest.raises(ConfigError, match="sensor 'none' is already registered"):
        register_sensor("none", EstimateSensor)
    register_sensor("none", NullSensor)  # the same target again is no clash
    register_backend("transformers", FakeBackend, replace=True)
    assert isinstance(create_backend("transformers"), FakeBackend)
    with pytest.raises(ConfigError, match="quantization scheme 'fp32' is already registered"):
        register_scheme(Scheme("fp32", "torch", 32, "float32", ("cpu",), "another fp32"))
    assert "fp32" in SCHEMES.names()


def test_backends_and_serving_engines_are_named_apart_in_messages():
    with pytest.raises(ConfigError, match="^unknown backend 'nope'"):
        BACKENDS.canonical("nope")
    with pytest.raises(ConfigError, match="^unknown serving engine 'nope'"):
        ENGINES.canonical("nope")


def test_every_plugin_group_names_its_registry():
    for group in registry.GROUPS:
        assert registry.registry_of(group).group == group


def test_a_backend_registered_at_run_time_reaches_a_slurm_job(tmp_path, model_dir, monkeypatch):
    pytest.importorskip("submitit")
    # The job is a fresh interpreter (submitit's local executor, as CI runs the SLURM path): what the
    # parent registered must be importable there, as a plugin must be on a cluster's nodes.
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    register_backend("fake", FakeBackend, replace=True)
    run = effbench.run(tiny_config(model_dir, tmp_path / "run", launcher="slurm", launcher_opt={"cluster": "local"}))
    assert [r.error for r in run.records] == [None, None]
    assert {r.backend.version for r in run.records} == {"fake 1.0"}


def test_a_backend_registered_at_run_time_reaches_a_ray_task(tmp_path, model_dir, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # the local Ray's workers import conftest
    register_backend("fake", FakeBackend, replace=True)
    run = effbench.run(tiny_config(model_dir, tmp_path / "run", launcher="ray", launcher_opt={"cpus": "1"}))
    assert [r.error for r in run.records] == [None, None]
    assert {r.backend.version for r in run.records} == {"fake 1.0"}


class CountingScenario(Scenario):
    """A plugin scenario that only says what it measures: the model is loaded for it as for offline."""

    name = "counting"

    def measure(self, point, ctx):
        assert ctx.engine is not None and ctx.loaded is not None  # the default open() loaded the model
        return {"throughput": Throughput(decode_tokens_per_s=10.0 * point.batch_size)}


def test_a_scenario_plugin_with_only_measure_runs_on_the_worker_s_one_path(tmp_path, model_dir, fresh_registries):
    SCENARIOS.register("counting", CountingScenario)
    run = effbench.run(tiny_config(model_dir, tmp_path / "out", scenario="counting"))
    assert [(r.workload.batch_size, r.throughput.decode_tokens_per_s, r.error) for r in run.records] == [(1, 10.0, None),
                                                                                                       (2, 20.0, None)]
    assert all(r.backend.version and r.model.params is not None for r in run.records)  # what open() found
