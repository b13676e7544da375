"""The offline scenario's own keys (the sweep file's ``offline:`` section; on the command line and
as top-level sweep-file keys they keep their plain names, ``--warmup``, ``ci_target: 0.05``): the
repeat rule of docs/method.md (warm-up, adaptive repeats to a CI95 target, a time cap), compilation
and the perplexity check."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from effbench.config_fields import cli


class OfflineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    repeats: Optional[int] = Field(default=None, ge=1, json_schema_extra=cli(
        "Exactly this many repeats per configuration.", "--repeats", "-r",
        default="adaptive, until CI95 <= --ci-target"))
    warmup: int = Field(default=1, ge=0, json_schema_extra=cli("Warm-up generations per configuration."))
    # The median's bootstrap interval needs a few repeats.
    min_repeats: int = Field(default=5, ge=1, json_schema_extra=cli("Adaptive mode: fewest repeats."))
    max_repeats: int = Field(default=30, ge=1, json_schema_extra=cli("Adaptive mode: most repeats."))
    ci_target: float = Field(default=0.05, gt=0, lt=1, json_schema_extra=cli(
        "Stop when the CI95 of decode tok/s is within this relative width."))
    max_time_s: float = Field(default=45.0, gt=0, json_schema_extra=cli("Time cap per configuration in seconds."))
    compile: bool = Field(default=False, json_schema_extra=cli(
        "torch.compile the model (transformers backend).", "--compile/--eager", default="eager"))
    perplexity: bool = Field(default=True, json_schema_extra=cli(
        "Score perplexity on the shipped texts.", "--perplexity/--no-perplexity"))
    ppl_threshold: float = Field(default=0.10, gt=0, json_schema_extra=cli(
        "Flag schemes whose perplexity rises more than this share over the unquantized one."))

    @model_validator(mode="after")
    def _repeat_bounds(self) -> "OfflineConfig":
        if self.min_repeats > self.max_repeats and "min_repeats" not in self.model_fields_set:
            # a lower --max-repeats alone lowers the default minimum (object.__setattr__: no re-validation loop)
            object.__setattr__(self, "min_repeats", self.max_repeats)
        if self.min_repeats > self.max_repeats:
            raise ValueError(f"min_repeats ({self.min_repeats}) is larger than max_repeats ({self.max_repeats})")
        return self
