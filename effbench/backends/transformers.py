"""PyTorch / Hugging Face transformers backend: eager ``generate``, CPU or CUDA, any scheme in the registry."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Optional

from effbench.backends.base import Backend, LoadedModel, OutputSize
from effbench.errors import EffbenchError, OutOfMemory, UnsupportedError, first_line
from effbench.models import ModelSpec, PromptSet, build_token_rows
from effbench.models.arch import RANDOM_WEIGHTS_QUALITY_NOTE, RandomTokenizer, load_random
from effbench.models.gguf_cache import cached_checkpoint
from effbench.models.hf import quiet_transformers
from effbench.models.kv import kv_bytes_per_token
from effbench.quant import DTYPE_WEIGHTS, IN_PLACE, LOAD_TIME, Scheme


def tensor_bytes(t: Any) -> int:
    """Storage of a tensor; tensor subclasses (torchao, quanto) are summed over their inner tensors."""
    flatten = getattr(t, "__tensor_flatten__", None)
    if flatten is not None:
        names, _ = flatten()
        return sum(tensor_bytes(getattr(t, n)) for n in names if getattr(t, n, None) is not None)
    return t.numel() * t.element_size()


class _quiet_quant_libraries:
    """torchao logs missing CUDA extensions and deprecations on import; they are noise on CPU."""

    def __enter__(self) -> None:
        import warnings

        for name in ("torchao", "optimum.quanto", "torch.utils._pytree"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self._w.__exit__(exc_type, exc, tb)


@dataclass
class _Batch:
    input_ids: Any
    attention_mask: Any


class _StepTimer:
    """A logits processor that marks when each token's logits are ready (generate calls it once per
    new token, before choosing it). On CPU it reads the clock; on CUDA it records an event on the
    stream, so nothing synchronises inside the generation, and converts once at the end."""

    def __init__(self, clock: Any, torch: Any = None) -> None:
        self.clock, self.torch = clock, torch
        self.marks: list[Any] = []
        if torch is not None:
            torch.cuda.synchronize()
            self.t0 = clock()
            self.start = torch.cuda.Event(enable_timing=True)
            self.start.record()

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.torch is None:
            self.marks.append(self.clock())
        else:
            event = self.torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        return scores

    def times(self) -> list[float]:
        if self.torch is None:
            return list(self.marks)
        self.torch.cuda.synchronize()
        return [self.t0 + self.start.elapsed_time(e) / 1000.0 for e in self.marks]


class TransformersBackend(Backend):
    name = "transformers"
    offers = frozenset({DTYPE_WEIGHTS, IN_PLACE, LOAD_TIME})

    def __init__(self) -> None:
        import torch

        quiet_transformers()
        self.torch = torch
        self.model: Any = None
        self.tokenizer: Any = None
        self.device = "cpu"

    def version(self) -> str:
        import transformers

        return f"transformers {transformers.__version__}, torch {self.torch.__version__}"

    def threads_in_use(self) -> Optional[int]:
        return int(self.torch.get_num_threads())

    def resolve_device(self, requested: str) -> str:
        cuda = self.torch.cuda.is_available()
        if requested == "auto":
            return "cuda" if cuda else "cpu"
        if requested == "cpu":
            return "cpu"
        if requested.startswith("cuda"):
            if not cuda:
                raise UnsupportedError(f"no CUDA GPU is visible (torch {self.torch.__version__} sees none); use --device cpu")
            idx = requested.partition(":")[2]
            if idx and (not idx.isdigit() or int(idx) >= self.torch.cuda.device_count()):
                raise UnsupportedError(f"device '{requested}' does not exist; {self.torch.cuda.device_count()} CUDA device(s) "
                                       "visible")
            return requested
        raise UnsupportedError(f"unknown device '{requested}'; use auto, cpu, cuda or cuda:N")

    # -- loading ---------------------------------------------------------------------------
    def _checkpoint(self, spec: ModelSpec) -> str:
        if spec.kind == "gguf":
            from pathlib import Path

            return str(cached_checkpoint(Path(spec.location), notify=self.notify))
        return spec.location

    def load(self, model: ModelSpec, scheme: Scheme, device: str, threads: Optional[int], seed: int) -> LoadedModel:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch = self.torch
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        path = self._checkpoint(model)
        dtype = getattr(torch, scheme.dtype_for(device))
        extra = scheme.load_kwargs(device) if scheme.load_kwargs else {}
        try:
            if model.kind == "arch":  # random weights made on the device itself: no checkpoint, no host copy
                if extra:
                    raise UnsupportedError(f"scheme '{scheme.name}' quantizes while loading a checkpoint; "
                                           f"architecture-only models take the torchao and quanto schemes")
                self.tokenizer, self.model = load_random(model.location, dtype, device, seed)
            else:
                self.tokenizer = AutoTokenizer.from_pretrained(path)
                self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **extra)
                if not extra:  # quantize-on-load models are placed by their device_map and cannot move
                    self.model = self.model.to(device)
        except OSError as e:
            where = "from the Hugging Face Hub (is it reachable from here?)" if model.kind == "hub" else f"from '{path}'"
            raise EffbenchError(f"cannot load model '{model.source}' {where}: {first_line(e) or type(e).__name__}") from None
        except torch.OutOfMemoryError:
            raise OutOfMemory(f"model '{model.id}' in {scheme.name} does not fit on {device}") from None
        self.model.eval()
        note = None
        if scheme.apply is not None:
            with _quiet_quant_libraries():
                note = scheme.apply(self.model, device)
        if self.compile:  # compiled lazily on the first call, i.e. during warm-up, never in a timed window
            self.model.forward = torch.compile(self.model.forward, dynamic=True)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = device
        return LoadedModel(
            params=sum(p.numel() for p in self.model.parameters()),
            weights_bytes=self._weights_bytes(),
            kv_bytes_per_token=kv_bytes_per_token(self.model.config, self.torch.tensor([], dtype=dtype).element_size()),
            device=device,
            load_s=time.perf_counter() - t0,
            quant_note=note,
        )

    def _weights_bytes(self) -> int:
        """Bytes the weights occupy as loaded: quantized tensors count their packed data and scales."""
        seen: set[int] = set()
        total = 0
        for t in list(self.model.parameters()) + list(self.model.buffers()):
            if id(t) not in seen:  # tied embeddings count once
                seen.add(id(t))
                total += tensor_bytes(t)
        # Dynamically quantized Linear layers keep packed weights outside parameters().
        for m in self.model.modules():
            packed = getattr(m, "_packed_params", None)
            if packed is not None and hasattr(packed, "_weight_bias"):
                w, b = packed._weight_bias()
                total += tensor_bytes(w) + (tensor_bytes(b) if b is not None else 0)
        return total

    # -- running ---------------------------------------------------------------------------
    def prepare(self, prompts: PromptSet, batch_size: int, prompt_tokens: int, new_tokens: int = 0) -> _Batch:
        cfg = getattr(self.model.config, "text_config", self.model.config)
        limit = getattr(cfg, "max_position_embeddings", None)
        if limit and prompt_tokens + new_tokens > limit:
            raise UnsupportedError(f"{prompt_tokens} prompt + {new_tokens} new tokens exceed this model's context of "
                                   f"{limit} tokens; lower --prompt-tokens or --new-tokens")
        rows = build_token_rows(
            lambda t: self.tokenizer(t, add_special_tokens=False)["input_ids"], prompts, batch_size, prompt_tokens
        )
        ids = self.torch.tensor(rows, dtype=self.torch.long, device=self.device)
        return _Batch(ids, self.torch.ones_like(ids))

    def _generate(self, batch: _Batch, n: int, step_timer: Optional["_StepTimer"] = None) -> Any:
        from transformers import LogitsProcessorList

        extra = {"logits_processor": LogitsProcessorList([step_timer])} if step_timer else {}
        with self.torch.no_grad():  # not inference_mode: some quantized layers refuse it
            return self.model.generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                max_new_tokens=n,
                min_new_tokens=n,  # suppress EOS: every configuration does the same work
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                **extra,
            )

    def generate_timed(self, batch: _Batch, new_tokens: int, clock: Any) -> tuple[Any, list[float]]:
        timer = _StepTimer(clock, self.torch if self.device.startswith("cuda") else None)
        out = self._generate(batch, new_tokens, timer)
        return out, timer.times()

    def prefill(self, batch: _Batch) -> Any:
        return self._generate(batch, 1)

    def generate(self, batch: _Batch, new_tokens: int) -> Any:
        return self._generate(batch, new_tokens)

    def output_size(self, output: Any, batch: _Batch) -> OutputSize:
        new = output[:, batch.input_ids.shape[1]:]
        if isinstance(self.tokenizer, RandomTokenizer):  # random weights emit noise: no characters to count
            return OutputSize(tokens=int(new.numel()), chars=None)
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return OutputSize(tokens=int(new.numel()), chars=sum(len(t) for t in texts))

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize(self.device)

    def reset_peak_device_memory(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_device_memory(self) -> tuple[Optional[int], Optional[int]]:
        if not self.device.startswith("cuda"):
            return None, None
        return (int(self.torch.cuda.max_memory_allocated(self.device)), int(self.torch.cuda.max_memory_reserved(self.device)))

    def perplexity(self, text: str, max_tokens: int = 512) -> tuple[float, int]:
        if isinstance(self.tokenizer, RandomTokenizer):
            raise NotImplementedError(RANDOM_WEIGHTS_QUALITY_NOTE)
        ids = self.tokenizer(text, return_tensors="pt")["input_ids"][:, :max_tokens].to(self.device)
        with self.torch.no_grad():
            loss = self.model(input_ids=ids, labels=ids).loss
        return float(math.exp(float(loss))), int(ids.shape[1])

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return isinstance(exc, (MemoryError, self.torch.OutOfMemoryError, OutOfMemory))

    def unload(self) -> None:
        self.model = None
        self.tokenizer = None
        import gc

        gc.collect()
        if self.torch.cuda.is_available():
            self.torch.cuda.empty_cache()
