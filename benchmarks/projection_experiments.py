"""Alternatives to the shipped GPU projection, each held out the same way, so the docs' "tried, not kept"
rest on a committed result: leave-one-model-out on every ML.ENERGY v3 point, the shipped fit beside

- ``tp_layer_constant``: tensor parallelism's fixed cost per layer the same at every GPU count (the
  shipped model grows it with log2 of the count: ``projection.tp_sync_steps``);
- ``power_reads_only``: memory power from the weight, expert and KV reads alone (the shipped model adds
  the data movement they carry: ``projection.MEMORY_SHARE``);
- ``host_overlap``: a step of smooth max(GPU terms, host terms), async scheduling overlapping the host's
  per-step work with the GPU's (``fit(..., overlap=True)``), instead of their sum;
- ``fit_without_host_stalled``: the host-stalled points (``projection_fit.host_stalled``) left out of
  every fit, still scored;
- ``fit_without_data_parallel``: the data-parallel-attention points left out of every fit, still scored;
- ``prompt_x0.5`` / ``prompt_x2``: the assumed prompt lengths of the reference tasks (the data does not
  publish them: ``effbench.reference.ASSUMED_PROMPT_TOKENS``) halved / doubled, in the fit and in the
  held-out predictions: how much the figures lean on that assumption.

Writes ``benchmarks/results/reference/projection_experiments.json`` (median / p90 / mean of |projected /
published - 1| per metric, on all points and on the GPU-bound tensor-parallel points, and the fitted
per-layer cost of each variant). Deterministic; about a minute on a laptop core.

    python -m benchmarks.projection_experiments
"""
from __future__ import annotations

import argparse
import dataclasses
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from benchmarks.common import RESULTS, write_json

OUT = RESULTS / "reference" / "projection_experiments.json"
SCORED = ("output_tokens_per_s", "itl_p50", "itl_p95", "joules_per_token")


def _lomo(samples: Sequence[Any], train_if: Callable[[Any], bool] = lambda s: True,
          fit_kw: dict[str, Any] | None = None) -> tuple[list[dict[str, float]], list[Any]]:
    """Leave-one-model-out: per held-out point its ratios projected / published, and the fit of each fold."""
    from effbench.analysis import projection_fit as pf

    ratios, fits = [], []
    for model in sorted({s.model for s in samples}):
        f = pf.fit([s for s in samples if s.model != model and train_if(s)], **(fit_kw or {}))
        fits.append(f)
        for s in (s for s in samples if s.model == model):
            pred, obs = pf.predicted(s, f), s.observed()
            ratios.append({"key": s.key, **{m: pred[m] / obs[m] for m in SCORED}})
    return ratios, fits


@contextmanager
def _replaced(module: Any, name: str, value: Any) -> Iterator[None]:
    """``module.name`` swapped for ``value`` inside the block (a variant of one rule of the model)."""
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def _scaled_prompts(samples: Sequence[Any], factor: float) -> list[Any]:
    return [dataclasses.replace(s, config=dataclasses.replace(s.config, prompt_tokens=s.config.prompt_tokens * factor))
            for s in samples]


def _variant(description: str, ratios: list[dict[str, float]], fits: list[Any], gpu_bound: frozenset[str]) -> dict[str, Any]:
    from effbench.analysis import projection_fit as pf

    inside = [r for r in ratios if r["key"] in gpu_bound]
    layer = sorted(f.step["layer"] for f in fits)
    return {"description": description,
            "all": {m: pf.summary([r[m] for r in ratios]) for m in SCORED},
            "gpu_bound_tensor_parallel": {m: pf.summary([r[m] for r in inside]) for m in SCORED},
            "layer_us_median_over_folds": layer[len(layer) // 2]}


def run() -> dict[str, Any]:
    from effbench.analysis import projection
    from effbench.analysis import projection_fit as pf

    samples = pf.reference_samples()
    stalled = pf.host_stalled(samples)
    gpu_bound = pf.gpu_bound_tensor_parallel(samples)
    variants: dict[str, Any] = {}

    def add(name: str, description: str, ratios_fits: tuple[list[dict[str, float]], list[Any]]) -> None:
        variants[name] = _variant(description, *ratios_fits, gpu_bound)

    add("shipped", "the shipped model: the step's terms add up; every point fitted", _lomo(samples))
    add("host_overlap", "step = smooth max(GPU terms + prefills, host terms) (async scheduling)",
        _lomo(samples, fit_kw={"overlap": True}))
    with _replaced(projection, "MEMORY_SHARE", ("weights", "experts", "kv")):
        add("power_reads_only", "memory power from the reads alone (the shipped model adds the all-reduce and the fp8 "
            "experts' dequantisation)", _lomo(samples))
    with _replaced(projection, "tp_sync_steps", lambda n: 1.0 if n > 1 else 0.0):
        add("tp_layer_constant", "tensor parallelism's fixed cost per layer the same at 2, 4 and 8 GPUs (the shipped "
            "model: log2 of the GPU count)", _lomo(samples))
    add("fit_without_host_stalled", f"the {sum(s.key in stalled for s in samples)} host-stalled points left out of every "
        "fit (still scored)",
        _lomo(samples, lambda s: s.key not in stalled))
    add("fit_without_data_parallel", "the data-parallel-attention points left out of every fit (still scored)",
        _lomo(samples, lambda s: s.config.data_parallel == 1))
    for factor in (0.5, 2.0):
        add(f"prompt_x{factor:g}", f"every task's assumed prompt length x{factor:g} (fit and prediction)",
            _lomo(_scaled_prompts(samples, factor)))
    return {"points": len(samples), "host_stalled_points": sum(s.key in stalled for s in samples),
            "gpu_bound_tensor_parallel_points": sum(s.key in gpu_bound for s in samples),
            "variants": variants}


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    from effbench.reference import CITATION, SOURCE

    data = run()
    path = write_json(OUT, {"suite": "projection_experiments", "source": SOURCE, "citation": CITATION,
                            "method": "leave-one-model-out per variant; errors |projected / published - 1|", **data})
    for name, v in data["variants"].items():
        a = v["all"]
        print(f"{name:28s} tok/s {a['output_tokens_per_s']['median']:.1%} / {a['output_tokens_per_s']['p90']:.1%}  "
              f"ITL p50 {a['itl_p50']['median']:.1%} / {a['itl_p50']['p90']:.1%}  "
              f"J/token {a['joules_per_token']['median']:.1%} / {a['joules_per_token']['p90']:.1%}")
    print(path)


if __name__ == "__main__":
    main()
