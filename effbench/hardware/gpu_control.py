"""Power-limit and locked-clock settings of NVIDIA GPUs, for the ``--power-limits`` and
``--gpu-clocks`` sweep axes: set through the device layer (``effbench.device.nvidia``), read back
(what is in force is what a record states), and restored.

Before the first change the original settings are written to ``gpu-restore.json`` in the run
directory, so they survive a killed run: the sweep restores them at its end, on error and on
SIGINT/SIGTERM; after a SIGKILL the next run in that directory restores them first
(``restore_pending``), as does ``python -m effbench.hardware.gpu_control RUN_DIR``.

Locked clocks have no NVML getter for the previous lock, so restoring clocks means resetting the
lock (``nvmlDeviceResetGpuLockedClocks``), the driver's default. Setting either needs root.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from effbench.config_fields import LIST_HELP, cli, positive_ints, split_list
from effbench.device.errors import DeviceError, InvalidArgument, NotPermitted, NotSupported
from effbench.device.nvidia import NvidiaDevice, NvidiaGPUs, Nvml, NvmlUnavailable
from effbench.errors import EffbenchError, UnsupportedError

RESTORE_FILE = "gpu-restore.json"


class GpuConfig(BaseModel):
    """The NVIDIA GPU sweep axes (the sweep file's ``gpu:`` section, or top-level ``power_limits`` /
    ``gpu_clocks``): power limits in W and locked SM clocks in MHz. Empty: the GPU's settings are left
    as they are."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    power_limits: list[float] = Field(default_factory=list, json_schema_extra=cli(
        f"NVIDIA GPU power limits to sweep, in W, {LIST_HELP} (needs root; originals restored).",
        listed=True, default="unchanged"))
    gpu_clocks: list[int] = Field(default_factory=list, json_schema_extra=cli(
        f"Locked SM clocks to sweep, in MHz, {LIST_HELP} (needs root; reset afterwards).",
        listed=True, default="unchanged"))

    @field_validator("power_limits", "gpu_clocks", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return [] if v is None else split_list(v)

    @field_validator("gpu_clocks")
    @classmethod
    def _positive_clocks(cls, v: list[int]) -> list[int]:
        return positive_ints(v)

    @field_validator("power_limits")
    @classmethod
    def _positive_limits(cls, v: list[float]) -> list[float]:
        bad = [x for x in v if not (x > 0 and math.isfinite(x))]
        if bad:
            raise ValueError(f"{bad[0]:g} is not a power limit in watts (every value must be a positive number)")
        return list(dict.fromkeys(v))


@dataclass(frozen=True)
class Applied:
    """What is in force on one GPU after a change, read back from NVML."""

    power_limit_w: Optional[float]
    sm_clock_mhz: Optional[int]


# What a refused setting means to the user, by the device layer's error type.
_WHY: tuple[tuple[type[DeviceError], str], ...] = (
    (NotPermitted, "{what} needs root (NVML: Insufficient Permissions): run effbench as root, or leave the option out"),
    (NotSupported, "{what} is not supported on this GPU (NVML: Not Supported)"),
    (InvalidArgument, "{what}: the value is outside this GPU's range (NVML: Invalid Argument)"),
)


def _why(e: DeviceError, what: str) -> str:
    template = next((t for kind, t in _WHY if isinstance(e, kind)), None)
    if template is not None:
        return template.format(what=what)
    return f"{what} failed (NVML: {' '.join(str(e).split()) or type(e).__name__})"


def _atomic_write(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def open_gpu_control(device: str, run_dir: Any = None, nvml: Any = None,
                     env: Optional[Mapping[str, str]] = None) -> "GpuControl":
    """A ``GpuControl`` for the GPUs ``device`` selects (the device layer resolves
    ``CUDA_VISIBLE_DEVICES`` and MIG); one clear line when there is no NVIDIA GPU (or NVML) to control.
    ``nvml``: a pynvml stand-in (the simulator)."""
    if not device.startswith("cuda"):
        raise EffbenchError(f"--power-limits and --gpu-clocks set NVIDIA GPU settings, but the run is on {device}: "
                            "run on --device cuda or leave them out")
    try:
        devices = NvidiaGPUs.open(device, nvml, env)
    except UnsupportedError as e:
        raise EffbenchError(f"--power-limits and --gpu-clocks need an NVIDIA GPU through NVML: {e}") from None
    return GpuControl(devices, run_dir)


class GpuControl:
    """Settings of the GPUs an open ``NvidiaGPUs`` selected (``open_gpu_control`` opens one for a
    device string)."""

    def __init__(self, devices: NvidiaGPUs, run_dir: Optional[Path] = None) -> None:
        self.devices = devices
        self.run_dir = Path(run_dir) if run_dir is not None else None

    @property
    def nv(self) -> Any:
        """The NVML module in use, for ``restore_pending`` (it shares this NVML session)."""
        return self.devices.nv

    @property
    def restore_path(self) -> Optional[Path]:
        return None if self.run_dir is None else self.run_dir / RESTORE_FILE

    # -- reading -------------------------------------------------------------------------------
    def in_force(self) -> dict[str, Applied]:
        return {g.uuid: Applied(g.power_limit_w(), g.clock_mhz("sm")) for g in self.devices.gpus}

    def limits_range_w(self) -> dict[str, tuple[float, float]]:
        ranges = {g.uuid: g.power_limit_range_w() for g in self.devices.gpus}
        return {uuid: r for uuid, r in ranges.items() if r is not None}

    # -- changing ------------------------------------------------------------------------------
    def save_originals(self) -> None:
        """Write the settings to restore to the run directory (kept from an earlier, killed run)."""
        path = self.restore_path
        if path is None or path.exists():  # an earlier run's originals are the true ones
            return
        gpus = {}
        for g in self.devices.gpus:
            gpus[g.uuid] = {"name": g.name, "power_limit_w": g.power_limit_w(), "clocks_locked": False}
        _atomic_write(path, {"pid": os.getpid(), "gpus": gpus})

    def check(self, power_limits_w: list[float], sm_clocks_mhz: list[int]) -> None:
        """Refuse values outside each GPU's range before anything is loaded, in one line."""
        for uuid, (lo, hi) in self.limits_range_w().items():
            bad = [w for w in power_limits_w if not lo <= w <= hi]
            if bad:
                raise EffbenchError(f"--power-limits {','.join(f'{w:g}' for w in bad)}: outside this GPU's range "
                                    f"{lo:g}-{hi:g} W ({uuid})")
        for g in self.devices.gpus:
            top = g.max_clock_mhz("sm")
            if top is None:
                continue
            bad_c = [c for c in sm_clocks_mhz if not 0 < c <= top]
            if bad_c:
                raise EffbenchError(f"--gpu-clocks {','.join(str(c) for c in bad_c)}: above this GPU's maximum SM clock "
                                    f"{top} MHz ({g.name})")

    def apply(self, power_limit_w: Optional[float], sm_clock_mhz: Optional[int]) -> dict[str, Applied]:
        """Set the limit and/or lock the SM clock on every selected GPU; returns what is in force."""
        self.save_originals()
        for g in self.devices.gpus:
            if power_limit_w is not None:
                try:
                    g.set_power_limit_w(power_limit_w)
                except DeviceError as e:
                    raise EffbenchError(_why(e, f"setting the power limit to {power_limit_w:g} W")) from None
            if sm_clock_mhz is not None:
                try:
                    g.lock_sm_clock(sm_clock_mhz)
                except DeviceError as e:
                    raise EffbenchError(_why(e, f"locking the SM clock at {sm_clock_mhz} MHz")) from None
                self._mark_locked()
        return self.in_force()

    def _mark_locked(self) -> None:
        path = self.restore_path
        if path is None or not path.exists():
            return
        data = json.loads(path.read_text())
        for g in data.get("gpus", {}).values():
            g["clocks_locked"] = True
        _atomic_write(path, data)

    def restore(self) -> list[str]:
        """Put the saved settings back and remove the restore file; returns what failed (empty when
        all went back)."""
        path = self.restore_path
        if path is None or not path.exists():
            return []
        failures = restore_from(path, self.devices.lib, {g.uuid: g for g in self.devices.gpus})
        if not failures:
            path.unlink(missing_ok=True)
        return failures

    def close(self) -> None:
        self.devices.close()


def restore_from(path: Path, lib: Nvml, devices: Optional[Mapping[str, NvidiaDevice]] = None) -> list[str]:
    """Apply the settings in a restore file through an open NVML session; the GPUs are found by UUID."""
    data = json.loads(Path(path).read_text())
    failures = []
    for uuid, saved in data.get("gpus", {}).items():
        try:
            device = (devices or {}).get(uuid) or lib.device_by_uuid(uuid)
        except Exception as e:  # noqa: BLE001
            failures.append(f"{uuid}: not found ({e})")
            continue
        failures += [f"{uuid}: {what}" for what in device.restore(saved.get("power_limit_w"), bool(saved.get("clocks_locked")))]
    return failures


def restore_pending(run_dir: Path, nvml: Any = None) -> Optional[str]:
    """Restore the settings a killed run left in ``run_dir``; a message saying what was done (None
    when nothing was pending). Raises ``EffbenchError`` when they cannot be restored. ``nvml``: the
    NVML module to use (a ``GpuControl``'s ``nv``, or the simulator; ``pynvml`` when not given)."""
    path = Path(run_dir) / RESTORE_FILE
    if not path.exists():
        return None
    try:
        lib = Nvml(nvml).open()
    except NvmlUnavailable as e:  # pynvml missing or NVML not starting: either way, not here
        cause = e.cause or e
        raise EffbenchError(f"{path} holds GPU settings an earlier run changed, but NVML is unavailable here "
                            f"({type(cause).__name__}: {cause}); restore them on the GPU's machine") from None
    try:
        failures = restore_from(path, lib)
    finally:
        lib.close()
    if failures:
        raise EffbenchError(f"restoring the GPU settings in {path} failed: {'; '.join(failures)}")
    path.unlink(missing_ok=True)
    return f"restored the GPU settings an interrupted run left in {path}"


@contextmanager
def restoring_on_signals(restore: Callable[[], Any]) -> Iterator[None]:
    """Within the block, SIGTERM ends the run like Ctrl-C (KeyboardInterrupt), so the callers'
    ``finally`` restores; ``restore`` also runs on leaving the block whatever happens."""
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread: the caller's finally still restores
        previous = None
    try:
        yield
    finally:
        try:
            restore()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m effbench.hardware.gpu_control RUN_DIR", file=sys.stderr)
        return 2
    try:
        message = restore_pending(Path(args[0]))
    except EffbenchError as e:
        print(f"effbench: error: {e}", file=sys.stderr)
        return 1
    print(message or f"nothing to restore in {args[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
