"""``effbench models``: the bundled model and the architecture-only configs, with parameter counts
(computed from each config on the meta device, nothing allocated) and weight bytes per dtype."""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from effbench.cli._console import cell, fmt_bytes, out


def _bundled() -> dict:
    """The bundled GGUF: where it is and its size, or why it is missing (not an error here)."""
    from effbench.errors import EffbenchError
    from effbench.models import BUNDLED_MODEL, bundled_gguf_path

    try:
        path = bundled_gguf_path()
    except EffbenchError as e:
        return {"name": BUNDLED_MODEL, "available": False, "reason": str(e)}
    return {"name": BUNDLED_MODEL, "available": True, "file": str(path), "file_bytes": path.stat().st_size,
            "weights": "pretrained (SmolLM2-135M-Instruct, GGUF Q4_1; loaded dequantized on the transformers backend)"}


def models_command(
    config: Optional[list[str]] = typer.Option(
        None, "--config", help="Also describe this architecture: arch:NAME or the path of a config.json (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """List the bundled model and the architecture-only models (arch:NAME: published configs with
    random weights, for speed, memory and energy, never quality)."""
    from effbench.models import arch

    locations = [f"{arch.PREFIX}{n}" for n in arch.catalog()]
    for c in config or []:
        locations.append(arch.resolve_arch(c if arch.is_arch_name(c) else f"{arch.PREFIX}{c}")[1])
    summaries = [arch.summarize(loc) for loc in dict.fromkeys(locations)]
    bundled = _bundled()
    if as_json:
        typer.echo(json.dumps({"bundled": bundled, "architectures": [s.to_dict() for s in summaries]}, indent=2))
        return
    if bundled["available"]:
        out.print(f"bundled model: {bundled['name']} ({bundled['weights']}), {fmt_bytes(bundled['file_bytes'])} at "
                  f"{bundled['file']}")
    else:
        out.print(f"bundled model: {bundled['name']}: not installed ({bundled['reason']})")
    table = Table(title="Architecture-only models (--model arch:NAME; random weights: speed, memory, energy, never quality)")
    for col in ("model", "type", "params", "active", "stated", "diff", "bf16", "int8", "int4", "KV/token bf16", "context",
                "published as"):
        table.add_column(col, justify="left" if col in ("model", "type", "published as") else "right")
    for s in summaries:
        stated = (f"{s.stated_params / 1e9:.3g}B{' non-emb' if s.stated_scope == 'non-embedding' else ''}"
                  if s.stated_params else "-")
        table.add_row(
            cell(f"{arch.PREFIX}{s.name}"), cell(s.model_type), f"{s.params.total / 1e9:.3f}B",
            (f"{s.active_params / 1e9:.2f}B" + (f" ({s.stated_active_params / 1e9:.3g}B)" if s.stated_active_params else "")
             if s.active_params is not None else "all"), stated,
            f"{s.stated_deviation:+.2%}" if s.stated_deviation is not None else "-",
            *(fmt_bytes(s.weight_bytes(d)) for d in ("bf16", "int8", "int4")),
            fmt_bytes(s.kv_bytes_per_token_bf16), f"{s.max_context_tokens:,}" if s.max_context_tokens else "-",
            cell(s.hf_id or "-"),
        )
    out.print(table)
    out.print("params: unique parameters from the config (tied embeddings once); active: used per token by a mixture of "
              "experts (the model card's figure in brackets); stated: the model card's count ('non-emb' = without "
              "embeddings), compared like for like. int8/int4: weights alone, before scales and unquantized layers; "
              "fp32 weights in --json. KV/token: K and V of the attention layers (MLA: its latent; Mamba layers keep a "
              "fixed state instead), as vLLM caches them. context: the config's maximum (max_position_embeddings).")


def register(app: typer.Typer) -> None:
    """Add ``effbench models`` to the command-line app."""
    app.command("models")(models_command)
