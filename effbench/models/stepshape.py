"""What one serving step of a model moves and computes, read straight from its ``config.json``.

The GPU projection (``effbench.analysis.projection``) needs, per architecture: the weights every step
reads, the routed experts it may touch, the KV cache (or recurrent state) each sequence carries, the
FLOPs per token and per context token, and the layer counts behind fixed per-layer costs. These come
from the config's numbers by plain arithmetic (no transformers, no torch), so a projection answers in
milliseconds. Families covered: dense and sliding-window attention (Llama, Qwen, Gemma 3), mixtures of
experts with shared experts, dense-first or interleaved layers (Qwen3-MoE, DeepSeek-V3, Llama 4,
gpt-oss), multi-head latent attention (DeepSeek-V3) and hybrid Mamba-2 / attention stacks (Nemotron-H).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Optional

from effbench.errors import EffbenchError
from effbench.models.kv import config_value as _get
from effbench.models.kv import layer_kinds


@dataclass(frozen=True)
class StepShape:
    name: str
    family: str  # "dense", "moe" or "hybrid" (Mamba layers beside attention)
    attention: str  # "gqa" or "mla"
    layers: int
    moe_layers: int
    mamba_layers: int
    hidden: int
    heads: int  # query heads (tensor parallelism splits these)
    kv_heads: int
    vocab: int
    embedding_params: int  # the input embedding: a lookup, neither read whole nor multiplied
    dense_params: int  # read every step: attention, dense MLPs, shared experts, Mamba, norms, output head
    expert_params: int  # every routed expert of every MoE layer
    experts: int
    experts_per_token: int
    kv_per_token: int  # elements cached per token per attention layer (K and V, or MLA's latent)
    windows: tuple[Optional[int], ...]  # per attention layer: its sliding window, None for full attention
    attn_flops_per_ctx: int  # FLOPs of one new token against one context token, one attention layer
    state_per_seq: int  # recurrent (Mamba) state elements per sequence, all layers
    max_context: Optional[int]
    tied: bool = False  # the output head is the input embedding (counted once in total_params)
    ssm_state_per_seq: int = 0  # of state_per_seq, the SSM state (the rest: the convolution's rolling window)

    @property
    def total_params(self) -> int:
        return self.embedding_params * (0 if self.tied else 1) + self.dense_params + self.expert_params

    @property
    def active_params(self) -> int:
        """Parameters multiplied per token (the output head included, the embedding lookup not)."""
        routed = self.expert_params * self.experts_per_token / self.experts if self.experts else 0
        return int(self.dense_params + routed)

    def state_bytes(self, ssm_element_bytes: float, conv_element_bytes: float) -> float:
        """Recurrent state of one sequence: the SSM state and the convolution window, each at its dtype."""
        return self.ssm_state_per_seq * ssm_element_bytes + (self.state_per_seq - self.ssm_state_per_seq) * conv_element_bytes

    def kv_bytes(self, context: float, element_bytes: float = 2.0) -> float:
        """KV cache of one sequence holding ``context`` tokens (windowed layers stop at their window)."""
        per = self.kv_per_token * element_bytes
        return sum(per * (min(context, w) if w else context) for w in self.windows)

    def attention_flops(self, context: float) -> float:
        """One new token against ``context`` tokens, all attention layers."""
        return sum(self.attn_flops_per_ctx * (min(context, w) if w else context) for w in self.windows)


def _attention(cfg: dict[str, Any]) -> tuple[str, int, int, int]:
    """(kind, weight params per attention layer, cached elements per token, FLOPs per context token)."""
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    if cfg.get("kv_lora_rank"):  # multi-head latent attention: one compressed latent per token is cached
        r, nope, rope, v = cfg["kv_lora_rank"], cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
        q_rank = cfg.get("q_lora_rank")
        q = h * q_rank + q_rank * heads * (nope + rope) if q_rank else h * heads * (nope + rope)
        params = q + h * (r + rope) + r * heads * (nope + v) + heads * v * h
        # Decode runs the absorbed form: scores over (latent + rope) dims, values over the latent.
        return "mla", params, r + rope, 2 * heads * (r + rope) + 2 * heads * r
    hd = _get(cfg, "head_dim", "attention_head_dim", default=h // heads)
    kv = _get(cfg, "num_key_value_heads", default=heads)
    params = h * heads * hd * 2 + h * kv * hd * 2  # q and o; k and v
    return "gqa", params, 2 * kv * hd, 4 * heads * hd


def _windows(cfg: dict[str, Any], attn_layers: int) -> tuple[Optional[int], ...]:
    window = cfg.get("sliding_window")
    types = cfg.get("layer_types")
    if window and types:
        return tuple(window if t == "sliding_attention" else None for t in types[:attn_layers])
    pattern = cfg.get("sliding_window_pattern")  # Gemma 3: every pattern-th layer is global
    if window and pattern:
        return tuple(None if (i + 1) % pattern == 0 else window for i in range(attn_layers))
    return (None,) * attn_layers


def _mamba(cfg: dict[str, Any]) -> tuple[int, int, int]:
    """(weight params, state elements per sequence, of them the SSM state's) of one Mamba-2 layer."""
    h, nh, hd = cfg["hidden_size"], cfg["mamba_num_heads"], cfg["mamba_head_dim"]
    groups, d_state, conv = _get(cfg, "n_groups", "mamba_num_groups", default=1), cfg["ssm_state_size"], cfg.get("conv_kernel", 4)
    inner = nh * hd
    conv_dim = inner + 2 * groups * d_state
    params = h * (2 * inner + 2 * groups * d_state + nh) + conv_dim * conv + inner * h + 3 * nh + inner
    return params, nh * hd * d_state + conv_dim * (conv - 1), nh * hd * d_state


def _mlp_params(cfg: dict[str, Any], inter: int) -> int:
    gated = _get(cfg, "mlp_hidden_act", "hidden_act", default="silu") != "relu2"  # relu^2 MLPs have no gate
    return (3 if gated else 2) * cfg["hidden_size"] * inter


def _moe_params(cfg: dict[str, Any]) -> tuple[int, int, int, int]:
    """(routed params per layer, shared + router params per layer, experts, experts per token)."""
    h = cfg["hidden_size"]
    experts = _get(cfg, "num_experts", "num_local_experts", "n_routed_experts", default=0)
    k = _get(cfg, "num_experts_per_tok", "experts_per_token", default=1)
    inter = _get(cfg, "moe_intermediate_size", default=cfg["intermediate_size"])
    per = 3 * h * inter + (2 * inter + h if cfg.get("model_type") == "gpt_oss" else 0)  # gpt-oss experts carry biases
    shared = (cfg.get("n_shared_experts") or 0) * 3 * h * inter
    if cfg.get("model_type", "").startswith("llama4"):
        shared = 3 * h * cfg["intermediate_size"]  # one shared expert at the routed experts' width
    return per * experts, shared + h * experts, experts, k


def _family(kinds: list[str]) -> str:
    if "mamba" in kinds:
        return "hybrid"
    return "moe" if any("moe" in k for k in kinds) else "dense"


# The config fields that count something (sizes, heads, layers, experts, lengths): a whole number where
# given (null: not given), at least 1 for the first four. A mistyped config fails here in one line that
# names the field, not as a division by zero deep in the arithmetic.
REQUIRED_COUNTS = ("hidden_size", "num_attention_heads", "num_hidden_layers", "vocab_size")
COUNTS = (*REQUIRED_COUNTS, "num_key_value_heads", "head_dim", "attention_head_dim", "intermediate_size",
          "intermediate_size_mlp", "moe_intermediate_size", "num_experts", "num_local_experts", "n_routed_experts",
          "num_experts_per_tok", "experts_per_token", "n_shared_experts", "max_position_embeddings", "sliding_window",
          "kv_lora_rank", "q_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
          "mamba_num_heads", "mamba_head_dim", "ssm_state_size", "n_groups", "mamba_num_groups", "conv_kernel")


def from_config(name: str, config: dict[str, Any]) -> StepShape:
    """The step shape of a Hugging Face ``config.json`` (its ``text_config`` for multimodal ones)."""
    cfg = config.get("text_config") or config
    if not isinstance(cfg, dict):
        raise EffbenchError(f"architecture '{name}': its text_config is not a JSON object")
    _check_counts(name, cfg)
    try:
        shape = _from_text_config(name, cfg)
    except KeyError as e:
        raise EffbenchError(f"architecture '{name}': its config lacks {e} that the projection needs") from None
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise EffbenchError(f"architecture '{name}': its config does not describe a model the projection can read "
                            f"({e})") from None
    _check_shape(shape)
    return shape


def _check_counts(name: str, cfg: dict[str, Any]) -> None:
    for key in COUNTS:
        v = cfg.get(key)
        if key in REQUIRED_COUNTS and v is None:
            continue  # reported as missing by the reading itself (KeyError), or found under another name
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < (1 if key in REQUIRED_COUNTS else 0)):
            least = "a whole number >= 1" if key in REQUIRED_COUNTS else "a whole number >= 0"
            raise EffbenchError(f"architecture '{name}': its config's {key} is {v!r}; it must be {least}")


def _check_shape(a: StepShape) -> None:
    """What the counts must satisfy together (each is already a whole number)."""
    if a.attention == "gqa" and (a.kv_heads < 1 or a.heads % a.kv_heads):
        raise EffbenchError(f"architecture '{a.name}': {a.heads} attention heads are not a multiple of its {a.kv_heads} "
                            "key/value heads; check num_key_value_heads")
    if a.experts and not 1 <= a.experts_per_token <= a.experts:
        raise EffbenchError(f"architecture '{a.name}': {a.experts_per_token} experts per token of {a.experts} experts; "
                            "check num_experts_per_tok")
    if a.max_context is not None and a.max_context < 1:
        raise EffbenchError(f"architecture '{a.name}': max_position_embeddings is {a.max_context}; it must be >= 1")


def _from_text_config(name: str, cfg: dict[str, Any]) -> StepShape:
    h, vocab = cfg["hidden_size"], cfg["vocab_size"]
    kinds = layer_kinds(cfg)
    kind, attn_params, kv_per_token, attn_flops = _attention(cfg)
    routed, moe_fixed, experts, k = _moe_params(cfg) if any("moe" in x for x in kinds) else (0, 0, 0, 0)
    dense_inter = _get(cfg, "intermediate_size_mlp", "intermediate_size")
    mamba_params, mamba_state, mamba_ssm = _mamba(cfg) if "mamba" in kinds else (0, 0, 0)
    dense = expert = state = 0
    for x in kinds:
        dense += attn_params if "attn" in x else 0
        dense += _mlp_params(cfg, dense_inter) if x in ("attn+mlp", "mlp") else 0
        dense += moe_fixed if "moe" in x else 0
        expert += routed if "moe" in x else 0
        dense += mamba_params if x == "mamba" else 0
        state += mamba_state if x == "mamba" else 0
    attn_layers = sum("attn" in x for x in kinds)
    return StepShape(
        name=name, family=_family(kinds), attention=kind, layers=len(kinds), moe_layers=sum("moe" in x for x in kinds),
        mamba_layers=kinds.count("mamba"), hidden=h, heads=cfg["num_attention_heads"],
        kv_heads=_get(cfg, "num_key_value_heads", default=cfg["num_attention_heads"]), vocab=vocab,
        embedding_params=vocab * h, dense_params=dense + vocab * h,  # the output head's matmul, tied or not
        expert_params=expert, experts=experts, experts_per_token=k, kv_per_token=kv_per_token,
        windows=_windows(cfg, attn_layers), attn_flops_per_ctx=attn_flops, state_per_seq=state,
        max_context=cfg.get("max_position_embeddings"), tied=bool(cfg.get("tie_word_embeddings")),
        ssm_state_per_seq=mamba_ssm * kinds.count("mamba"),
    )


@lru_cache(maxsize=128)
def shipped(name: str) -> StepShape:
    """The step shape of a shipped architecture (``arch:NAME``), from its config file alone."""
    from effbench.models.arch import PREFIX, config_dict

    return from_config(name, config_dict(f"{PREFIX}{name}"))


def of(model: str) -> StepShape:
    """``arch:NAME`` (shipped), ``NAME`` or the path of a config.json: its step shape; a one-line error
    naming the nearest shipped names for an unknown one."""
    from pathlib import Path

    from effbench.models.arch import PREFIX, catalog, config_dict

    name = model[len(PREFIX):] if model.lower().startswith(PREFIX) else model
    if name.lower() in catalog():
        return shipped(name.lower())
    path = Path(name).expanduser()
    path = path / "config.json" if path.is_dir() else path
    if name and path.is_file():
        return from_config(path.parent.name if path.name == "config.json" else path.stem, config_dict(str(path)))
    import difflib

    near = difflib.get_close_matches(name.lower(), sorted(catalog()), n=3, cutoff=0.4)
    hint = f"nearest: {', '.join(near)}; " if near else ""
    raise EffbenchError(f"unknown architecture '{name}': {hint}'effbench models' lists them, or pass the path of a config.json")
