"""A model loaded in this process (a ``Backend``), what a ``Scenario`` runs by default: ``open`` loads
it once per group and scores its perplexity, ``skip_reason`` refuses a point that cannot fit the
device and the larger batch sizes of a workload that ran out of memory, ``close`` unloads it."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

from effbench.backends import Backend, create_backend
from effbench.backends.base import LoadedModel
from effbench.errors import EffbenchError, OutOfMemory, UnsupportedError
from effbench.measure.fit import estimate_bytes, fit_error
from effbench.measure.host import trim_heap
from effbench.models import load_quality_text
from effbench.models.arch import RANDOM_WEIGHTS_QUALITY_NOTE, record_fields
from effbench.models.kv import ModelDims
from effbench.models.resolve import model_dims
from effbench.results.schema import ModelInfo, Quality
from effbench.scenarios.base import CannotRun, Group, Opened, Point, config_error, failure

if TYPE_CHECKING:
    from effbench.config import SweepConfig


class InProcessModel:
    """The group's engine (``engine``) and what loading it found (``loaded``), for ``measure``."""

    def __init__(self, config: SweepConfig) -> None:
        self.config = config
        self.engine: Optional[Backend] = None
        self.loaded: Optional[LoadedModel] = None
        self._dims: Optional[ModelDims] = None
        self._device = "cpu"
        self._oom_at: dict[tuple[str, int, int], int] = {}  # (prompt set, prompt, new tokens) -> batch size that ran out

    def place(self, backend: str, device: str) -> str:
        try:
            self.engine = create_backend(backend)
            self.engine.compile = self.config.offline.compile
            return self.engine.resolve_device(device)
        except UnsupportedError as e:
            raise CannotRun(f"unsupported: {e}", self._version()) from e

    def open(self, group: Group) -> Opened:
        engine = self.engine
        assert engine is not None, "place() creates the engine"
        reason = group.scheme.support(engine, group.device.partition(":")[0])
        if reason:
            raise CannotRun(f"unsupported: {reason}", self._version())
        group.notify(f"loading {group.spec.id} ({group.scheme.name}) on {group.device}")
        engine.notify = group.notify
        try:
            self.loaded = engine.load(group.spec, group.scheme, group.device, group.threads, group.seed)
        except (UnsupportedError, OutOfMemory) as e:
            raise CannotRun(f"load failed: {e}", self._version()) from e
        except EffbenchError:
            raise  # the user's input (a model file that is not a model): not this group's alone
        except Exception as e:  # a scheme that breaks on this model must not end the sweep
            kind = "out of memory" if engine.is_out_of_memory(e) else "load failed"
            raise CannotRun(failure(kind, e), self._version()) from e
        self._dims, self._device = model_dims(group.spec), group.device
        loaded = self.loaded
        return Opened(version=engine.version(), threads=engine.threads_in_use() or group.threads,
                      model=ModelInfo(id=group.spec.id, source=group.spec.source, params=loaded.params,
                                      weights_bytes=loaded.weights_bytes, **record_fields(group.spec.kind)),
                      quant_note=loaded.quant_note, quality=self._quality(group))

    def _version(self) -> Optional[str]:
        try:
            return self.engine.version() if self.engine is not None else None
        except Exception:  # noqa: BLE001 - a version string is not worth a second failure
            return None

    def _quality(self, group: Group) -> Quality:
        if group.spec.kind == "arch":
            return Quality(note=RANDOM_WEIGHTS_QUALITY_NOTE)
        if not self.config.offline.perplexity:
            return Quality(note="disabled (perplexity: false)")
        assert self.engine is not None
        return perplexity(self.engine)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.unload()
            self.engine = self.loaded = None
            trim_heap()

    def engine_pids(self) -> list[int]:
        return self.engine.worker_pids() if self.engine is not None else []

    def skip_reason(self, point: Point) -> Optional[str]:
        key = (point.prompt_set, point.prompt_tokens, point.new_tokens)
        if key in self._oom_at and point.batch_size > self._oom_at[key]:
            return f"skipped: batch size {self._oom_at[key]} ran out of memory"
        loaded = self.loaded
        assert loaded is not None, "open() loads the model"
        need = estimate_bytes(loaded.weights_bytes, loaded.kv_bytes_per_token, self._dims,
                              point.batch_size, point.prompt_tokens, point.new_tokens)
        return fit_error(need, self._device)

    def error_of(self, e: BaseException) -> str:
        return config_error(e, out_of_memory=self.engine is not None and self.engine.is_out_of_memory(e))

    def observe(self, point: Point, error: Optional[str]) -> None:
        if error and error.startswith("out of memory"):
            self._oom_at[(point.prompt_set, point.prompt_tokens, point.new_tokens)] = point.batch_size


def perplexity(backend: Backend) -> Quality:
    """Perplexity on the shipped texts (docs/method.md). Its rise over the baseline is the parent's to add."""
    try:
        ppl, n = backend.perplexity(load_quality_text("en"))
        ppl_ko, _ = backend.perplexity(load_quality_text("ko"))
    except NotImplementedError:
        return Quality(note="this backend cannot score perplexity")
    except Exception as e:  # noqa: BLE001
        return Quality(note=failure("perplexity failed", e))
    if not math.isfinite(ppl):  # fp16/fp8 overflow: the scheme's quality cost is unbounded, not unknown
        return Quality(text="effbench/quality/en", tokens=n, flagged=True,
                       note=f"perplexity is not finite ({ppl}): the scheme overflows on this model")
    return Quality(perplexity=ppl, text="effbench/quality/en", tokens=n,
                   perplexity_ko=ppl_ko if math.isfinite(ppl_ko) else None)
