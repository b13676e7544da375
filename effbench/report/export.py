"""Publication exports: every tidy row as CSV, and a booktabs LaTeX table of the headline figures."""
from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict
from typing import Any, Sequence

from effbench.report.document import num
from effbench.report.model import Row, ok_rows, row_fields, row_flags

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


LATEX_COLUMNS = ["Hardware", "Model", "Scheme", "Batch", "Threads", "Prefill tok/s", "Decode tok/s", "Tokens/J", "PPL",
                 "$n$", "Flags"]
# one letter per row caveat, explained in the caption (the row_flags words in the other outputs)
_FLAG_LETTERS = (("time cap", "T"), ("interference", "I"), ("quality", "Q"), ("saturated", "S"))


def _flag_letters(r: Row) -> str:
    words = row_flags(r)
    return ",".join(letter for word, letter in _FLAG_LETTERS if any(w.startswith(word) for w in words)) or "--"


def to_latex(rows: Sequence[Row]) -> str:
    """A ``table`` environment (needs ``\\usepackage{booktabs}``). Failed configurations are left out:
    they are listed in the report. Rows of several runs carry a run letter (a, b, ...) keyed in the caption."""
    ok = [r for r in ok_rows(rows) if not r.serving]
    runs = sorted({r.source for r in ok})
    letters = {src: chr(ord("a") + i) if i < 26 else str(i + 1) for i, src in enumerate(runs)}
    several = len(runs) > 1
    body = []
    for r in ok:
        cells = [latex_escape(r.hardware), latex_escape(r.model), latex_escape(r.scheme), str(r.batch_size),
                 str(r.threads) if r.threads is not None else "--",
                 _pm(r.prefill_tokens_per_s, None), _pm(r.decode_tokens_per_s, r.ci95_rel), _energy(r),
                 num(r.perplexity, 2) if r.perplexity is not None else "--", str(r.repeats), _flag_letters(r)]
        if several:
            cells.append(letters[r.source])
        body.append(" & ".join(cells) + r" \\")
    notes = [r"Decode $\pm$: half-width of the 95\% confidence interval over $n$ repeats.",
             r"Tokens/J $\pm$: the 95\% energy uncertainty (repeat spread and sensor accuracy).",
             r"Flags: T stopped at the time cap before the CI target; I other work competed (interference); "
             r"Q perplexity rise above the sweep's threshold (quality flagged)."]
    if any(r.estimated for r in rows):
        notes.append(r"\textsuperscript{\dag}Energy ESTIMATED from TDP $\times$ utilisation, not measured.")
    if several:
        notes.append("Run: " + "; ".join(f"{letters[s]} = {latex_escape(s)}" for s in runs) + ".")
    columns = LATEX_COLUMNS + (["Run"] if several else [])
    lines = [
        "% effbench results table; requires \\usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{lll" + "r" * 7 + "l" + ("l" if several else "") + "}",
        r"\toprule",
        " & ".join(columns) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\caption{LLM inference efficiency measured with effbench. " + " ".join(notes) + "}",
        r"\label{tab:effbench}",
        r"\end{table}",
    ]
    serving = [r for r in ok_rows(rows) if r.serving]
    return "\n".join(lines) + "\n" + (serving_latex(serving) if serving else "")


SERVING_LATEX_COLUMNS = ["Hardware", "Model", "Scheme", "Offered", "Achieved req/s", "TTFT p50 ms", "TTFT p95 ms",
                         "TPOT p50 ms", "TPOT p95 ms", "Goodput req/s", "J/request", "Sat."]


def _bounds(value: float | None, lo: float | None, hi: float | None) -> str:
    if value is None:
        return "--"
    return num(value) + (f" [{num(lo)}, {num(hi)}]" if lo is not None and hi is not None else "")


def serving_latex(rows: Sequence[Row]) -> str:
    """The serving points: one row per offered load."""
    body = []
    for r in rows:
        jpr = _pm(r.joules_per_request, r.energy_uncertainty_rel)
        if r.estimated and r.joules_per_request is not None:
            jpr += r"\textsuperscript{\dag}"
        cells = [latex_escape(r.hardware), latex_escape(r.model), latex_escape(r.scheme), latex_escape(r.load),
                 num(r.achieved_rate), _bounds(r.ttft_p50_ms, r.ttft_p50_ci95_low_ms, r.ttft_p50_ci95_high_ms),
                 num(r.ttft_p95_ms), _bounds(r.tpot_p50_ms, r.tpot_p50_ci95_low_ms, r.tpot_p50_ci95_high_ms),
                 num(r.tpot_p95_ms), num(r.goodput), jpr, "yes" if r.saturated else "no"]
        body.append(" & ".join(c if c != "-" else "--" for c in cells) + r" \\")
    notes = [r"p50 latencies with their distribution-free 95\% interval in brackets.",
             r"J/request $\pm$: the 95\% energy uncertainty.",
             r"Sat.: the engine saturated at this load (its figures are the engine's limit)."]
    if any(r.estimated for r in rows):
        notes.append(r"\textsuperscript{\dag}Energy ESTIMATED from TDP $\times$ utilisation, not measured.")
    lines = [
        r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{llll" + "r" * 7 + "l}", r"\toprule",
        " & ".join(SERVING_LATEX_COLUMNS) + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}",
        r"\caption{Serving load measured with effbench. " + " ".join(notes) + "}", r"\label{tab:effbench-serving}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"
