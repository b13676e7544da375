"""RAPL sensor against a fake powercap tree."""
import time
from pathlib import Path

import pytest

from effbench.sensors.rapl import RaplSensor
from effbench.sensors.simulated import Constant, FakePowercap, FakeZone, Ramp, SimClock


def _tree(tmp_path, zones, prefix="intel-rapl"):
    return FakePowercap(tmp_path / "powercap", [FakeZone(z.path.replace("intel-rapl", prefix), z.name, z.waveform,
                                                         z.max_energy_range_uj, z.offset_uj) for z in zones]).write(0.0)


def _window(sensor, cap, clock, seconds, steps=1):
    w = sensor.start_window()
    for _ in range(steps):
        clock.advance(seconds / steps)
        cap.update(clock())
        sensor.refresh()  # what the wrap guard thread does while a window is open
    return w.stop()


@pytest.mark.parametrize("prefix", ["intel-rapl", "amd-rapl"])
def test_package_and_dram_domains_core_left_out(tmp_path, prefix):
    cap = _tree(tmp_path, [
        FakeZone("intel-rapl:0", "package-0", Constant(65.0)),
        FakeZone("intel-rapl:0/intel-rapl:0:0", "core", Constant(40.0)),
        FakeZone("intel-rapl:0:1", "dram", Constant(6.0)),
        FakeZone("intel-rapl:1", "package-1", Ramp(20.0, 60.0, 10.0)),
    ], prefix)
    clock = SimClock()
    sensor = RaplSensor(cap.root, clock=clock, wrap_guard_s=None)
    info = sensor.info()
    assert info.available and info.domains == ("cpu:package-0", "dram:0", "cpu:package-1")
    r = _window(sensor, cap, clock, 10.0)
    assert r.status == "measured" and r.coverage == 1.0
    assert r.joules_by_domain == pytest.approx({"cpu:package-0": 650.0, "dram:0": 60.0, "cpu:package-1": 400.0})


def test_counter_wrap_around_is_undone(tmp_path):
    # a 1 kJ range wrapping every ~10 s at 100 W; the window spans 3 wraps, read every 2 s
    zone = FakeZone("intel-rapl:0", "package-0", Constant(100.0), max_energy_range_uj=1_000_000_000, offset_uj=900_000_000)
    cap = _tree(tmp_path, [zone])
    clock = SimClock()
    sensor = RaplSensor(cap.root, clock=clock, wrap_guard_s=None)
    r = _window(sensor, cap, clock, 30.0, steps=15)
    assert r.joules == pytest.approx(3000.0)


def test_single_wrap_between_window_edges(tmp_path):
    zone = FakeZone("intel-rapl:0", "package-0", Constant(50.0), max_energy_range_uj=1_000_000_000, offset_uj=990_000_000)
    cap = _tree(tmp_path, [zone])
    clock = SimClock()
    sensor = RaplSensor(cap.root, clock=clock, wrap_guard_s=None)
    w = sensor.start_window()
    clock.advance(4.0)
    cap.update(clock())
    assert int((cap.root / "intel-rapl:0" / "energy_uj").read_text()) < 990_000_000  # it wrapped
    assert w.stop().joules == pytest.approx(200.0)


def test_absent_powercap_says_why(tmp_path):
    info = RaplSensor(tmp_path / "nope").info()
    assert not info.available and "does not exist" in info.reason


def test_unreadable_energy_files_say_sudo_chmod_or_root(tmp_path, monkeypatch):
    cap = _tree(tmp_path, [FakeZone("intel-rapl:0", "package-0", Constant(1.0))])
    real = Path.read_text

    def deny(self, *a, **k):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", deny)
    info = RaplSensor(cap.root).info()
    assert not info.available
    assert "run as root" in info.reason and "sudo chmod" in info.reason


def test_a_read_failing_mid_window_is_reported(tmp_path):
    cap = _tree(tmp_path, [FakeZone("intel-rapl:0", "package-0", Constant(10.0))])
    clock = SimClock()
    sensor = RaplSensor(cap.root, clock=clock, wrap_guard_s=None)
    w = sensor.start_window()
    clock.advance(1.0)
    (cap.root / "intel-rapl:0" / "energy_uj").write_text("garbage\n")
    r = w.stop()
    assert r.status == "unavailable" and "RAPL read failed" in r.error


def test_wrap_guard_thread_reads_the_counters_while_a_window_is_open_and_stops(tmp_path):
    cap = _tree(tmp_path, [FakeZone("intel-rapl:0", "package-0", Constant(10.0))])
    sensor = RaplSensor(cap.root, wrap_guard_s=0.01)
    reads: list[float] = []
    refresh = sensor.refresh

    def noted_refresh() -> dict[str, int]:
        reads.append(time.monotonic())
        return refresh()

    sensor.refresh = noted_refresh  # type: ignore[method-assign]
    w = sensor.start_window()
    opened = len(reads)  # the window's own opening read
    deadline = time.monotonic() + 10.0
    while len(reads) < opened + 3 and time.monotonic() < deadline:
        time.sleep(0.01)  # only the guard thread reads meanwhile
    guarded = len(reads) - opened
    w.stop()
    assert guarded >= 3, "the wrap guard thread never read the counters"
    assert sensor._guard is None
    stopped = len(reads)
    time.sleep(0.05)
    assert len(reads) == stopped  # no thread left reading
    sensor.close()
