"""The offline scenario: static batches of equal-length prompts through ``generate`` (warm-up, then
adaptive repeats of prefill + full generation inside energy windows; ``effbench.measure.loop``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from effbench.analysis.carbon import carbon_section
from effbench.measure.energy import energy_section
from effbench.measure.host import InterferenceProbe
from effbench.measure.loop import RepeatPolicy, Workload, run_loop
from effbench.measure.summary import stats_section, throughput_section
from effbench.models import load_prompt_set
from effbench.results.schema import Memory
from effbench.scenarios.base import Context, Point, Scenario, Sections
from effbench.scenarios.offline.config import OfflineConfig

if TYPE_CHECKING:
    from effbench.config import SweepConfig


def repeat_policy(offline: OfflineConfig) -> RepeatPolicy:
    """The repeat rule of the offline section (docs/method.md): warm-up, adaptive repeats to a CI95 target."""
    return RepeatPolicy(warmup=offline.warmup, min_repeats=offline.min_repeats, max_repeats=offline.max_repeats,
                        ci_target=offline.ci_target, max_time_s=offline.max_time_s, fixed_repeats=offline.repeats)


class OfflineScenario(Scenario):
    name = "offline"

    def __init__(self, config: SweepConfig) -> None:
        super().__init__(config)
        self.policy = repeat_policy(config.offline)
        self._prompts: dict[str, Any] = {}

    def measure(self, point: Point, ctx: Context) -> Sections:
        prompts = self._prompts.setdefault(point.prompt_set, load_prompt_set(point.prompt_set))
        engine, loaded = ctx.engine, ctx.loaded
        assert engine is not None and loaded is not None, "open() loads the model"
        workers = engine.worker_pids()
        if workers:
            ctx.sensor.attribute(workers)  # an estimate counts the engine's worker processes too
        probe = InterferenceProbe(tuple(workers))
        batch = engine.prepare(prompts, point.batch_size, point.prompt_tokens, point.new_tokens)
        try:
            result = run_loop(engine, batch, Workload(point.batch_size, point.prompt_tokens, point.new_tokens),
                              ctx.sensor, self.policy, on_repeat=lambda r: ctx.on_repeat(r.repeats))
        finally:
            batch = None  # free activations before the next configuration
        energy = energy_section(result, ctx.idle_power_w)
        sections = Sections(
            throughput=throughput_section(result),
            energy=energy,
            memory=Memory(peak_host_bytes=result.peak_host_bytes, peak_device_bytes=result.peak_device_bytes,
                          peak_device_reserved_bytes=result.peak_device_reserved_bytes,
                          weights_bytes=loaded.weights_bytes, kv_bytes_per_token=loaded.kv_bytes_per_token),
            stats=stats_section(result, self.policy.warmup, probe.stop()),
        )
        if ctx.grid is not None:
            sections["carbon"] = carbon_section(energy, point.batch_size * point.new_tokens, ctx.grid)
        return sections
