"""Where the sweep runs: the sweep file's ``launcher:`` section (``kind`` and that launcher's typed
options, its fleet ``targets``), or ``--launcher`` / ``--launcher-opt KEY=VALUE`` on the command line.
Each launcher's options are its own ``Options`` model (effbench/launchers/<kind>.py), checked here
against the kind chosen, so a mistyped option fails before anything runs."""
from __future__ import annotations

from typing import Any, Optional

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from effbench.config_fields import checked, cli


class TargetConfig(BaseModel):
    """One fleet target of ``launcher: targets:``: where its groups run (its own launcher options over
    the section's, e.g. a SLURM partition or a Ray accelerator type) and the hardware profile its
    records are filed under (else the one detected there)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    hardware: Optional[str] = None

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LauncherConfig(BaseModel):
    """``kind`` and its options (every other key of the section); ``targets`` run the same groups on
    several machines of a fleet."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    kind: str = Field(default="inline", json_schema_extra=cli(
        "Where groups run: inline, process (one child per group), slurm (submitit) or ray.", "--launcher"))
    targets: list[TargetConfig] = Field(default_factory=list)
    _typed: dict[Optional[str], Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _section(cls, data: Any) -> Any:
        """A bare name (``launcher: slurm``) is the kind; ``name:`` is an older spelling of ``kind:``."""
        if isinstance(data, str):
            return {"kind": data}
        if isinstance(data, dict) and "name" in data and "kind" not in data:
            data = dict(data)
            data["kind"] = data.pop("name")
        return data

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, v: Any) -> Any:
        from effbench.launchers import LAUNCHERS

        return checked(LAUNCHERS.canonical, v)

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, v: list[TargetConfig]) -> list[TargetConfig]:
        names = [t.name for t in v]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ValueError(f"target '{dup}' is listed twice; give each target its own name")
        return v

    @model_validator(mode="after")
    def _typed_options(self) -> "LauncherConfig":
        """Every target's options (the section's, then the target's own) as the launcher's ``Options``."""
        from effbench.errors import EffbenchError
        from effbench.launchers import LAUNCHERS
        from effbench.launchers.base import parse_options

        launcher = LAUNCHERS.get(self.kind)
        try:
            self._typed = {t: parse_options(launcher, self.raw_options(t)) for t in [None, *self.targets_by_name()]}
        except EffbenchError as e:
            raise ValueError(str(e)) from None
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any, info: SerializationInfo) -> dict[str, Any]:
        """The section as a sweep file writes it, its options resolved (typed, defaults filled in)."""
        data = handler(self)
        if not info.exclude_unset:
            data.update(self._typed[None].model_dump(mode=info.mode))
        return dict(data)

    def targets_by_name(self) -> dict[str, TargetConfig]:
        return {t.name: t for t in self.targets}

    def raw_options(self, target: Optional[str] = None) -> dict[str, Any]:
        shared = dict(self.model_extra or {})
        own = self.targets_by_name()[target].options if target is not None else {}
        return {**shared, **own}

    def options(self, target: Optional[str] = None) -> Any:
        """The typed options (the launcher's ``Options``) for one target, or the section's own."""
        return self._typed[target]
