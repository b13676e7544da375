"""(d) Runner overhead: decode tokens/s as ``effbench.run`` records it vs a bare ``model.generate`` loop.

Same process, same weights file, same prompt tokens, fp32, one thread, greedy; both compute decode
tokens/s the same way, batch x (new_tokens - 1) / (t(generate n) - t(generate 1)), so the difference
is what effbench's path adds (sweep, loop, windows, generate kwargs). The two are interleaved over
rounds, alternating which goes first, because other work on a shared machine drifts over minutes.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from benchmarks.common import results_dir, write_json

MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Setup:
    batch_sizes: tuple[int, ...] = (1, 4)
    prompt_tokens: int = 64
    new_tokens: int = 32
    rounds: int = 5
    repeats: int = 3  # timed repeats per round and side, after one warm-up
    threads: int = 1


class Bare:
    """The baseline a user would write: load, then time ``model.generate`` calls."""

    def __init__(self, setup: Setup, **generate_kwargs: Any) -> None:
        from effbench.backends.transformers import TransformersBackend
        from effbench.models import load_prompt_set, resolve_model
        from effbench.quant import get_scheme

        self.setup = setup
        self.backend = TransformersBackend()  # only to load the same weights and build the same prompts
        self.backend.load(resolve_model(MODEL), get_scheme("fp32"), "cpu", setup.threads, seed=0)
        self.prompts = load_prompt_set("en")
        self.generate_kwargs = generate_kwargs  # --diagnose: effbench's extra kwargs, one at a time

    def _seconds(self, batch: Any, n: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        out = self.backend.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                          max_new_tokens=n, do_sample=False,
                                          pad_token_id=self.backend.tokenizer.pad_token_id,
                                          **{k: (n if v == "n" else v) for k, v in self.generate_kwargs.items()})
        return time.perf_counter() - t0, out.shape[1] - batch.input_ids.shape[1]

    def decode_tps(self, batch_size: int) -> list[float]:
        s = self.setup
        batch = self.backend.prepare(self.prompts, batch_size, s.prompt_tokens)
        self._seconds(batch, s.new_tokens)  # warm-up, as effbench's loop does
        out = []
        for _ in range(s.repeats):
            pre, _ = self._seconds(batch, 1)
            full, made = self._seconds(batch, s.new_tokens)
            if made != s.new_tokens:  # an early EOS would be less work than effbench does
                raise RuntimeError(f"bare generate stopped after {made} of {s.new_tokens} tokens")
            out.append(batch_size * (s.new_tokens - 1) / (full - pre))
        return out


def effbench_decode_tps(setup: Setup, batch_size: int, out_dir: Path) -> list[float]:
    """One configuration through the public API, as ``effbench run`` would measure it (no sensor:
    sensor cost is suite (c)); returns the per-repeat decode tokens/s of its record."""
    import effbench

    run = effbench.run(dict(model=MODEL, quant="fp32", device="cpu", batch_sizes=[batch_size],
                            prompt_tokens=setup.prompt_tokens, new_tokens=setup.new_tokens,
                            repeats=setup.repeats, warmup=1, threads=setup.threads, sensor="none",
                            idle_s=0, perplexity=False, out=str(out_dir)))
    record = run.records[-1]
    if record.error:
        raise RuntimeError(f"effbench run failed: {record.error}")
    return list(record.stats.samples["decode_tokens_per_s"])


def measure(setup: Setup, diagnose: bool = False) -> dict[str, Any]:
    """Interleaved rounds of each side; ``diagnose`` adds a bare loop with effbench's
    ``min_new_tokens`` (its only generate kwarg a bare loop lacks), to attribute a difference."""
    import torch

    bare = Bare(setup)
    sides: dict[str, Callable[[int, Path], list[float]]] = {
        "bare": lambda bs, _: bare.decode_tps(bs),
        "effbench": lambda bs, out: effbench_decode_tps(setup, bs, out),
    }
    if diagnose:
        forced = Bare(setup, min_new_tokens="n")
        sides["bare+min_new_tokens"] = lambda bs, _: forced.decode_tps(bs)
    samples = {bs: {name: [] for name in sides} for bs in setup.batch_sizes}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(setup.rounds):
            for bs in setup.batch_sizes:
                order = list(sides) if r % 2 else list(reversed(sides))
                for name in order:
                    samples[bs][name] += sides[name](bs, Path(tmp) / f"r{r}-b{bs}")
                    torch.set_num_threads(setup.threads)  # every side on the same thread count
    return {"setup": asdict(setup), "torch_threads": torch.get_num_threads(),
            "batches": {str(bs): _compare(s, setup.repeats) for bs, s in samples.items()}}


def _paired(eff: list[float], bare: list[float], repeats: int) -> tuple[float, float, float]:
    """Overhead of each round (its two sides ran back to back, so slow drift of other load cancels):
    median over rounds, and the lowest and highest round."""
    per_round = [1 - statistics.median(eff[i:i + repeats]) / statistics.median(bare[i:i + repeats])
                 for i in range(0, len(bare), repeats)]
    return statistics.median(per_round), min(per_round), max(per_round)


def _compare(samples: dict[str, list[float]], repeats: int) -> dict[str, Any]:
    bare = samples["bare"]
    b = statistics.median(bare)
    out: dict[str, Any] = {"bare_decode_tps_median": b, "bare_spread_rel": (max(bare) - min(bare)) / b}
    out["paired_overhead_rel"], out["paired_overhead_min"], out["paired_overhead_max"] = _paired(
        samples["effbench"], bare, repeats)
    for name, values in samples.items():
        if name != "bare":
            key = name.replace("+", "_plus_")
            out[f"{key}_decode_tps_median"] = statistics.median(values)
            # positive: lower throughput than the bare loop
            out["overhead_rel" if name == "effbench" else f"{key}_overhead_rel"] = 1 - statistics.median(values) / b
    out["samples"] = samples
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks run runner-overhead", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=Setup.rounds)
    ap.add_argument("--repeats", type=int, default=Setup.repeats)
    ap.add_argument("--diagnose", action="store_true", help="also a bare loop with effbench's min_new_tokens")
    args = ap.parse_args(argv)
    result = measure(Setup(rounds=args.rounds, repeats=args.repeats), args.diagnose)
    path = write_json(results_dir() / "runner_overhead.json", result)
    for bs, c in result["batches"].items():
        print(f"batch {bs}: effbench {c['effbench_decode_tps_median']:.2f} tok/s, bare {c['bare_decode_tps_median']:.2f} tok/s, "
              f"overhead {c['overhead_rel']:+.2%} (bare spread {c['bare_spread_rel']:.1%})")
        if "bare_plus_min_new_tokens_overhead_rel" in c:
            print(f"  bare + min_new_tokens: {c['bare_plus_min_new_tokens_overhead_rel']:+.2%}")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
