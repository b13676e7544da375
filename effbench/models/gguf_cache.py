"""Convert a GGUF file once into a normal Hugging Face checkpoint in the user cache dir.

transformers dequantizes GGUF on every load (~30 s for SmolLM2-135M on 2 cores); the converted
safetensors checkpoint reloads in well under a second.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

import platformdirs

from effbench.errors import EffbenchError, first_line

MARKER = "effbench-converted.json"


def cache_root() -> Path:
    return Path(os.environ.get("EFFBENCH_CACHE_DIR") or platformdirs.user_cache_dir("effbench"))


def _fingerprint(path: Path) -> str:
    """Size plus a hash of the first MiB: cheap, and changes when the file is replaced."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
    return f"{path.stat().st_size}-{h.hexdigest()[:16]}"


def cached_checkpoint(gguf: Path, notify: Optional[Callable[[str], None]] = None) -> Path:
    """The converted checkpoint dir for ``gguf``, converting it on first use."""
    fingerprint = _fingerprint(gguf)
    target = cache_root() / "models" / f"{gguf.stem}-{fingerprint}"
    if (target / MARKER).is_file():
        return target
    if notify:
        notify(f"converting {gguf.name} to a cached checkpoint in {target.parent} (first use only)")

    def build(tmp: Path) -> None:
        _convert(gguf, tmp)
        (tmp / MARKER).write_text(json.dumps({"source": str(gguf), "fingerprint": fingerprint}))

    return _write_atomically(target, build, "model cache")


def cached_tokenizer(gguf: Path, notify: Optional[Callable[[str], None]] = None) -> Path:
    """A directory holding ``gguf``'s tokenizer alone: the converted checkpoint's where one exists,
    else the tokenizer read from the GGUF once and cached (a serving client needs no weights)."""
    fingerprint = _fingerprint(gguf)
    full = cache_root() / "models" / f"{gguf.stem}-{fingerprint}"
    if (full / MARKER).is_file():
        return full
    target = cache_root() / "tokenizers" / f"{gguf.stem}-{fingerprint}"
    if (target / "tokenizer.json").is_file():
        return target
    if notify:
        notify(f"reading the tokenizer of {gguf.name} into {target.parent} (first use only)")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for unsupported GGUF files
        raise EffbenchError(f"transformers cannot read the tokenizer of '{gguf}': {first_line(e) or type(e).__name__}") from None
    return _write_atomically(target, lambda tmp: tok.save_pretrained(str(tmp)), "tokenizer cache")


def _write_atomically(target: Path, build: Callable[[Path], object], what: str) -> Path:
    """``build`` fills a fresh directory beside ``target``, which then replaces it in one rename: a
    run killed half-way leaves no half-written cache entry."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        build(tmp)
        if target.exists():  # a half-written dir from an interrupted build
            shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except OSError as e:
        raise EffbenchError(f"cannot write the {what} in {target.parent}: {e}; set EFFBENCH_CACHE_DIR to a writable "
                            "dir") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ["TQDM_DISABLE"] = "1"  # transformers' GGUF conversion draws its own progress bar
    kwargs: dict = {}
    try:  # a plain GGUF load is not serializable; dequantize=True makes a normal model
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, **kwargs)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for unsupported GGUF architectures
        raise EffbenchError(f"transformers cannot load '{gguf}': {first_line(e) or type(e).__name__}") from None
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
