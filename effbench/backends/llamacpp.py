"""llama.cpp backend through llama-cpp-python: runs a GGUF file directly, in its own quant type.

Batches use the low-level API (one KV sequence per row), because the high-level ``Llama`` decodes
one sequence. Timing follows llama-bench: prefill (pp) is one decode call over every prompt token,
generation (tg) one decode call per step with one token per sequence; greedy argmax, EOS ignored.
"""
from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from effbench.backends.base import Backend, LoadedModel, OutputSize
from effbench.errors import UnsupportedError
from effbench.models import ModelSpec, PromptSet, build_token_rows
from effbench.models.kv import kv_cache_bytes_per_token
from effbench.quant import GGUF_WEIGHTS, Scheme

try:  # the class stays importable (its capabilities are listed in docs); using it needs llama_cpp
    import llama_cpp
except ImportError as e:  # pragma: no cover - depends on the machine
    llama_cpp, _LLAMA_CPP_MISSING = None, str(e)

KV_BYTES_PER_VALUE = 2  # llama.cpp keeps the KV cache in f16 by default
CTX_MARGIN = 16  # spare cells per sequence


def gguf_file_type(path: str) -> str:
    """The weight type a GGUF file declares (general.file_type), as a scheme suffix: 'q4_1', 'f16'."""
    import gguf

    from effbench.models.gguf_header import read_header  # the header the model resolver already read (cached)

    value = read_header(path).metadata.get("general.file_type")
    if not isinstance(value, int):
        return "unknown"
    try:
        return gguf.LlamaFileType(value).name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()
    except ValueError:
        return f"type{value}"


@dataclass
class _Batch:
    rows: list[list[int]]
    new_tokens: int


class LlamaCppBackend(Backend):
    name = "llamacpp"
    offers = frozenset({GGUF_WEIGHTS})

    def __init__(self) -> None:
        if llama_cpp is None:
            raise UnsupportedError(f"the llama.cpp backend needs llama-cpp-python ({_LLAMA_CPP_MISSING}); "
                                   "pip install 'effbench[llamacpp]' (builds from source)")
        self.path: Optional[str] = None
        self.threads: Optional[int] = None
        self.llm: Any = None  # high-level object: owns the model, vocab and tokenizer
        self.ctx: Any = None  # our own context sized for the current batch
        self.ctx_key: tuple[int, int] = (0, 0)
        self.gpu_layers = 0
        self.seed = 0
        self.n_vocab = 0

    def version(self) -> str:
        return f"llama-cpp-python {llama_cpp.__version__}"

    def threads_in_use(self) -> Optional[int]:
        # llama.cpp's own default when none is set: its n_threads after load.
        return self.threads or (getattr(self.llm, "n_threads", None) if getattr(self, "llm", None) else None)

    def resolve_device(self, requested: str) -> str:
        if requested in ("auto", "cpu"):
            return "cpu" if requested == "cpu" or not llama_cpp.llama_supports_gpu_offload() else "cuda"
        if requested.startswith("cuda"):
            if not llama_cpp.llama_supports_gpu_offload():
                raise UnsupportedError("this llama-cpp-python build has no GPU offload; rebuild it with "
                                       "CMAKE_ARGS=-DGGML_CUDA=on, or use --device cpu")
            return requested
        raise UnsupportedError(f"unknown device '{requested}'; use auto, cpu or cuda")

    def load(self, model: ModelSpec, scheme: Scheme, device: str, threads: Optional[int], seed: int) -> LoadedModel:
        if self.compile:
            raise UnsupportedError("--compile applies to the transformers backend only")
        if model.kind != "gguf":
            raise UnsupportedError("the llama.cpp backend runs .gguf files; pass one with --model")
        file_type = gguf_file_type(model.location)
        wanted = scheme.name.removeprefix("gguf-")
        if wanted != file_type:
            raise UnsupportedError(
                f"'{Path(model.location).name}' holds {file_type} weights, not {wanted}: llama.cpp runs a file in its "
                f"own type (use --quant gguf-{file_type}, or requantize the file with llama-quantize)"
            )
        t0 = time.perf_counter()
        self.path, self.threads, self.seed = model.location, threads, seed
        self.gpu_layers = -1 if device.startswith("cuda") else 0
        self.llm = llama_cpp.Llama(model_path=model.location, n_ctx=256, n_threads=threads, n_threads_batch=threads,
                                   n_gpu_layers=self.gpu_layers, seed=seed, verbose=False)
        # looked up once: _logits runs for every sequence at every decode step
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.llm.model))
        meta = self.llm.metadata
        arch = meta.get("general.architecture", "llama")
        return LoadedModel(
            params=int(llama_cpp.llama_model_n_params(self.llm.model)),
            weights_bytes=Path(model.location).stat().st_size,
            kv_bytes_per_token=_kv_bytes_per_token(meta, arch),
            device=device,
            load_s=time.perf_counter() - t0,
        )

    def _context(self, n_seq: int, tokens_per_seq: int) -> Any:
        """A context holding ``n_seq`` sequences of ``tokens_per_seq`` tokens; rebuilt only when too small."""
        key = (n_seq, tokens_per_seq + CTX_MARGIN)
        if self.ctx is not None and self.ctx_key[0] >= key[0] and self.ctx_key[1] >= key[1]:
            return self.ctx
        self._free_context()
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = key[0] * key[1]
        params.n_batch = params.n_ubatch = max(key[0] * tokens_per_seq, 512)
        params.n_seq_max = key[0]
        if self.threads:
            params.n_threads = params.n_threads_batch = self.threads
        if hasattr(params, "kv_unified"):
            params.kv_unified = True  # one cache shared by the sequences, sized by n_ctx
        self.ctx = llama_cpp.llama_init_from_model(self.llm.model, params)
        if not self.ctx:
            raise MemoryError(f"llama.cpp could not allocate a context for {n_seq} x {tokens_per_seq} tokens")
        self.ctx_key = key
        return self.ctx

    def _free_context(self) -> None:
        if self.ctx is not None:
            llama_cpp.llama_free(self.ctx)
            self.ctx = None

    def _clear_kv(self) -> None:
        if hasattr(llama_cpp, "llama_get_memory"):
            llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        else:  # older bindings
            llama_cpp.llama_kv_self_clear(self.ctx)

    def prepare(self, prompts: PromptSet, batch_size: int, prompt_tokens: int, new_tokens: int = 0) -> _Batch:
        rows = build_token_rows(lambda t: self.llm.tokenize(t.encode("utf-8"), add_bos=False, special=False),
                                prompts, batch_size, prompt_tokens)
        self._context(batch_size, prompt_tokens + max(new_tokens, 1))
        return _Batch(rows, new_tokens)

    def _decode(self, tokens: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode over (token, position, sequence, wants_logits) entries."""
        batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
        try:
            for i, (tok, pos, seq, logits) in enumerate(tokens):
                batch.token[i] = tok
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = logits
            batch.n_tokens = len(tokens)
            rc = llama_cpp.llama_decode(self.ctx, batch)
            if rc != 0:
                raise MemoryError(f"llama_decode returned {rc} (no KV cache room for the batch)")
        finally:
            llama_cpp.llama_batch_free(batch)

    def _logits(self, i: int) -> np.ndarray:
        ptr = llama_cpp.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))

    def _prefill(self, batch: _Batch) -> list[int]:
        self._clear_kv()
        entries = [(tok, pos, s, pos == len(row) - 1) for s, row in enumerate(batch.rows) for pos, tok in enumerate(row)]
        self._decode(entries)
        # logits of sequence s sit at the index of its last prompt token in the flat batch
        return [int(self._logits((s + 1) * len(batch.rows[0]) - 1).argmax()) for s in range(len(batch.rows))]

    def prefill(self, batch: _Batch) -> list[int]:
        return self._prefill(batch)

    def generate(self, batch: _Batch, new_tokens: int) -> list[list[int]]:
        return self._generate(batch, new_tokens, None)

    def generate_timed(self, batch: _Batch, new_tokens: int, clock: Callable[[], float]) -> tuple[list[list[int]], list[float]]:
        times: list[float] = []
        return self._generate(batch, new_tokens, lambda: times.append(clock())), times

    def _generate(self, batch: _Batch, new_tokens: int, on_token: Optional[Callable[[], None]]) -> list[list[int]]:
        # llama_decode returns when the step is computed (CPU, or a synchronised offload), so a host
        # timestamp after each argmax is the moment that token was ready.
        last = self._prefill(batch)
        if on_token:
            on_token()
        out = [[t] for t in last]
        p = len(batch.rows[0])
        for step in range(1, new_tokens):
            self._decode([(tok, p + step - 1, s, True) for s, tok in enumerate(last)])
            last = [int(self._logits(s).argmax()) for s in range(len(last))]
            if on_token:
                on_token()
            for s, tok in enumerate(last):
                out[s].append(tok)
        return out

    def output_size(self, output: list[list[int]], batch: _Batch) -> OutputSize:
        chars = sum(len(self.llm.detokenize(row).decode("utf-8", errors="replace")) for row in output)
        return OutputSize(tokens=sum(len(r) for r in output), chars=chars)

    def perplexity(self, text: str, max_tokens: int = 512) -> tuple[float, int]:
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)[:max_tokens]
        self._context(1, len(ids))
        self._clear_kv()
        self._decode([(tok, pos, 0, True) for pos, tok in enumerate(ids)])
        nll = 0.0
        for i in range(len(ids) - 1):
            logits = self._logits(i).astype(np.float64)
            m = logits.max()
            nll -= logits[ids[i + 1]] - m - np.log(np.exp(logits - m).sum())
        return float(np.exp(nll / (len(ids) - 1))), len(ids)

    def is_out_of_memory(self, exc: BaseException) -> bool:
        return isinstance(exc, MemoryError)

    def unload(self) -> None:
        self._free_context()
        self.ctx_key = (0, 0)
        self.llm = None


def _kv_bytes_per_token(meta: dict, arch: str) -> Optional[int]:
    try:
        layers = int(meta[f"{arch}.block_count"])
        heads = int(meta[f"{arch}.attention.head_count"])
        kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads))
        head_dim = int(meta.get(f"{arch}.attention.key_length", int(meta[f"{arch}.embedding_length"]) // heads))
    except (KeyError, ValueError):
        return None
    return kv_cache_bytes_per_token(layers, kv_heads, head_dim, KV_BYTES_PER_VALUE)
