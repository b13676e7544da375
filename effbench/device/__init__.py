"""The device layer: the one place effbench talks to a GPU vendor's library (Zeus's ``device/`` is the
model). ``nvidia`` wraps NVML: the library session (one ``nvmlInit``/``nvmlShutdown`` owner), device
selection under ``CUDA_VISIBLE_DEVICES`` and MIG, the energy counter and power readings, the
power-limit and locked-clock setters with read-back and restore; ``errors`` holds the typed errors
its calls raise. Sensors (``sensors.nvml``, ``sensors.estimate``), detection (``hardware.detection``)
and GPU control (``hardware.gpu_control``) use it; nothing else imports ``pynvml``.

Importing this package imports no vendor library: ``pynvml`` loads when a session first opens.
"""
from __future__ import annotations

from effbench.device import errors
from effbench.device.errors import *  # noqa: F403 - the typed errors are the layer's API too
from effbench.device.nvidia import GpuNotVisible, NvidiaDevice, NvidiaGPUs, Nvml, NvmlUnavailable, gpu_names, plugged

__all__ = ["GpuNotVisible", "NvidiaDevice", "NvidiaGPUs", "Nvml", "NvmlUnavailable", "gpu_names", "plugged"]
__all__ += errors.__all__
