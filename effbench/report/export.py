"""Publication exports: every tidy row as CSV, and a booktabs LaTeX table of the headline figures."""
from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict
from typing import Any, Sequence

from effbench.report.document import num
from effbench.report.model import Row, ok_rows, row_fields

# Spreadsheets execute cells that start with these (CSV injection); a leading apostrophe keeps the
# text literal. Numbers are written as numbers, so only strings are touched.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return "" if value is None else value


def to_csv(rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(row_fields())
    for r in rows:
        writer.writerow([csv_cell(v) for v in asdict(r).values()])
    return buf.getvalue()


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
    ">": r"\textgreater{}", "|": r"\textbar{}",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIAL))


def latex_escape(text: str) -> str:
    """Plain text for a LaTeX document: special characters escaped, line breaks flattened."""
    flat = " ".join(str(text).split())
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIAL[m.group(0)], flat)


def _pm(value: float | None, rel: float | None) -> str:
    if value is None:
        return "--"
    text = num(value)
    if rel is None:
        return text
    decimals = len(text.split(".")[1]) if "." in text else 0  # the error to the value's precision
    return f"{text} $\\pm$ {abs(value * rel):,.{decimals}f}"


def _energy(r: Row) -> str:
    text = _pm(r.tokens_per_joule, r.energy_uncertainty_rel)
    return text + r"\textsuperscript{\dag}" if r.estimated and r.tokens_per_joule is not None else text


LATEX_COLUMNS = ["Hardware", "Model", "Scheme", "Batch", "Prefill tok/s", "Decode tok/s", "Tokens/J", "PPL", "$n$"]


def to_latex(rows: Sequence[Row]) -> str:
    """A ``table`` environment (needs ``\\usepackage{booktabs}``). Failed configurations are left out:
    they are listed in the report."""
    body = []
    for r in ok_rows(rows):
        cells = [latex_escape(r.hardware), latex_escape(r.model), latex_escape(r.scheme), str(r.batch_size),
                 _pm(r.prefill_tokens_per_s, None), _pm(r.decode_tokens_per_s, r.ci95_rel), _energy(r),
                 num(r.perplexity, 2) if r.perplexity is not None else "--", str(r.repeats)]
        body.append(" & ".join(cells) + r" \\")
    notes = [r"Decode $\pm$: half-width of the 95\% confidence interval over $n$ repeats.",
             r"Tokens/J $\pm$: relative energy uncertainty (repeat spread and sensor accuracy)."]
    if any(r.estimated for r in rows):
        notes.append(r"\textsuperscript{\dag}Energy ESTIMATED from TDP $\times$ utilisation, not measured.")
    lines = [
        "% effbench results table; requires \\usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{lllrrrrrr}",
        r"\toprule",
        " & ".join(LATEX_COLUMNS) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\caption{LLM inference efficiency measured with effbench. " + " ".join(notes) + "}",
        r"\label{tab:effbench}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"
