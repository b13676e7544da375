"""CPU seconds of the workload (a leaf: the estimate sensor and the interference probe both count
this process, its finished children and a serving engine's processes as the workload)."""
from __future__ import annotations

import os
from typing import Iterable

import psutil


def tree_cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds of each process in ``pids`` and its live children (a server's workers);
    processes that are gone count nothing."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
    return total


def workload_cpu_seconds(pids: Iterable[int] = ()) -> float:
    """This process's CPU seconds with its waited-for children, plus ``pids`` and their live children."""
    t = psutil.Process(os.getpid()).cpu_times()
    return t.user + t.system + t.children_user + t.children_system + tree_cpu_seconds(pids)
