"""Efficiency reports: markdown, one self-contained HTML file, PNG plots, CSV and LaTeX tables.

``model`` (records -> tidy rows, groups, Pareto front) holds the statistics; ``plots``,
``markdown``, ``html`` and ``export`` only present them; ``methodology`` describes how the runs
were measured; ``build`` puts it together.

``ReportFiles`` and ``write_report`` are imported on first use: importing a light submodule
(``document``, the CLI's byte formatter) must not load the statistics and plotting stack.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from effbench.report.build import ReportFiles, write_report

__all__ = ["ReportFiles", "write_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from effbench.report import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
