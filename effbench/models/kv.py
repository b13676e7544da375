"""KV-cache size per token: the one formula every backend and the model catalogue use; and the
other sizes of a config that the sweep's memory check needs (``ModelDims``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


def kv_cache_bytes_per_token(layers: int, kv_heads: int, head_dim: int, element_size: int) -> int:
    """Keys and values (2) of every layer for one token of one sequence."""
    return int(2 * layers * kv_heads * head_dim * element_size)


def kv_bytes_per_token(config: Any, element_size: int) -> Optional[int]:
    """From a Hugging Face config (its ``text_config`` for multimodal ones); None if it lacks the sizes.
    Only attention layers cache K and V: a hybrid stack's Mamba layers keep a fixed state instead."""
    text = getattr(config, "text_config", config)
    try:
        heads = text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        layers = sum("attn" in k for k in layer_kinds(text.to_dict())) if hasattr(text, "to_dict") else text.num_hidden_layers
        return kv_cache_bytes_per_token(layers, kv_heads, head_dim, element_size)
    except (AttributeError, KeyError, TypeError):
        return None


def config_value(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """The first of ``keys`` a config.json sets (configs of different families name one size differently)."""
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    return default


def layer_kinds(cfg: dict[str, Any]) -> list[str]:
    """Per layer: 'attn+mlp', 'attn+moe', or for hybrid stacks 'mamba', 'attn', 'mlp', 'moe'."""
    pattern = cfg.get("hybrid_override_pattern")  # config.json of Nemotron-H
    if pattern:
        return [{"M": "mamba", "*": "attn", "-": "mlp", "E": "moe"}[c] for c in pattern[:cfg["num_hidden_layers"]]]
    blocks = cfg.get("layers_block_type")  # the same stack as transformers' NemotronHConfig spells it
    if isinstance(blocks, list) and blocks:
        return [{"linear_attention": "mamba", "mamba": "mamba", "full_attention": "attn", "attention": "attn",
                 "mlp": "mlp", "moe": "moe"}[b] for b in blocks]
    n = cfg["num_hidden_layers"]
    experts = config_value(cfg, "num_experts", "num_local_experts", "n_routed_experts", default=0)
    if not experts:
        return ["attn+mlp"] * n
    dense_first = cfg.get("first_k_dense_replace") or 0
    step = cfg.get("interleave_moe_layer_step") or cfg.get("decoder_sparse_step") or 1
    only_dense = set(cfg.get("mlp_only_layers") or [])
    return ["attn+moe" if i >= dense_first and (i + 1) % step == 0 and i not in only_dense else "attn+mlp"
            for i in range(n)]


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
