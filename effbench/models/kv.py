"""KV-cache size per token: the one formula every backend and the model catalogue use; and the
other sizes of a config that the sweep's memory check needs (``ModelDims``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


def kv_cache_bytes_per_token(layers: int, kv_heads: int, head_dim: int, element_size: int) -> int:
    """Keys and values (2) of every layer for one token of one sequence."""
    return int(2 * layers * kv_heads * head_dim * element_size)


def kv_bytes_per_token(config: Any, element_size: int) -> Optional[int]:
    """From a Hugging Face config (its ``text_config`` for multimodal ones); None if it lacks the sizes."""
    text = getattr(config, "text_config", config)
    try:
        heads = text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        return kv_cache_bytes_per_token(text.num_hidden_layers, kv_heads, head_dim, element_size)
    except AttributeError:
        return None


@dataclass(frozen=True)
class ModelDims:
    """The sizes a memory estimate needs beyond weights and KV cache: activations scale with the
    hidden size, the logits with the vocabulary."""

    hidden_size: int
    vocab_size: int
    # The most prompt + generated tokens (max_position_embeddings); not part of the sizes compared.
    max_context: Optional[int] = field(default=None, compare=False)


def dims_from_config(config: Any) -> Optional[ModelDims]:
    """From a Hugging Face config or its ``config.json`` dict (``text_config`` for multimodal ones)."""
    if config is None:
        return None
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    text = get("text_config") or config
    tget = text.get if isinstance(text, dict) else lambda k, d=None: getattr(text, k, d)
    hidden, vocab, context = tget("hidden_size"), tget("vocab_size"), tget("max_position_embeddings")
    if isinstance(hidden, int) and isinstance(vocab, int) and hidden > 0 and vocab > 0:
        return ModelDims(hidden, vocab, context if isinstance(context, int) and context > 0 else None)
    return None
