"""Energy beside pytest-benchmark's timings: run with

    pytest examples/ -p effbench.pytest_plugin --benchmark-json out.json

(``-p`` is unnecessary once effbench's ``pytest11`` entry point is installed). Each benchmark's
``extra_info`` in out.json then holds joules_per_call, mean_power_w, energy_status, energy_sensor,
energy_uncertainty_rel and, where ``tokens`` is declared, tokens_per_s and tokens_per_joule.
Choose the sensor with ``--effbench-sensor auto|nvml|rapl|estimate|none`` and, on a GPU,
``--effbench-device cuda`` (windows are then synchronised with the device).
"""
from __future__ import annotations

import pytest
import torch

torch.manual_seed(0)
# One thread: on a small shared machine two OpenMP threads spin against each other and the other
# load, and the timings (hence joules per call) scatter far more than the work does.
torch.set_num_threads(1)


def test_matmul(energy_benchmark):
    a = torch.randn(256, 256)
    b = torch.randn(256, 256)
    # No tokens here: a matmul gets joules per call and mean watts only.
    energy_benchmark(torch.matmul, a, b)


class TinyBlock(torch.nn.Module):
    """A transformer-sized block small enough for a test: attention + MLP over 64-wide tokens."""

    def __init__(self, width: int = 64, heads: int = 4) -> None:
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(), torch.nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return x + self.mlp(x)


@pytest.mark.parametrize("batch", [1, 8])
def test_model_forward(energy_benchmark, batch):
    model = TinyBlock().eval()
    x = torch.randn(batch, 32, 64)

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return model(x)

    # One call processes batch x 32 tokens: tokens/s and tokens/J follow from it.
    energy_benchmark(forward, tokens=batch * 32)


@pytest.mark.effbench(tokens=32)
def test_tokens_from_marker(energy_benchmark):
    model = TinyBlock().eval()
    x = torch.randn(1, 32, 64)
    energy_benchmark.pedantic(lambda: model(x).detach(), rounds=20, iterations=5)


# The bundled SmolLM2-135M through effbench's own runner (about a minute on 2 CPU cores): the
# record's figures land in extra_info. Run with: pytest examples/ -p effbench.pytest_plugin -m slow
@pytest.mark.slow
@pytest.mark.effbench(quant="fp32", batch_sizes=1, prompt_tokens=32, new_tokens=16, repeats=3,
                      idle_s=0, perplexity=False, threads=1)
def test_bundled_model(effbench_model):
    record = effbench_model()
    assert record.error is None
