"""Aggregates of a study table, and the short markdown summary the command line writes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .reference import OUR_PROTOCOL, reference_notes, reference_table

#: Metrics averaged in summaries (those with no finite value in a table are left out).
METRICS = ("spearman", "pearson", "rel_error", "frac_within_noise", "effect_to_noise",
           "top_eigenvalue", "min_eigenvalue", "objective", "grad_norm", "converged",
           "est_seconds")
#: Columns that identify one trained model in a study table.
MODEL_KEYS = ("dataset", "arch", "depth", "width", "activation", "weight_decay", "seed")


def summarize(table: pd.DataFrame, study: str | None = None,
              by: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean of each metric per group of ``by`` (default: the study's own grouping); for the
    correlations also the sd over rows and the standard error of the mean (``*_se`` = sd /
    sqrt(n): a difference between two groups is a finding only beyond about twice the combined
    standard error); ``converged`` is the fraction of rows whose model reached its gradient
    tolerance; ``n`` rows per group. The published figures are never put in these columns (their
    protocol differs): see :func:`~.reference.reference_table`."""
    if table.empty:
        return pd.DataFrame()
    if by is None:
        from .studies import get_study

        by = get_study(study or str(table["study"].iloc[0])).by
    by = [c for c in by if c in table.columns]
    metrics = [m for m in METRICS if m in table and np.isfinite(table[m].astype(float)).any()]
    grouped = table.groupby(by, dropna=False, sort=True)
    out = grouped[metrics].mean()
    n = grouped.size()
    for m in ("spearman", "pearson"):
        if m in metrics:
            sd = grouped[m].std()
            out.insert(out.columns.get_loc(m) + 1, f"{m}_sd", sd)
            out.insert(out.columns.get_loc(m) + 2, f"{m}_se", sd / np.sqrt(grouped[m].count()))
    out["n"] = n
    return out.reset_index()


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
    trust = trust_notes(table)
    if trust:
        lines += ["", "## Can these numbers be trusted?", ""] + [f"- {t}" for t in trust]
    summary = summarize(table, study)
    if not summary.empty:
        lines += ["", "## Our numbers", "", markdown_table(summary)]
    from .claims import claims_frame, study_claims

    claims = study_claims(study, table)
    if claims:
        lines += ["", "## Claims (models as units; preset and check seeds)", "",
                  markdown_table(claims_frame(claims))]
    ref = reference_table(study)
    if not ref.empty:
        lines += ["", "## Published figures (their protocol, not ours)", "",
                  markdown_table(ref)]
        if study in OUR_PROTOCOL:
            lines += ["", OUR_PROTOCOL[study] + "."]
    lines += ["", "## Reference (literal, from the papers; docs/findings.md)", ""] + [f"- {n}" for n in reference_notes(study)]
    if options:
        lines += ["", "## Settings", ""] + [f"- `{k}`: {v}" for k, v in options.items()]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def _n_models(table: pd.DataFrame) -> int:
    keys = [c for c in MODEL_KEYS if c in table]
    return len(table.drop_duplicates(keys)) if keys and not table.empty else 0


def trust_notes(table: pd.DataFrame) -> list[str]:
    """What a reader must know before reading the correlations: models far from a stationary
    point, degenerate (separable, no weight decay) models and indefinite Hessians, counted per
    group of activation and weight decay with the same rules as the findings of ``iw.influence``
    (:mod:`influence_widgets._findings`)."""
    from .._findings import degenerate_findings, stationarity_findings

    need = {"objective", "grad_norm", "weight_decay"}
    if table.empty or not need <= set(table.columns):
        return []
    keys = [c for c in MODEL_KEYS if c in table]
    models = table.drop_duplicates(keys)
    notes = []
    group = [c for c in ("activation", "weight_decay") if c in models]
    for label, g in (models.groupby(group, dropna=False) if group else [((), models)]):
        label = label if isinstance(label, tuple) else (label,)
        what = ", ".join(f"{k} {v}" for k, v in zip(group, label, strict=True)) or "all models"
        far, degenerate, indefinite = [], 0, 0
        for r in g.itertuples(index=False):
            row = r._asdict()
            codes = {f.code for f in stationarity_findings(float(row["objective"]),
                                                           float(row["grad_norm"]))}
            if "not-stationary" in codes:
                far.append(float(row["grad_norm"]))
            acc = row.get("train_acc")
            top = row.get("top_eigenvalue")
            deg = degenerate_findings(float(row["objective"]),
                                      None if acc is None or pd.isna(acc) else float(acc),
                                      None if top is None or pd.isna(top) else float(top),
                                      float(row.get("damping") or 0.0),
                                      weight_decay=float(row["weight_decay"]))
            degenerate += any(f.code == "degenerate" for f in deg)
            lo = row.get("min_eigenvalue")
            indefinite += lo is not None and not pd.isna(lo) and lo + float(row.get("damping") or 0) < 0
        n = len(g)
        if far:
            notes.append(f"{what}: {len(far)} of {n} models are far from a stationary point "
                         f"(gradient norm {min(far):.1e} to {max(far):.1e}): first-order influence "
                         "assumes a minimum, so part of any disagreement is the optimiser's drift")
        if degenerate:
            notes.append(f"{what}: {degenerate} of {n} models are degenerate (separable data "
                         "without weight decay: objective near 0, curvature vanishing): their "
                         "estimate is a scaled gradient dot product, not an influence")
        if indefinite:
            notes.append(f"{what}: {indefinite} of {n} models have an indefinite Hessian at the "
                         "damping used: estimates there are unreliable")
    return notes


def health_table(table: pd.DataFrame, by: Sequence[str] | None = None) -> pd.DataFrame:
    """How many models of each condition are healthy, collapsed, degenerate, not stationary or
    indefinite (one model counted once, however many rows it has), and the share at a
    stationary point: what the claims can rest on (only stationary, non-collapsed models carry
    a finding). ``by``: the condition columns (default: the model columns but the seed)."""
    from .claims import model_key

    if table.empty or "health" not in table:
        return pd.DataFrame()
    key = model_key(table)
    models = table.drop_duplicates(key + (["seed_set"] if "seed_set" in table else []))
    cond = [c for c in (by or key) if c in models and c not in ("seed", "study")]
    counts = (models.groupby(cond + ["health"], dropna=False).size()
              .unstack("health", fill_value=0) if cond else
              models["health"].value_counts().to_frame().T)
    counts = counts.reindex(columns=[c for c in ("healthy", "indefinite", "not stationary",
                                                 "degenerate", "collapsed") if c in counts])
    if cond:
        counts["stationary share"] = models.groupby(cond, dropna=False)["stationary"].mean()
        counts["models"] = models.groupby(cond, dropna=False).size()
    return counts.reset_index() if cond else counts


def stored_results(study: str, folder: str | Path) -> tuple[pd.DataFrame, list[Path]] | None:
    """The table and figures a ``reproduce`` run wrote for ``study`` under ``folder`` (e.g. the
    repository's ``docs/results/<study>``), or None when there is none: notebooks show these
    first, before anything is computed."""
    folder = Path(folder)
    csv = folder / f"{study}.csv"
    if not csv.is_file():
        return None
    table = pd.read_csv(csv, keep_default_na=True)
    for flag in ("converged", "stationary", "collapsed"):
        if flag in table:
            table[flag] = table[flag].astype(bool)
    if "error" in table:
        table["error"] = table["error"].fillna("")
    return table, sorted(folder.glob(f"{study}_*.png"))
