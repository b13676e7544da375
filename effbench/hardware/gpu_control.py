"""Power-limit and locked-clock settings of NVIDIA GPUs, for the ``--power-limits`` and
``--gpu-clocks`` sweep axes: set through NVML, read back (what is in force is what a record states),
and restored.

Before the first change the original settings are written to ``gpu-restore.json`` in the run
directory, so they survive a killed run: the sweep restores them at its end, on error and on
SIGINT/SIGTERM; after a SIGKILL the next run in that directory restores them first
(``restore_pending``), as does ``python -m effbench.hardware.gpu_control RUN_DIR``.

Locked clocks have no NVML getter for the previous lock, so restoring clocks means resetting the
lock (``nvmlDeviceResetGpuLockedClocks``), the driver's default. Setting either needs root.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from effbench.errors import EffbenchError

RESTORE_FILE = "gpu-restore.json"
_NO_PERMISSION = 4
_NOT_SUPPORTED = 3
_INVALID_ARGUMENT = 2


@dataclass(frozen=True)
class Applied:
    """What is in force on one GPU after a change, read back from NVML."""

    power_limit_w: Optional[float]
    sm_clock_mhz: Optional[int]


def _why(e: Exception, what: str) -> str:
    code = getattr(e, "value", None)
    if code == _NO_PERMISSION:
        return f"{what} needs root (NVML: Insufficient Permissions): run effbench as root, or leave the option out"
    if code == _NOT_SUPPORTED:
        return f"{what} is not supported on this GPU (NVML: Not Supported)"
    if code == _INVALID_ARGUMENT:
        return f"{what}: the value is outside this GPU's range (NVML: Invalid Argument)"
    return f"{what} failed (NVML: {' '.join(str(e).split()) or type(e).__name__})"


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _atomic_write(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class GpuControl:
    """Settings of the GPUs an open ``NvmlDevices`` selected (``sensors.nvml.open_gpu_control``
    opens one for a device string: CUDA_VISIBLE_DEVICES and MIG handled in one place)."""

    def __init__(self, devices: Any, run_dir: Optional[Path] = None) -> None:
        self.devices = devices
        self.nv = devices.nv
        self.run_dir = Path(run_dir) if run_dir is not None else None

    @property
    def restore_path(self) -> Optional[Path]:
        return None if self.run_dir is None else self.run_dir / RESTORE_FILE

    # -- reading -------------------------------------------------------------------------------
    def _power_limit_w(self, handle: Any) -> Optional[float]:
        try:
            return self.nv.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0
        except Exception:  # noqa: BLE001 - unknown is an honest answer
            return None

    def _sm_clock(self, handle: Any) -> Optional[int]:
        try:
            return int(self.nv.nvmlDeviceGetClockInfo(handle, self.nv.NVML_CLOCK_SM))
        except Exception:  # noqa: BLE001
            return None

    def in_force(self) -> dict[str, Applied]:
        return {g.uuid: Applied(self._power_limit_w(g.handle), self._sm_clock(g.handle)) for g in self.devices.gpus}

    def limits_range_w(self) -> dict[str, tuple[float, float]]:
        out = {}
        for g in self.devices.gpus:
            try:
                lo, hi = self.nv.nvmlDeviceGetPowerManagementLimitConstraints(g.handle)
                out[g.uuid] = (lo / 1000.0, hi / 1000.0)
            except Exception:  # noqa: BLE001
                continue
        return out

    # -- changing ------------------------------------------------------------------------------
    def save_originals(self) -> None:
        """Write the settings to restore to the run directory (kept from an earlier, killed run)."""
        path = self.restore_path
        if path is None or path.exists():  # an earlier run's originals are the true ones
            return
        gpus = {}
        for g in self.devices.gpus:
            gpus[g.uuid] = {"name": g.name, "power_limit_w": self._power_limit_w(g.handle), "clocks_locked": False}
        _atomic_write(path, {"pid": os.getpid(), "gpus": gpus})

    def check(self, power_limits_w: list[float], sm_clocks_mhz: list[int]) -> None:
        """Refuse values outside each GPU's range before anything is loaded, in one line."""
        for uuid, (lo, hi) in self.limits_range_w().items():
            bad = [w for w in power_limits_w if not lo <= w <= hi]
            if bad:
                raise EffbenchError(f"--power-limits {','.join(f'{w:g}' for w in bad)}: outside this GPU's range "
                                    f"{lo:g}-{hi:g} W ({uuid})")
        for g in self.devices.gpus:
            try:
                top = int(self.nv.nvmlDeviceGetMaxClockInfo(g.handle, self.nv.NVML_CLOCK_SM))
            except Exception:  # noqa: BLE001
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
                    self.nv.nvmlDeviceSetPowerManagementLimit(g.handle, int(round(power_limit_w * 1000)))
                except self.nv.NVMLError as e:
                    raise EffbenchError(_why(e, f"setting the power limit to {power_limit_w:g} W")) from None
            if sm_clock_mhz is not None:
                try:
                    self.nv.nvmlDeviceSetGpuLockedClocks(g.handle, int(sm_clock_mhz), int(sm_clock_mhz))
                except self.nv.NVMLError as e:
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
        failures = restore_from(path, self.nv, {g.uuid: g.handle for g in self.devices.gpus})
        if not failures:
            path.unlink(missing_ok=True)
        return failures

    def close(self) -> None:
        self.devices.close()


def restore_from(path: Path, nv: Any, handles: Optional[dict[str, Any]] = None) -> list[str]:
    """Apply the settings in a restore file through ``nv``; the GPUs are found by UUID."""
    data = json.loads(Path(path).read_text())
    failures = []
    for uuid, saved in data.get("gpus", {}).items():
        try:
            handle = (handles or {}).get(uuid) or nv.nvmlDeviceGetHandleByUUID(uuid)
        except Exception as e:  # noqa: BLE001
            failures.append(f"{uuid}: not found ({e})")
            continue
        if saved.get("power_limit_w") is not None:
            try:
                nv.nvmlDeviceSetPowerManagementLimit(handle, int(round(saved["power_limit_w"] * 1000)))
            except Exception as e:  # noqa: BLE001
                failures.append(f"{uuid}: power limit back to {saved['power_limit_w']:g} W failed ({e})")
        if saved.get("clocks_locked"):
            try:
                nv.nvmlDeviceResetGpuLockedClocks(handle)
            except Exception as e:  # noqa: BLE001
                failures.append(f"{uuid}: clock lock reset failed ({e})")
    return failures


def restore_pending(run_dir: Path, nvml: Any = None) -> Optional[str]:
    """Restore the settings a killed run left in ``run_dir``; a message saying what was done (None
    when nothing was pending). Raises ``EffbenchError`` when they cannot be restored. ``nvml``: an
    initialised NVML (``pynvml`` is imported and initialised when not given)."""
    path = Path(run_dir) / RESTORE_FILE
    if not path.exists():
        return None
    own = nvml is None
    nv = nvml
    if own:
        try:
            import pynvml as nv  # type: ignore[no-redef]

            nv.nvmlInit()
        except Exception as e:  # noqa: BLE001 - ImportError or an NVMLError: either way, not here
            raise EffbenchError(f"{path} holds GPU settings an earlier run changed, but NVML is unavailable here "
                                f"({type(e).__name__}: {e}); restore them on the GPU's machine") from None
    try:
        failures = restore_from(path, nv)
    finally:
        if own:
            try:
                nv.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass
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
