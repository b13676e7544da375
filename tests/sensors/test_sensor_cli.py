"""`effbench sensors` and `effbench run --sensor ...` on this machine."""
import json
import subprocess
import sys

import pytest

from effbench.sensors import available, create
from effbench.errors import UnsupportedError


def _cli(*args):
    return subprocess.run([sys.executable, "-c", "from effbench.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300)


def test_sensors_lists_every_sensor_with_a_reason():
    r = _cli("sensors", "--json")
    assert r.returncode == 0, r.stderr
    infos = {i["name"]: i for i in json.loads(r.stdout)}
    assert set(infos) == {"nvml", "rapl", "estimate", "none"}
    assert infos["estimate"]["available"] and infos["estimate"]["kind"] == "estimate"
    for name in ("nvml", "rapl"):
        assert infos[name]["available"] or infos[name]["reason"]
    table = _cli("sensors")
    assert table.returncode == 0 and "estimate" in table.stdout and "nvml" in table.stdout


@pytest.mark.parametrize("name", ["nvml", "rapl"])
def test_run_with_an_unavailable_sensor_fails_with_one_line(name):
    info = next(i for i in available() if i.name == name)
    if info.available:
        pytest.skip(f"{name} works on this machine")
    r = _cli("run", "--sensor", name)
    assert r.returncode != 0
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert f"sensor '{name}' is unavailable here" in r.stderr and info.reason in r.stderr


def test_auto_never_picks_an_unavailable_sensor():
    s = create("auto", "cpu")
    try:
        assert s.info().available
    finally:
        s.close()
    with pytest.raises(UnsupportedError, match="unknown sensor"):
        create("wattmeter")
