"""KV-cache size per token: the one formula every backend and the model catalogue use."""
from __future__ import annotations

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
