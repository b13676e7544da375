"""Offered load: open-loop arrivals at a rate (poisson or constant; ``inf`` = all at once) or a
closed loop of ``concurrency`` users, each sending its next request when the last one returns.

Two windows per point, each with its own sensor window (docs/method.md, "Serving throughput"):
- **whole**: from the first measured send to the last measured answer, the span over which
  `vllm bench serve`, GuideLLM and AIPerf divide completed requests and output tokens;
- **steady**: from the first measured answer (every request then in flight was sent under load)
  to the last measured send (after it the engine only drains). A point whose first answer comes
  back after its last send has no steady state."""
from __future__ import annotations

import asyncio
import contextlib
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
    schedule: Optional[tuple[float, ...]] = None  # a replayed trace's send times (s), instead of arrivals at ``rate``

    @property
    def planned_requests(self) -> int:
        """Measured requests to prepare: ``requests``, else enough for ``duration_s`` at the rate (a
        closed loop stops on the clock: enough for any speed a CPU engine reaches)."""
        if self.schedule is not None:
            return len(self.schedule)
        if self.requests is not None:
            return self.requests
        duration = self.duration_s or 0.0
        if self.rate is None or math.isinf(self.rate):
            return max(8, int(duration * CLOSED_LOOP_REQUESTS_PER_S))
        return math.ceil(duration * self.rate)


def arrival_offsets(rate: float, arrival: str, n: int, seed: int) -> list[float]:
    """Send times (s from the first send) of ``n`` requests offered at ``rate``. A seeded Poisson
    sample is rescaled so that its own mean rate, (n - 1) / (last - first send), is exactly ``rate``
    (as `vllm bench serve` rescales its sample): a short point offers the rate asked, not a draw's."""
    if rate == math.inf:
        return [0.0] * n
    if arrival == "constant" or n < 3:
        return [i / rate for i in range(n)]
    rng = random.Random(seed)
    gaps = [rng.expovariate(rate) for _ in range(n - 1)]
    scale = (n - 1) / rate / sum(gaps)
    out, t = [0.0], 0.0
    for g in gaps:
        t += g * scale
        out.append(t)
    return out


@dataclass
class Span:
    """One window of a point: its ends (``time.perf_counter()``) and the sensor's reading of it."""

    start: Optional[float] = None
    end: Optional[float] = None
    window: Any = None  # the sensor's open window, stopped into ``reading``
    reading: Any = None

    def open(self, open_window: Callable[[], Any]) -> None:
        if self.start is None:
            self.start = time.perf_counter()
            self.window = open_window()

    def close(self) -> None:
        if self.window is not None and self.end is None:
            self.end = time.perf_counter()
            self.reading = self.window.stop()

    @property
    def seconds(self) -> float:
        return (self.end - self.start) if self.start is not None and self.end is not None else 0.0


@dataclass
class PointRun:
    results: list[Result] = field(default_factory=list)
    started: float = 0.0
    whole: Span = field(default_factory=Span)
    steady: Span = field(default_factory=Span)
    sending_done: bool = False
    steady_missed: Optional[str] = None  # why no steady window opened
    max_in_flight: int = 0
    issued: list[int] = field(default_factory=list)  # indexes of requests sent (unanswered ones time out)
    server_metrics: Any = None  # server_metrics.ServerMetrics over the measured part, when scraped

    def answered_measured(self, open_window: Callable[[], Any]) -> None:
        """The first measured answer opens the steady window, if requests are still to be sent."""
        if self.steady.start is not None or self.steady_missed:
            return
        if self.sending_done:
            self.steady_missed = "every measured request was sent before the first answer came back"
        else:
            self.steady.open(open_window)

    def sending_finished(self) -> None:
        """No measured request is sent after this: the drain begins and the steady window ends."""
        self.sending_done = True
        self.steady.close()


async def _run(client: Client, load: Load, make: Callable[[int, bool], Request], open_window: Callable[[], Any],
               budget_s: float, scraper: Any = None) -> PointRun:
    """Sends the requests of one point and collects them; ``open_window()`` starts an energy window;
    ``scraper`` (a server_metrics.MetricsScraper) reads the server's /metrics over the measured part."""
    run = PointRun(started=time.perf_counter())
    warm_left = load.warmup_requests
    in_flight = 0
    warm_done = asyncio.Event()
    if warm_left == 0:
        warm_done.set()
    # The measured requests start once the warm-up has drained and the server's counters have been read
    # (the window's baseline): a measured request the first scrape saw would be lost from the window, a
    # warm-up request it did not see would be counted in it.
    measured_ready = asyncio.Event()
    if scraper is not None and warm_left:
        await scraper.count_before(client.base_url)

    async def open_measured() -> None:
        await warm_done.wait()  # the warm-up's latencies stay out of the server's histograms
        if scraper is not None:
            await scraper.start(client.base_url, finished_since_count=sum(1 for r in run.results if r.warmup and r.ok))
        measured_ready.set()

    scraping = asyncio.create_task(open_measured())
    if warm_left == 0:
        await scraping  # nothing to wait for: the first scrape comes before the first send

    async def one(req: Request, scheduled: float) -> None:
        nonlocal in_flight, warm_left
        if not req.warmup:
            run.whole.open(open_window)
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
        else:
            run.answered_measured(open_window)

    hard_stop = run.started + budget_s
    if load.concurrency is not None:
        await _closed_loop(run, load, make, one, measured_ready, hard_stop)
    else:
        await _open_loop(run, load, make, one, measured_ready, hard_stop)
    run.sending_finished()
    run.whole.close()
    if not scraping.done():  # the warm-up never drained (the point's time ran out)
        scraping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scraping
    elif scraper is not None:
        run.server_metrics = await scraper.stop(expected_requests=sum(1 for r in run.results if r.ok and not r.warmup))
    return run


async def _closed_loop(run: PointRun, load: Load, make: Callable[[int, bool], Request], one: Callable[..., Any],
                       measured_ready: asyncio.Event, hard_stop: float) -> None:
    assert load.concurrency is not None
    cap = load.requests if load.requests is not None else 10**9
    counter = {"next": 0}
    deadline: list[float] = []

    async def user() -> None:
        while True:
            i = counter["next"]
            measured_i = i - load.warmup_requests
            now = time.perf_counter()
            if measured_i >= 0 and not measured_ready.is_set():
                await measured_ready.wait()
                continue
            if measured_i >= 0 and not deadline and load.duration_s:
                deadline.append(now + load.duration_s)
            if measured_i >= cap or now > hard_stop or (deadline and now >= deadline[0]):
                run.sending_finished()  # the first user to stop ends the steady state
                break
            counter["next"] += 1
            if measured_i == cap - 1:
                run.sending_finished()
            await one(make(i, measured_i < 0), time.perf_counter())

    await asyncio.gather(*(user() for _ in range(load.concurrency)))


async def _open_loop(run: PointRun, load: Load, make: Callable[[int, bool], Request], one: Callable[..., Any],
                     measured_ready: asyncio.Event, hard_stop: float) -> None:
    assert load.rate is not None
    tasks = []
    base = time.perf_counter()
    for i, off in enumerate(arrival_offsets(load.rate, load.arrival, load.warmup_requests, load.seed + 1)):
        await _sleep_until(base + off)
        tasks.append(asyncio.create_task(one(make(i, True), base + off)))
    await measured_ready.wait()  # the measured arrivals start on a warm engine, after the baseline scrape
    offsets = (list(load.schedule) if load.schedule is not None
               else arrival_offsets(load.rate, load.arrival, load.planned_requests, load.seed))
    base = time.perf_counter()
    for k, off in enumerate(offsets):
        at = base + off
        if (load.duration_s is not None and off > load.duration_s) or at > hard_stop:
            break
        await _sleep_until(at)
        if k == len(offsets) - 1:
            run.sending_finished()
        tasks.append(asyncio.create_task(one(make(load.warmup_requests + k, False), at)))
    run.sending_finished()
    if tasks:
        await asyncio.wait(tasks, timeout=max(1.0, hard_stop - time.perf_counter()))
        for t in tasks:
            t.cancel()

async def _sleep_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


def run_point(client_factory: Callable[[], Client], load: Load, make: Callable[[int, bool], Request],
              open_window: Callable[[], Any], budget_s: float, scraper_factory: Optional[Callable[[], Any]] = None) -> PointRun:
    """One load point, on its own event loop (the sweep itself is synchronous)."""
    async def main() -> PointRun:
        client = client_factory()
        try:
            return await _run(client, load, make, open_window, budget_s, scraper_factory() if scraper_factory else None)
        finally:
            await client.close()

    return asyncio.run(main())
