"""Efficiency reports: markdown, one self-contained HTML file, PNG plots, CSV and LaTeX tables.

``model`` (records -> tidy rows, groups, Pareto front) holds the statistics; ``plots``,
``markdown``, ``html`` and ``export`` only present them; ``methodology`` describes how the runs
were measured; ``build`` puts it together.
"""
from __future__ import annotations

from effbench.report.build import ReportFiles, write_report

__all__ = ["ReportFiles", "write_report"]
