"""The backend interface: everything the measurement loop may ask of an inference engine.

A backend loads one model under one quantization scheme on one device, prepares a batch of
equal-length prompts, and runs either the prefill alone (prompt forward + first token) or a full
greedy generation of exactly ``new_tokens`` tokens. Timing, repeats and energy belong to the loop.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Optional

from effbench.models import ModelSpec, PromptSet
from effbench.quant import Scheme


@dataclass
class LoadedModel:
    """Facts about the loaded model that records carry."""

    params: Optional[int]
    weights_bytes: Optional[int]
    kv_bytes_per_token: Optional[int]  # KV cache bytes per token per sequence
    device: str
    load_s: float
    quant_note: Optional[str] = None  # what the scheme did (layers quantized or skipped)


@dataclass
class OutputSize:
    tokens: int  # generated tokens over the whole batch
    chars: Optional[int]  # characters of the decoded output over the whole batch; None when not text (random weights)


class Backend(ABC):
    name: str = "backend"
    # What this engine can do with weights (``effbench.quant.CAPABILITIES``); a scheme runs here when
    # it needs nothing more.
    offers: frozenset[str] = frozenset()
    # Run the model through torch.compile (transformers backend); others refuse it in load().
    compile: bool = False
    # Where a backend sends one-line status messages (e.g. a first-use model conversion).
    notify: Optional[Callable[[str], None]] = None

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def resolve_device(self, requested: str) -> str:
        """'auto' -> the best device here; raise ``UnsupportedError`` for one that is not present."""

    @abstractmethod
    def load(self, model: ModelSpec, scheme: Scheme, device: str, threads: Optional[int], seed: int) -> LoadedModel: ...

    @abstractmethod
    def prepare(self, prompts: PromptSet, batch_size: int, prompt_tokens: int, new_tokens: int = 0) -> Any:
        """An opaque, device-resident batch of ``batch_size`` prompts of exactly ``prompt_tokens`` tokens.
        ``new_tokens`` lets a backend size its KV cache for the generation to come."""

    @abstractmethod
    def prefill(self, batch: Any) -> Any:
        """Prompt forward pass and the first generated token (what TTFT measures)."""

    @abstractmethod
    def generate(self, batch: Any, new_tokens: int) -> Any:
        """Greedy generation of exactly ``new_tokens`` tokens per row (no early stop on EOS)."""

    def generate_timed(self, batch: Any, new_tokens: int, clock: Callable[[], float]) -> tuple[Any, Optional[list[float]]]:
        """``generate``, also returning the ``clock`` reading at which each of the ``new_tokens``
        tokens was ready (for the whole batch: one decode step), so TTFT, decode time and inter-token
        latency come from one call. An engine without a per-token hook returns None for the times;
        the loop then times a prefill-only call apart. On an asynchronous device the times must be
        the device's (events), not the moment a kernel was queued."""
        return self.generate(batch, new_tokens), None

    @abstractmethod
    def output_size(self, output: Any, batch: Any) -> OutputSize:
        """Tokens and decoded characters of a ``generate`` output (called outside timed regions)."""

    def synchronize(self) -> None:
        """Wait for queued device work, so a timestamp or counter read covers it (docs/method.md, "One configuration")."""

    def reset_peak_device_memory(self) -> None:
        """Start a new peak-memory period on the device (no-op on CPU)."""

    def peak_device_memory(self) -> tuple[Optional[int], Optional[int]]:
        """(allocated, reserved) peak bytes on the device since the last reset; (None, None) on CPU."""
        return None, None

    def perplexity(self, text: str, max_tokens: int = 512) -> tuple[float, int]:
        """Perplexity of ``text`` (first ``max_tokens`` tokens) and how many tokens were scored."""
        raise NotImplementedError

    def worker_pids(self) -> list[int]:
        """Processes this engine computes in besides ours (vLLM's engine core and workers): they are
        the workload, so an estimate counts their CPU time and the interference probe does not."""
        return []

    def threads_in_use(self) -> Optional[int]:
        """The compute threads this engine runs with (records carry it); None when it does not say."""
        return None

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return isinstance(exc, MemoryError)

    def unload(self) -> None:
        """Free the model (between configurations)."""
