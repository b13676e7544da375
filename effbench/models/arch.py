"""Architecture-only models: a published ``config.json`` with seeded random weights.

Speed, memory and energy of a decoder depend on its shapes and dtypes, not on the values of its
weights, so a planner can measure a 7B-9B model on a rented GPU before downloading 16 GB of
weights. Quality never: such records carry ``model.weights = "random"`` and no perplexity.

The model is built on the ``meta`` device (shapes only, no memory), then materialised directly on
the target device in the target dtype (``to_empty``) and initialised there with a seeded generator:
an 8B model in bf16 never has a full-precision copy on the host, and two builds with the same seed
on the same device are identical.
"""
from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Optional

from effbench.errors import EffbenchError, UnsupportedError

PREFIX = "arch:"
CATALOG_FILE = "catalog.json"

# Shown in records (model.note, quality.note): why quality and per-character figures are absent.
RANDOM_WEIGHTS_NOTE = (
    "architecture only, seeded random weights: speed, memory and energy are representative of the "
    "model; quality is not, so perplexity and output characters (energy per 1,000 characters) are not measured"
)
RANDOM_WEIGHTS_QUALITY_NOTE = "not computed: random weights (architecture-only model) say nothing about quality"


@dataclass(frozen=True)
class ArchEntry:
    """A shipped architecture and the parameter count its model card states."""

    name: str
    hf_id: str
    config_file: str
    stated_params: float
    stated_scope: str  # "total" or "non-embedding"
    stated_source: str
    stated_active_params: Optional[float] = None  # MoE: parameters used per token, as the model card states
    stated_active_scope: str = "total"  # "total" or "without-input-embedding" (a lookup, not a matmul)


@dataclass(frozen=True)
class ParamCount:
    total: int  # unique parameters (tied embeddings once)
    embedding: int  # input embedding, plus the output head when it is not tied

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding

    def scoped(self, scope: str) -> int:
        return self.non_embedding if scope == "non-embedding" else self.total


def _data_dir() -> Any:
    return resources.files("effbench.models") / "data" / "arch"


@lru_cache(maxsize=1)
def catalog() -> dict[str, ArchEntry]:
    raw = json.loads(_data_dir().joinpath(CATALOG_FILE).read_text(encoding="utf-8"))
    return {
        name: ArchEntry(name, e["hf_id"], e["config"], float(e["stated_params"]), e["stated_scope"], e["stated_source"],
                        float(e["stated_active_params"]) if e.get("stated_active_params") else None,
                        e.get("stated_active_scope", "total"))
        for name, e in raw.items() if not name.startswith("_")
    }


def is_arch_name(name: str) -> bool:
    return name.strip().lower().startswith(PREFIX)


def resolve_arch(name: str) -> tuple[str, str]:
    """``arch:NAME`` (a shipped config) or ``arch:PATH`` (a config.json file, or a dir holding one)
    -> (record id, config location). Nothing is loaded beyond checking the file exists."""
    rest = name.strip()[len(PREFIX):].strip()
    shipped = catalog()
    if rest.lower() in shipped:
        return f"{PREFIX}{rest.lower()}", f"{PREFIX}{rest.lower()}"
    path = Path(rest).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if rest and path.is_file():
        # Records carry comparable ids, never local paths: the folder name of the config.
        label = path.parent.resolve().name if path.name == "config.json" else path.stem
        return f"{PREFIX}{label}", str(path.resolve())
    raise EffbenchError(
        f"architecture '{rest}' not found: use one of {', '.join(sorted(shipped))} (see 'effbench models') "
        f"or the path of a config.json"
    )


def config_dict(location: str) -> dict[str, Any]:
    if location.startswith(PREFIX):
        entry = catalog()[location[len(PREFIX):]]
        return json.loads(_data_dir().joinpath(entry.config_file).read_text(encoding="utf-8"))
    try:
        data = json.loads(Path(location).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EffbenchError(f"cannot read architecture config '{location}': {e}") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise EffbenchError(f"architecture config '{location}' has no 'model_type'; pass a Hugging Face config.json")
    return data


def load_config(location: str) -> Any:
    """A transformers config for a causal LM, from the native classes only (never remote code)."""
    from effbench.models.hf import quiet_transformers

    quiet_transformers()  # before transformers is first imported: torchao logs CUDA-only kernels on import
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    data = config_dict(location)
    if "auto_map" in data:
        raise UnsupportedError(f"architecture config '{location}' needs remote code (auto_map); effbench only builds "
                               f"architectures that transformers supports natively")
    model_type = data.pop("model_type")
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise UnsupportedError(f"model_type '{model_type}' is not a causal LM this transformers version supports natively")
    for key in ("architectures", "torch_dtype", "dtype", "transformers_version"):
        data.pop(key, None)  # facts about the checkpoint, not the architecture
    return AutoConfig.for_model(model_type, **data)


def _build_on_meta(config: Any, dtype: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def count_params(config: Any) -> ParamCount:
    """Parameter counts from shapes on the meta device: nothing is allocated."""
    model = _build_on_meta(config, None)
    unique = {id(p): p.numel() for p in model.parameters()}
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    embedding = emb.numel()
    if head is not None and head.weight is not emb:
        embedding += head.weight.numel()
    return ParamCount(total=sum(unique.values()), embedding=embedding)


def build_model(config: Any, dtype: Any, device: str, seed: int) -> Any:
    """Random weights created on ``device`` in ``dtype`` and initialised there, seeded."""
    import torch

    model = _build_on_meta(config, dtype)
    model.to_empty(device=device)
    model.tie_weights()  # to_empty gives tied parameters separate storage: tie them again
    torch.manual_seed(seed)  # seeds the CPU and every CUDA generator
    model.initialize_weights()  # also recomputes non-persistent buffers (rotary inv_freq)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise EffbenchError(f"architecture build left tensors unmaterialised: {', '.join(left[:3])}")
    return model.eval()


class RandomTokenizer:
    """Stands in for a tokenizer on random-weight models: a text maps to seeded random ids within the
    vocabulary (about one token per 4 UTF-8 bytes), the same ids on every run. Speed, memory and
    energy do not depend on which ids flow through the model, only on how many."""

    decodes_text = False

    def __init__(self, vocab_size: int, seed: int, pad_token_id: Optional[int], eos_token_id: Any) -> None:
        eos = eos_token_id[0] if isinstance(eos_token_id, (list, tuple)) else eos_token_id
        self.vocab_size = vocab_size
        self.seed = seed
        self.eos_token_id = eos
        self.pad_token_id = pad_token_id if pad_token_id is not None else (eos if eos is not None else 0)
        self.eos_token = self.pad_token = None  # no text form

    def encode(self, text: str) -> list[int]:
        rng = random.Random(f"{self.seed}:{zlib.crc32(text.encode('utf-8'))}")
        return [rng.randrange(self.vocab_size) for _ in range(max(1, len(text.encode("utf-8")) // 4))]

    def __call__(self, text: str, add_special_tokens: bool = False, **_: Any) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text)}


def load_random(location: str, dtype: Any, device: str, seed: int) -> tuple[RandomTokenizer, Any]:
    """(tokenizer, model) of an architecture-only model, ready for the transformers backend."""
    config = load_config(location)
    model = build_model(config, dtype, device, seed)
    text = getattr(config, "text_config", config)
    tokenizer = RandomTokenizer(text.vocab_size, seed, getattr(text, "pad_token_id", None),
                                getattr(text, "eos_token_id", None))
    return tokenizer, model


def record_fields(kind: str) -> dict[str, Any]:
    """Extra ``ModelInfo`` fields for a model of this kind (empty for pretrained ones)."""
    return {"weights": "random", "note": RANDOM_WEIGHTS_NOTE} if kind == "arch" else {}


# Bytes per parameter of the weights alone; quantized formats add scales (a few percent) and
# usually leave embeddings unquantized, so int8/int4 figures are lower bounds.
BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "int8": 1.0, "int4": 0.5}


@dataclass(frozen=True)
class ArchSummary:
    """What ``effbench models`` shows for one architecture, computed from its config alone."""

    name: str
    hf_id: Optional[str]
    model_type: str
    params: ParamCount
    stated_params: Optional[float]
    stated_scope: Optional[str]
    stated_source: Optional[str]
    kv_bytes_per_token_bf16: Optional[int]  # K and V (MLA: its latent) of the attention layers, one token
    active_params: Optional[int] = None  # MoE: parameters used per token (None: dense, all of them)
    stated_active_params: Optional[float] = None
    max_context_tokens: Optional[int] = None

    @property
    def stated_deviation(self) -> Optional[float]:
        if not self.stated_params:
            return None
        return self.params.scoped(self.stated_scope or "total") / self.stated_params - 1

    def weight_bytes(self, dtype: str) -> int:
        return int(self.params.total * BYTES_PER_PARAM[dtype])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "model": f"{PREFIX}{self.name}", "hf_id": self.hf_id, "model_type": self.model_type,
            "params": self.params.total, "non_embedding_params": self.params.non_embedding,
            "stated_params": self.stated_params, "stated_scope": self.stated_scope,
            "stated_source": self.stated_source, "stated_deviation": self.stated_deviation,
            "weight_bytes": {d: self.weight_bytes(d) for d in BYTES_PER_PARAM},
            "kv_bytes_per_token_bf16": self.kv_bytes_per_token_bf16,
            "active_params": self.active_params if self.active_params is not None else self.params.total,
            "stated_active_params": self.stated_active_params,
            "max_context_tokens": self.max_context_tokens,
        }


def summarize(location: str) -> ArchSummary:
    """Parameter counts (meta device), weight bytes per dtype and stated counts of one config."""
    config = load_config(location)
    entry = catalog().get(location[len(PREFIX):]) if location.startswith(PREFIX) else None
    name = entry.name if entry else Path(location).parent.name
    # The projection's own reading of the config (one home for layer kinds, dense-first and interleaved
    # MoE layers, shared experts, Mamba stacks), so this table and the projection agree on every model.
    from effbench.models.stepshape import from_config

    dims = from_config(name, config_dict(location))
    return ArchSummary(
        name=name, hf_id=entry.hf_id if entry else None, model_type=config.model_type,
        params=count_params(config),
        stated_params=entry.stated_params if entry else None,
        stated_scope=entry.stated_scope if entry else None,
        stated_source=entry.stated_source if entry else None,
        kv_bytes_per_token_bf16=int(dims.kv_bytes(1, 2)),  # as vLLM caches it: attention layers only, MLA's latent
        # In the model card's scope, so the two compare like for like (gpt-oss counts no input embedding).
        active_params=(dims.active_params
                       + (0 if dims.tied or (entry and entry.stated_active_scope == "without-input-embedding")
                          else dims.embedding_params)
                       if dims.experts else None),
        stated_active_params=entry.stated_active_params if entry else None,
        max_context_tokens=dims.max_context,
    )


