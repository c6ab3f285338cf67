"""Aggregates of a study table, and the short markdown summary the command line writes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .reference import (
    NO_WEIGHT_DECAY_RANGE,
    REFERENCE_DEPTH,
    REFERENCE_WEIGHT_DECAY,
    reference_notes,
)

#: Metrics averaged in summaries (those with no finite value in a table are left out).
METRICS = ("spearman", "pearson", "rel_error", "frac_within_noise", "effect_to_noise",
           "top_eigenvalue", "grad_norm", "est_seconds")


def summarize(table: pd.DataFrame, study: str | None = None,
              by: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean (and sd for the correlations) of each metric per group of ``by`` (default: the
    study's own grouping), with ``n`` rows per group and, for the depth study, the reference."""
    if table.empty:
        return pd.DataFrame()
    if by is None:
        from .studies import get_study

        by = get_study(study or str(table["study"].iloc[0])).by
    by = [c for c in by if c in table.columns]
    metrics = [m for m in METRICS if m in table and np.isfinite(table[m].astype(float)).any()]
    grouped = table.groupby(by, dropna=False, sort=True)
    out = grouped[metrics].mean()
    for m in ("spearman", "pearson"):
        if m in metrics:
            out.insert(out.columns.get_loc(m) + 1, f"{m}_sd", grouped[m].std())
    out["n"] = grouped.size()
    out = out.reset_index()
    if "depth" in by and (study or table["study"].iloc[0]) == "depth":
        out = _with_reference(out)
    return out


def _with_reference(summary: pd.DataFrame) -> pd.DataFrame:
    ref = REFERENCE_DEPTH.rename(columns={"spearman": "ref_spearman",
                                          "top_eigenvalue": "ref_top_eigenvalue"})
    out = summary.merge(ref, on="depth", how="left")
    no_ref = ~np.isclose(out["weight_decay"].astype(float), REFERENCE_WEIGHT_DECAY)
    out.loc[no_ref, ["ref_spearman", "ref_top_eigenvalue"]] = math.nan
    return out


def markdown_table(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return "" if math.isnan(v) else f"{v:.{digits}g}"
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def markdown_summary(study: str, table: pd.DataFrame, *, preset: str, seconds: float,
                     options: dict[str, Any] | None = None, figures: Sequence[str] = ()) -> str:
    """The summary the command line writes: our numbers, the reference, notes and settings."""
    from .studies import get_study

    s = get_study(study)
    lines = [f"# {study} study (preset `{preset}`)", "", f"Finding {s.finding}.", "",
             f"{len(table)} rows from {_n_models(table)} model(s) in {seconds:.0f} s."]
    errors = table["error"].astype(str).replace("nan", "") if "error" in table else pd.Series()
    if (errors != "").any():
        lines.append(f"{int((errors != '').sum())} row(s) have an estimate error "
                     "(see the `error` column).")
    lines += [f"Note: {n}" for n in table.attrs.get("notes", [])]
    summary = summarize(table, study)
    if not summary.empty:
        lines += ["", "## Our numbers" + (" beside the reference" if "ref_spearman" in summary
                                          else ""), "", markdown_table(summary)]
    if study == "depth":
        lo, hi = NO_WEIGHT_DECAY_RANGE
        lines += ["", f"Reference columns apply to weight decay {REFERENCE_WEIGHT_DECAY} only; "
                  f"without weight decay the reference reports mean Spearman {lo}-{hi}."]
    lines += ["", "## Reference (PAPER.md)", ""] + [f"- {n}" for n in reference_notes(study)]
    if options:
        lines += ["", "## Settings", ""] + [f"- `{k}`: {v}" for k, v in options.items()]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def _n_models(table: pd.DataFrame) -> int:
    keys = [c for c in ("dataset", "arch", "depth", "width", "activation", "weight_decay", "seed")
            if c in table]
    return len(table.drop_duplicates(keys)) if keys and not table.empty else 0
