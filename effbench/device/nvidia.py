"""NVIDIA GPUs through NVML (``pynvml`` from nvidia-ml-py): the one place effbench calls NVML.

- ``Nvml``: one NVML library session. ``nvmlInit`` runs when the first session of a module opens and
  ``nvmlShutdown`` when the last one closes (reference counted), so a sensor, the GPU control and the
  environment block can each hold NVML without shutting it under the others. Every call goes through
  ``Nvml.call``, which turns an ``NVMLError`` into a typed ``DeviceError`` (``errors``).
- ``NvidiaDevice``: one GPU: identity (NVML index, CUDA index, UUID, name, the MIG slice a run is
  on), the energy counter and power readings, the facts a record states (limits, clocks, temperature,
  processes), the power-limit and locked-clock setters with read-back, and ``restore``.
- ``NvidiaGPUs``: the GPUs one effbench device string (``cuda``, ``cuda:N``) selects, in CUDA order,
  ``CUDA_VISIBLE_DEVICES`` respected (indices, UUIDs or unique UUID prefixes, MIG device UUIDs
  resolved to their parent GPU). CUDA orders devices fastest-first unless
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; NVML orders by PCI bus, so on a machine with mixed GPUs set
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or use UUIDs.

``pynvml`` is imported when a session first opens, never at import. A stand-in module (the simulator,
``sensors.simulated.FakeNvml``) plugs in here: passed as ``nvml`` to ``Nvml``/``NvidiaGPUs.open``, or
for code that takes no such argument, installed process-wide with ``plugged(module)``.
"""
from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional, Sequence, TypeVar

from effbench.device.errors import (
    DeviceError,
    DeviceUnavailable,
    GpuLost,
    InvalidArgument,
    NotFound,
    NotPermitted,
    NotSupported,
    renamed,
)

ENV_VISIBLE = "CUDA_VISIBLE_DEVICES"
INSTALL_HINT = "nvidia-ml-py is not installed (pip install nvidia-ml-py)"

# NVML return codes (nvmlReturn_t); fixed across NVML versions.
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
_TYPED_BY_CODE: dict[int, type[DeviceError]] = {
    NVML_ERROR_INVALID_ARGUMENT: InvalidArgument,
    NVML_ERROR_NOT_SUPPORTED: NotSupported,
    NVML_ERROR_NO_PERMISSION: NotPermitted,
    NVML_ERROR_NOT_FOUND: NotFound,
    NVML_ERROR_FUNCTION_NOT_FOUND: NotSupported,
    NVML_ERROR_GPU_IS_LOST: GpuLost,
}
# nvmlValueType_t -> the field of nvmlValue_t that holds the value.
_VALUE_ATTR = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
_CLOCKS = {"sm": ("NVML_CLOCK_SM", 1), "mem": ("NVML_CLOCK_MEM", 2)}


class NvmlUnavailable(DeviceUnavailable):
    """NVML cannot be used here: nvidia-ml-py missing, no driver, a driver not loaded, no GPU."""


class GpuNotVisible(DeviceUnavailable):
    """NVML works but the device string or ``CUDA_VISIBLE_DEVICES`` selects no GPU."""


def text(value: Any) -> str:
    """NVML strings: ``bytes`` from older pynvml, ``str`` from newer."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def typed(e: BaseException) -> DeviceError:
    """The typed error for an ``NVMLError``: class by return code, the NVML class's name and text kept."""
    code = getattr(e, "value", None)
    try:
        message = str(e)
    except Exception:  # noqa: BLE001 - pynvml formats its text through the library; keep the code at least
        message = f"NVML error {code}"
    base = _TYPED_BY_CODE.get(code, DeviceError) if isinstance(code, int) else DeviceError
    return renamed(base, type(e).__name__)(message, code if isinstance(code, int) else None)


# -- the library ------------------------------------------------------------------------------

_plugged: list[Any] = []


@contextmanager
def plugged(module: Any) -> Iterator[Any]:
    """Within the block, every NVML session opened without an explicit module uses ``module`` (a
    pynvml stand-in such as ``sensors.simulated.FakeNvml``) instead of importing ``pynvml``."""
    _plugged.append(module)
    try:
        yield module
    finally:
        _plugged.remove(module)


def _module(nvml: Any = None) -> Any:
    if nvml is not None:
        return nvml
    if _plugged:
        return _plugged[-1]
    try:
        import pynvml
    except ImportError as e:
        raise NvmlUnavailable(INSTALL_HINT, e) from None
    return pynvml


def _init_failure(e: BaseException) -> str:
    code = getattr(e, "value", None)
    if code == NVML_ERROR_LIBRARY_NOT_FOUND:
        return "no NVIDIA driver on this machine (NVML library libnvidia-ml.so not found)"
    if code == NVML_ERROR_DRIVER_NOT_LOADED:
        return "the NVIDIA driver is installed but not loaded (NVML: Driver Not Loaded)"
    detail = " ".join(str(e).split())
    return f"NVML failed to start ({type(e).__name__}: {detail})" if detail else f"NVML failed to start ({type(e).__name__})"


class _Refs:
    """How many open sessions each NVML module has (weakly keyed: a dropped simulator is forgotten)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._weak: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._strong: dict[int, int] = {}  # modules that cannot be weakly referenced, by id

    def get(self, module: Any) -> int:
        try:
            return self._weak.get(module, 0)
        except TypeError:
            return self._strong.get(id(module), 0)

    def set(self, module: Any, n: int) -> None:
        try:
            if n:
                self._weak[module] = n
            else:
                self._weak.pop(module, None)
        except TypeError:
            if n:
                self._strong[id(module)] = n
            else:
                self._strong.pop(id(module), None)


_REFS = _Refs()


class Nvml:
    """One NVML session on ``module`` (``pynvml`` when None, or the module ``plugged`` in). ``open``
    initialises NVML if no other session holds it; ``close`` shuts it down when none is left. Raises
    ``NvmlUnavailable`` (one line: why) when pynvml is missing or NVML does not start."""

    def __init__(self, module: Any = None) -> None:
        self.nv = _module(module)
        self._held = False

    @staticmethod
    def references(module: Any) -> int:
        """Open sessions on ``module`` (for tests and diagnostics)."""
        with _REFS.lock:
            return _REFS.get(module)

    def open(self) -> "Nvml":
        with _REFS.lock:
            if self._held:
                return self
            n = _REFS.get(self.nv)
            if n == 0:
                try:
                    self.nv.nvmlInit()
                except self.nv.NVMLError as e:
                    raise NvmlUnavailable(_init_failure(e), e) from None
            _REFS.set(self.nv, n + 1)
            self._held = True
        return self

    def close(self) -> None:
        with _REFS.lock:
            if not self._held:
                return
            self._held = False
            n = max(_REFS.get(self.nv) - 1, 0)
            _REFS.set(self.nv, n)
            if n == 0:
                try:
                    self.nv.nvmlShutdown()
                except Exception:  # noqa: BLE001 - nothing useful to do about a failing shutdown
                    pass

    def __enter__(self) -> "Nvml":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- calls --------------------------------------------------------------------------------
    def call(self, name: str, *args: Any) -> Any:
        """``pynvml.<name>(*args)``; an NVMLError becomes its typed ``DeviceError``, a function this
        binding lacks a ``NotSupported``."""
        fn = getattr(self.nv, name, None)
        if fn is None:
            raise NotSupported(f"this NVML binding has no {name}", NVML_ERROR_FUNCTION_NOT_FOUND)
        try:
            return fn(*args)
        except self.nv.NVMLError as e:
            raise typed(e) from e

    def constant(self, name: str, default: Optional[int] = None) -> Optional[int]:
        return getattr(self.nv, name, default)

    def count(self) -> int:
        return int(self.call("nvmlDeviceGetCount"))

    def handle_by_index(self, index: int) -> Any:
        return self.call("nvmlDeviceGetHandleByIndex", index)

    def handle_by_uuid(self, uuid: str) -> Any:
        return self.call("nvmlDeviceGetHandleByUUID", uuid)

    def uuid(self, handle: Any) -> str:
        return text(self.call("nvmlDeviceGetUUID", handle))

    def name(self, handle: Any) -> str:
        return text(self.call("nvmlDeviceGetName", handle))

    def driver_version(self) -> Optional[str]:
        try:
            return text(self.call("nvmlSystemGetDriverVersion"))
        except Exception:  # noqa: BLE001 - NotSupported etc.: the fact is simply unknown
            return None

    def names(self) -> list[str]:
        """Every GPU NVML sees, in NVML order (``CUDA_VISIBLE_DEVICES`` not applied)."""
        return [self.name(self.handle_by_index(i)) for i in range(self.count())]

    def device_by_uuid(self, uuid: str) -> "NvidiaDevice":
        """The GPU with this UUID, whether CUDA shows it or not (restoring settings); nothing probed."""
        handle = self.handle_by_uuid(uuid)
        return NvidiaDevice(self, handle, -1, uuid, "")

    def probe(self, handle: Any, nvml_index: int, uuid: str, cuda_index: Optional[int] = None,
              mig_slice: Optional[str] = None) -> "NvidiaDevice":
        """The GPU with what it can report: an energy counter (Volta+), the instantaneous power field, MIG."""
        device = NvidiaDevice(self, handle, nvml_index, uuid, self.name(handle), cuda_index, mig_slice=mig_slice)
        try:
            device.energy_mj()
            device.has_counter = True
        except DeviceError:
            device.has_counter = False
        try:
            device.has_instant = device._instant_field().nvmlReturn == 0
        except DeviceError:
            device.has_instant = False
        device.mig_mode = device._mig_mode()
        return device


def gpu_names(nvml: Any = None) -> list[str]:
    """The names of every NVIDIA GPU NVML sees; empty when there is no NVML, driver or GPU."""
    try:
        lib = Nvml(nvml).open()
    except Exception:  # noqa: BLE001 - no driver, no library: simply no NVIDIA GPU
        return []
    try:
        return lib.names()
    finally:
        lib.close()


# -- one GPU ----------------------------------------------------------------------------------

@dataclass(eq=False)
class NvidiaDevice:
    """One NVIDIA GPU. Counters, power and utilisation raise a typed ``DeviceError`` when NVML fails
    (a lost GPU ends a window, not the sweep); the facts a record states (limits, clocks, temperature,
    processes) answer None when NVML cannot say. ``cuda_index`` is None for a GPU found by UUID only."""

    lib: Nvml
    handle: Any
    nvml_index: int
    uuid: str
    name: str
    cuda_index: Optional[int] = None
    has_counter: bool = False  # nvmlDeviceGetTotalEnergyConsumption works (Volta and newer)
    has_instant: bool = False  # the NVML_FI_DEV_POWER_INSTANT field works (newer drivers)
    mig_mode: Optional[bool] = None  # None: the GPU cannot say (no MIG support)
    mig_slice: Optional[str] = None  # the MIG device UUID the run is on, when CUDA shows a slice

    @property
    def domain(self) -> str:
        """``gpu:N``, N the CUDA index: the energy domain effbench records."""
        return f"gpu:{self.cuda_index}"

    def _call(self, name: str, *args: Any) -> Any:
        return self.lib.call(name, self.handle, *args)

    def _fact(self, name: str, *args: Any) -> Any:
        try:
            return self._call(name, *args)
        except Exception:  # noqa: BLE001 - NotSupported etc.: the fact is simply unknown
            return None

    def _mig_mode(self) -> Optional[bool]:
        try:
            current = self._call("nvmlDeviceGetMigMode")
        except DeviceError:
            return None  # no MIG on this GPU (NotSupported) or an old binding
        current = current[0] if isinstance(current, (tuple, list)) else current
        return bool(current)

    # -- counters and power -------------------------------------------------------------------
    def energy_mj(self) -> int:
        """The total energy counter, mJ since the driver loaded."""
        return int(self._call("nvmlDeviceGetTotalEnergyConsumption"))

    def _instant_field(self) -> Any:
        field = self.lib.constant("NVML_FI_DEV_POWER_INSTANT")
        if field is None:
            raise NotSupported("this NVML binding has no NVML_FI_DEV_POWER_INSTANT", NVML_ERROR_NOT_SUPPORTED)
        return self._call("nvmlDeviceGetFieldValues", [field])[0]

    def power_usage_w(self) -> float:
        """``nvmlDeviceGetPowerUsage``: instantaneous on GA100 and older, a 1 s average on later GPUs."""
        return self._call("nvmlDeviceGetPowerUsage") / 1000.0

    def power_w(self) -> float:
        """The instantaneous power field where the GPU has it, else ``nvmlDeviceGetPowerUsage``."""
        if self.has_instant:
            value = self._instant_field()
            if value.nvmlReturn == 0:
                return float(getattr(value.value, _VALUE_ATTR.get(value.valueType, "uiVal"))) / 1000.0
        return self.power_usage_w()

    def utilization(self) -> float:
        """GPU utilisation, 0..1 (NVML's own average over 1/6 s to 1 s)."""
        return float(self._call("nvmlDeviceGetUtilizationRates").gpu) / 100.0

    # -- facts --------------------------------------------------------------------------------
    def power_limit_w(self) -> Optional[float]:
        mw = self._fact("nvmlDeviceGetEnforcedPowerLimit")
        return None if mw is None else mw / 1000.0

    def default_power_limit_w(self) -> Optional[float]:
        mw = self._fact("nvmlDeviceGetPowerManagementDefaultLimit")
        return None if mw is None else mw / 1000.0

    def power_limit_range_w(self) -> Optional[tuple[float, float]]:
        limits = self._fact("nvmlDeviceGetPowerManagementLimitConstraints")
        if limits is None:
            return None
        lo, hi = limits
        return lo / 1000.0, hi / 1000.0

    def clock_mhz(self, kind: str = "sm") -> Optional[int]:
        """The current ``sm`` or ``mem`` clock."""
        name, default = _CLOCKS[kind]
        value = self._fact("nvmlDeviceGetClockInfo", self.lib.constant(name, default))
        return None if value is None else int(value)

    def max_clock_mhz(self, kind: str = "sm") -> Optional[int]:
        name, default = _CLOCKS[kind]
        value = self._fact("nvmlDeviceGetMaxClockInfo", self.lib.constant(name, default))
        return None if value is None else int(value)

    def temperature_c(self) -> Optional[int]:
        return self._fact("nvmlDeviceGetTemperature", self.lib.constant("NVML_TEMPERATURE_GPU", 0))

    def persistence_mode(self) -> Optional[bool]:
        value = self._fact("nvmlDeviceGetPersistenceMode")
        return None if value is None else bool(value)

    def processes(self) -> Optional[list[dict[str, Any]]]:
        """Compute processes on this GPU (pid, GPU memory in bytes); None when NVML cannot say."""
        procs = self._fact("nvmlDeviceGetComputeRunningProcesses")
        if procs is None:
            return None
        out = []
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            out.append({"pid": int(p.pid), "used_memory_bytes": int(used) if isinstance(used, int) else None})
        return out

    # -- settings (root) ----------------------------------------------------------------------
    def set_power_limit_w(self, watts: float) -> Optional[float]:
        """Set the power limit; returns the limit NVML then enforces (read back)."""
        self._call("nvmlDeviceSetPowerManagementLimit", int(round(watts * 1000)))
        return self.power_limit_w()

    def lock_sm_clock(self, mhz: int) -> Optional[int]:
        """Lock the SM clock at ``mhz``; returns the SM clock then in force (the driver may round)."""
        self._call("nvmlDeviceSetGpuLockedClocks", int(mhz), int(mhz))
        return self.clock_mhz("sm")

    def reset_locked_clocks(self) -> None:
        """Undo a clock lock: the driver's default (NVML has no getter for an earlier lock)."""
        self._call("nvmlDeviceResetGpuLockedClocks")

    def restore(self, power_limit_w: Optional[float], clocks_locked: bool) -> list[str]:
        """Put a saved power limit back and reset a clock lock, each tried whatever the other did;
        returns what failed, one phrase each (empty when all went back)."""
        failures = []
        if power_limit_w is not None:
            try:
                self._call("nvmlDeviceSetPowerManagementLimit", int(round(power_limit_w * 1000)))
            except Exception as e:  # noqa: BLE001 - say what failed and go on with the rest
                failures.append(f"power limit back to {power_limit_w:g} W failed ({e})")
        if clocks_locked:
            try:
                self.reset_locked_clocks()
            except Exception as e:  # noqa: BLE001
                failures.append(f"clock lock reset failed ({e})")
        return failures


# -- selection --------------------------------------------------------------------------------

def visible_indices(env: Optional[str], uuids: list[str], mig_parents: Optional[dict[str, int]] = None) -> list[int]:
    """NVML indices of the GPUs CUDA shows, in CUDA order. Like CUDA, parsing stops at the first
    entry that names no GPU; an unset variable shows every GPU. ``mig_parents`` maps MIG device
    UUIDs (``MIG-...``) to their parent GPU's NVML index: a slice resolves to its GPU."""
    if env is None:
        return list(range(len(uuids)))
    out: list[int] = []
    for token in (t.strip() for t in env.split(",")):
        if token.startswith("MIG-"):
            if mig_parents is None or token not in mig_parents:
                break
            index = mig_parents[token]
        elif token.lstrip("-").isdigit():
            index = int(token)
            if not 0 <= index < len(uuids):
                break
        else:  # a full UUID or a unique prefix, with or without "GPU-"
            matches = [i for i, u in enumerate(uuids) if token and (u.startswith(token) or u.startswith("GPU-" + token))]
            if len(matches) != 1:
                break
            index = matches[0]
        if index in out:
            break
        out.append(index)
    return out


def mig_parents(lib: Nvml, visible: Optional[str], uuids: Sequence[str]) -> dict[str, int]:
    """MIG device UUIDs named in ``CUDA_VISIBLE_DEVICES`` -> their parent GPU's NVML index."""
    out: dict[str, int] = {}
    for token in (t.strip() for t in (visible or "").split(",")):
        if not token.startswith("MIG-"):
            continue
        try:
            parent = lib.call("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", lib.handle_by_uuid(token))
            out[token] = list(uuids).index(lib.uuid(parent))
        except (DeviceError, ValueError):
            continue  # not a MIG device NVML knows: CUDA would stop here too
    return out


def select(lib: Nvml, device: str, env: Mapping[str, str]) -> list[NvidiaDevice]:
    """The GPUs ``device`` (``cuda`` or ``cuda:N``) selects among those ``CUDA_VISIBLE_DEVICES`` shows."""
    count = lib.count()
    if count == 0:
        raise NvmlUnavailable("NVML sees no NVIDIA GPU")
    handles = [lib.handle_by_index(i) for i in range(count)]
    uuids = [lib.uuid(h) for h in handles]
    cvd = env.get(ENV_VISIBLE)
    parents = mig_parents(lib, cvd, uuids)
    visible = visible_indices(cvd, uuids, parents)
    if not visible:
        raise GpuNotVisible(f"{ENV_VISIBLE}={cvd!r} hides every GPU")
    slices = {index: mig for mig, index in parents.items()}
    wanted = list(enumerate(visible))
    kind, _, index = device.partition(":")
    if kind == "cuda" and index:
        if not index.isdigit() or int(index) >= len(visible):
            raise GpuNotVisible(f"{device} is not a visible GPU ({len(visible)} visible)")
        wanted = [wanted[int(index)]]
    return [lib.probe(handles[nvml_i], nvml_i, uuids[nvml_i], cuda_i, slices.get(nvml_i)) for cuda_i, nvml_i in wanted]


_GPUs = TypeVar("_GPUs", bound="NvidiaGPUs")


class NvidiaGPUs:
    """The GPUs one effbench device string selects, in CUDA order, holding one NVML session until
    ``close``. ``open`` raises ``NvmlUnavailable`` or ``GpuNotVisible`` (an ``UnsupportedError``)
    with a one-line reason when NVML cannot serve this device here."""

    def __init__(self, lib: Nvml, gpus: list[NvidiaDevice]) -> None:
        self.lib = lib
        self.gpus = gpus

    @classmethod
    def open(cls: type[_GPUs], device: str = "cuda", nvml: Any = None, env: Optional[Mapping[str, str]] = None) -> _GPUs:
        import os

        lib = Nvml(nvml).open()
        try:
            gpus = select(lib, device, os.environ if env is None else env)
        except BaseException:
            lib.close()
            raise
        return cls(lib, gpus)

    @property
    def nv(self) -> Any:
        """The NVML module in use (``pynvml`` or a stand-in)."""
        return self.lib.nv

    def by_uuid(self, uuid: str) -> Optional[NvidiaDevice]:
        return next((g for g in self.gpus if g.uuid == uuid), None)

    def driver_version(self) -> Optional[str]:
        return self.lib.driver_version()

    def close(self) -> None:
        self.lib.close()

    def __enter__(self: _GPUs) -> _GPUs:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
