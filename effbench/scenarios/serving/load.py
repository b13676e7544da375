"""Offered load: open-loop arrivals at a rate (poisson or constant; ``inf`` = all at once) or a
closed loop of ``concurrency`` users, each sending its next request when the last one returns.

The energy window is steady state only: it opens when the warm-up requests have all returned (the
engine is warm and loaded) and closes when the last measured request is sent (after that the
engine drains, which is not the load being measured)."""
from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from effbench.scenarios.serving.client import Client, Request, Result


CLOSED_LOOP_REQUESTS_PER_S = 50  # prompts prepared per second of a closed loop's --duration


@dataclass(frozen=True)
class Load:
    rate: Optional[float] = None  # requests/s, math.inf = all at once; None for a closed loop
    concurrency: Optional[int] = None
    arrival: str = "poisson"
    requests: Optional[int] = None  # measured requests (warm-up excluded)
    duration_s: Optional[float] = None  # stop sending after this long (measured part)
    warmup_requests: int = 0
    seed: int = 0

    @property
    def planned_requests(self) -> int:
        """Measured requests to prepare: ``requests``, else enough for ``duration_s`` at the rate (a
        closed loop stops on the clock: enough for any speed a CPU engine reaches)."""
        if self.requests is not None:
            return self.requests
        duration = self.duration_s or 0.0
        if self.rate is None or math.isinf(self.rate):
            return max(8, int(duration * CLOSED_LOOP_REQUESTS_PER_S))
        return math.ceil(duration * self.rate)


def arrival_offsets(rate: float, arrival: str, n: int, seed: int) -> list[float]:
    """Send times (s from the start) of ``n`` requests offered at ``rate``."""
    if rate == math.inf:
        return [0.0] * n
    if arrival == "constant":
        return [i / rate for i in range(n)]
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


@dataclass
class PointRun:
    results: list[Result] = field(default_factory=list)
    started: float = 0.0
    window_start: Optional[float] = None
    window_end: Optional[float] = None
    window: Any = None  # the sensor's open window, stopped into ``reading``
    reading: Any = None
    max_in_flight: int = 0
    issued: list[int] = field(default_factory=list)  # indexes of requests sent (unanswered ones time out)


async def _run(client: Client, load: Load, make: Callable[[int, bool], Request], open_window: Callable[[], Any],
               budget_s: float) -> PointRun:
    """Sends the requests of one point and collects them; ``open_window()`` starts an energy window."""
    run = PointRun(started=time.perf_counter())
    warm_left = load.warmup_requests
    measured_cap = load.requests if load.requests is not None else 10**9
    deadline_measured: Optional[float] = None
    in_flight = 0
    warm_done = asyncio.Event()
    if warm_left == 0:
        warm_done.set()

    def begin_window() -> None:
        if run.window is None:
            run.window_start = time.perf_counter()
            run.window = open_window()

    def end_window() -> None:
        if run.window is not None and run.window_end is None:
            run.window_end = time.perf_counter()
            run.reading = run.window.stop()

    async def one(req: Request, scheduled: float) -> None:
        nonlocal in_flight, warm_left
        in_flight += 1
        run.issued.append(req.index)
        run.max_in_flight = max(run.max_in_flight, in_flight)
        res = await client.send(req, scheduled)
        in_flight -= 1
        run.results.append(res)
        if req.warmup:
            warm_left -= 1
            if warm_left <= 0:
                warm_done.set()

    hard_stop = run.started + budget_s
    if load.concurrency is not None:
        counter = {"next": 0}

        async def user() -> None:
            nonlocal deadline_measured
            while True:
                i = counter["next"]
                measured_i = i - load.warmup_requests
                now = time.perf_counter()
                if measured_i >= measured_cap or now > hard_stop:
                    break
                if measured_i >= 0:
                    if not warm_done.is_set():
                        await warm_done.wait()
                        continue
                    begin_window()
                    deadline_measured = deadline_measured or (now + load.duration_s if load.duration_s else None)
                    if deadline_measured is not None and now >= deadline_measured:
                        break
                counter["next"] += 1
                await one(make(i, measured_i < 0), time.perf_counter())
            end_window()  # a closed loop is steady until its first user stops

        await asyncio.gather(*(user() for _ in range(load.concurrency)))
        return run

    assert load.rate is not None
    n_measured = load.planned_requests
    offsets = arrival_offsets(load.rate, load.arrival, load.warmup_requests + n_measured, load.seed)
    tasks = []
    warm_offsets = offsets[:load.warmup_requests]
    base = time.perf_counter()
    for i, off in enumerate(warm_offsets):
        await _sleep_until(base + off)
        tasks.append(asyncio.create_task(one(make(i, True), base + off)))
    await warm_done.wait()  # warm-up drained: the measured arrivals and the window start together
    begin_window()
    base = time.perf_counter()
    first = offsets[load.warmup_requests] if n_measured else 0.0
    for k in range(n_measured):
        i = load.warmup_requests + k
        at = base + offsets[i] - first
        if load.duration_s is not None and offsets[i] - first > load.duration_s:
            break
        if at > hard_stop:
            break
        await _sleep_until(at)
        tasks.append(asyncio.create_task(one(make(i, False), at)))
    end_window()
    if tasks:
        await asyncio.wait(tasks, timeout=max(1.0, hard_stop - time.perf_counter()))
        for t in tasks:
            t.cancel()
    return run


async def _sleep_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def run_point(client_factory: Callable[[], Client], load: Load, make: Callable[[int, bool], Request],
              open_window: Callable[[], Any], budget_s: float) -> PointRun:
    """One load point, on its own event loop (the sweep itself is synchronous)."""
    async def main() -> PointRun:
        client = client_factory()
        try:
            return await _run(client, load, make, open_window, budget_s)
        finally:
            await client.close()

    return asyncio.run(main())
