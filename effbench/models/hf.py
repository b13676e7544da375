"""Quiet, offline-friendly transformers: one home for the logging settings every use shares."""
from __future__ import annotations

import logging
import os


def quiet_transformers() -> None:
    """Call before transformers is first imported: torchao (imported by transformers when installed)
    logs its missing CUDA kernels on CPU machines, and progress bars would garble effbench's output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
