"""Each study's claims, computed from its table, with the trained model as the unit.

A claim is a number (a mean, or a difference of means) with its standard error over **trained
models**, a rule and a two-sided verdict:

* **the unit is a model**: the rows of one model (its test points, solvers, parameter sets) are
  averaged first, and seeds that reached the same minimum (same objective and test losses, the
  ``minimum`` column) count once; a finding needs at least :data:`MIN_MODELS` distinct models
  per arm;
* **only healthy models carry a finding**: collapsed models are excluded and counted, models that
  stopped short of a stationary point are left out of the finding and reported apart (a
  "description" claim beside it);
* **two-sided**: "held" (beyond two standard errors in the claimed direction), "reversed beyond
  2 SE", or "not reproduced at this scale";
* **two disjoint seed sets**: a study runs its preset seeds and a set of check seeds (the
  ``seed_set`` column); a claim is judged on each, and a verdict that differs between them reads
  "unstable" and is never called held.

Notebooks print these sentences and the README's results table is made from them
(``python -m influence_widgets results-table``), so no number is written by hand. A *check* is a
condition the protocol needs; a *description* is a number reported without a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: The notebook of each study (for the results table).
NOTEBOOK = {
    "depth": "01_depth_and_width", "width": "01_depth_and_width",
    "weight_decay": "02_weight_decay", "architecture": "03_architectures",
    "test_point": "04_test_points", "solver": "05_solvers_and_curvature",
    "validation": "06_validation_procedure", "group": "07_scale_and_groups",
    "noise": "07_scale_and_groups", "ground_truth": "08_which_ground_truth",
}
HELD = "held"
REVERSED = "reversed beyond 2 SE"
NOT_REPRODUCED = "not reproduced at this scale"
UNSTABLE = "unstable"
NO_DATA = "no data (n = 0)"  # not one finite value: nothing was judged
VERDICTS = (HELD, REVERSED, NOT_REPRODUCED, UNSTABLE, NO_DATA)
#: A finding needs at least this many distinct trained models in each arm.
MIN_MODELS = 5
#: The seed sets of a study table (``seed_set`` column): the preset's seeds and the check seeds.
SEED_SETS = ("preset", "check")
#: Columns that identify one trained model (those present in a table).
MODEL_COLUMNS = ("study", "model", "dataset", "arch", "depth", "width", "activation",
                 "weight_decay", "schedule", "seed")
#: The header of the results table (the README's table starts with it; a test checks that).
RESULTS_HEADER = ("| notebook | claim | value ± SE (units: models) | n models | verdict, preset "
                  "seeds | verdict, check seeds | stable |\n|---|---|---|---|---|---|---|")
#: Bootstrap draws of the null of the range claim.
NULL_DRAWS = 2000


@dataclass(frozen=True)
class Estimate:
    """A claim's number on one seed set: ``value`` with its standard error ``se`` and standard
    deviation ``sd`` over ``n`` model units, and the verdict there."""

    value: float
    se: float
    sd: float
    n: int
    verdict: str
    n_seeds: int = 0


@dataclass(frozen=True)
class Claim:
    """One claim of a study, judged on the preset seeds (``main``) and on the check seeds
    (``check``; None when the table has one seed set). ``kind``: "finding" (a verdict),
    "check" (a condition the protocol needs: ok / FAILED) or "description" (reported)."""

    study: str
    key: str
    what: str
    rule: str
    main: Estimate
    check: Estimate | None = None
    kind: str = "finding"
    note: str = ""
    excluded: str = ""  # which models were left out, and why

    @property
    def value(self) -> float:
        return self.main.value

    @property
    def se(self) -> float:
        return self.main.se

    @property
    def sd(self) -> float:
        return self.main.sd

    @property
    def n(self) -> int:
        return self.main.n

    @property
    def n_seeds(self) -> int:
        return self.main.n_seeds

    @property
    def stable(self) -> bool | None:
        """Whether both seed sets give the same verdict (None with one seed set)."""
        if self.check is None:
            return None
        return self.main.verdict == self.check.verdict

    @property
    def verdict(self) -> str:
        if self.kind == "description":
            return "reported"
        if self.kind == "check":
            ok = self.main.verdict == HELD and (self.check is None or self.check.verdict == HELD)
            return "ok" if ok else "FAILED"
        if self.check is not None and not self.stable:
            return UNSTABLE
        return self.main.verdict

    @property
    def held(self) -> bool | None:
        if self.kind == "description":
            return None
        return self.verdict in (HELD, "ok")

    @property
    def sentence(self) -> str:
        def part(e: Estimate, label: str) -> str:
            se = "" if not np.isfinite(e.se) else f" ± {_g(e.se)}"
            return (f"{label}{_g(e.value)}{se} (mean ± SE over {e.n} model(s) from "
                    f"{e.n_seeds} seed(s))")

        text = f"{self.what}: {part(self.main, '')}"
        if self.check is not None:
            text += f"; check seeds {part(self.check, '')}"
        if self.kind != "description":
            sets = "" if self.check is None else (
                f" [preset seeds: {self.main.verdict}; check seeds: {self.check.verdict}]")
            text += f"; rule: {self.rule} -> {self.verdict}{sets}"
        extra = "; ".join(x for x in (self.excluded, self.note) if x)
        return text + (f". {extra}" if extra else "")


def _g(v: float | None) -> str:
    """Three significant digits (never 0.000 for a small value)."""
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


# ----------------------------------------------------------------------------- units


def model_key(rows: pd.DataFrame) -> list[str]:
    """The columns of ``rows`` that identify one trained model."""
    return [c for c in MODEL_COLUMNS if c in rows.columns]


def usable(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """``rows`` split into those of healthy-enough models (not collapsed, stationary) and those
    of models stopped short of a stationary point (reported apart); collapsed models are
    dropped. The third value says, in words, what was left out (counted in models)."""
    key = model_key(rows)
    collapsed = rows["collapsed"].astype(bool) if "collapsed" in rows else pd.Series(
        False, index=rows.index)
    stationary = rows["stationary"].astype(bool) if "stationary" in rows else pd.Series(
        True, index=rows.index)
    n_collapsed = rows[collapsed].drop_duplicates(key).shape[0] if key else int(collapsed.sum())
    moving = rows[~collapsed & ~stationary]
    n_moving = moving.drop_duplicates(key).shape[0] if key else len(moving)
    words = []
    if n_collapsed:
        words.append(f"{n_collapsed} collapsed model(s) excluded")
    if n_moving:
        words.append(f"{n_moving} model(s) not at a stationary point reported apart")
    return rows[~collapsed & stationary], moving, ", ".join(words)


def units(rows: pd.DataFrame, col: str, by: Sequence[str] = ()) -> pd.DataFrame:
    """One row per model unit with the mean of ``col`` over its rows (test points, solvers,
    ...): grouped by the model columns and ``by``; models of the same condition whose seeds
    reached the same minimum (``minimum`` column) are one unit. Returns the condition columns,
    ``unit`` (an identifier) and ``value``."""
    key = [c for c in model_key(rows) if c not in by] + list(by)
    if rows.empty:
        return pd.DataFrame(columns=[*key, "unit", "value"])
    data = rows.assign(value=pd.to_numeric(rows[col], errors="coerce"))
    data.attrs = {}  # a study table keeps its (estimated, actual) arrays there: not needed
    per_model = data.groupby(key, dropna=False, sort=False)["value"].mean().reset_index()
    if "minimum" in rows.columns:
        minima = data.groupby(key, dropna=False, sort=False)["minimum"].first().reset_index()
        per_model = per_model.merge(minima, on=key, how="left")
        cond = [c for c in key if c != "seed"]
        per_model["unit"] = per_model["minimum"].astype(str)
        per_model = (per_model.groupby([*cond, "unit"], dropna=False, sort=False)["value"]
                     .mean().reset_index())
    else:
        per_model["unit"] = per_model[key].astype(str).agg("|".join, axis=1)
    return per_model[np.isfinite(per_model["value"].to_numpy(dtype=float))]


def _stats(v: Iterable[float]) -> tuple[float, float, float, int]:
    a = np.asarray([x for x in v if x is not None and np.isfinite(x)], dtype=float)
    if len(a) == 0:
        return math.nan, math.nan, math.nan, 0
    sd = float(a.std(ddof=1)) if len(a) > 1 else math.nan
    return float(a.mean()), sd / math.sqrt(len(a)) if len(a) > 1 else math.nan, sd, len(a)


def two_sided(mean: float, se: float, n: int, *, bar: float = 0.0,
              least: int = MIN_MODELS) -> str:
    """Held when ``mean - 2 se > bar``, reversed when ``mean + 2 se < bar``, else not
    reproduced (also with fewer than ``least`` units or no standard error)."""
    if n == 0:
        return NO_DATA
    if n < least or not (np.isfinite(mean) and np.isfinite(se)):
        return NOT_REPRODUCED
    if mean - 2 * se > bar:
        return HELD
    if mean + 2 * se < bar:
        return REVERSED
    return NOT_REPRODUCED


def _seeds(rows: pd.DataFrame) -> int:
    return int(rows["seed"].nunique()) if "seed" in rows and len(rows) else 0


def _split(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The rows of each seed set present (a table without ``seed_set`` is one "preset" set)."""
    if "seed_set" not in rows:
        return {"preset": rows}
    return {s: rows[rows.seed_set == s] for s in SEED_SETS}


def seed_sets_of(*frames: pd.DataFrame) -> list[str]:
    """The seed sets a study table holds (its ``seed_set`` column; none: one "preset" set)."""
    found = {s for f in frames if "seed_set" in f for s in f["seed_set"].dropna().unique()}
    return [s for s in SEED_SETS if s in found] or ["preset"]


def _both(rows: Sequence[pd.DataFrame], compute: Callable[..., Estimate],
          sets: Sequence[str]) -> tuple[Estimate, Estimate | None]:
    """``compute`` on the preset seeds and on the check seeds of every frame in ``rows``;
    ``sets``: the seed sets of the whole table (a set whose models were all left out still
    counts, with n = 0)."""
    parts = [_split(r) for r in rows]
    empty = [r.iloc[:0] for r in rows]
    results = {s: compute(*[p.get(s, e) for p, e in zip(parts, empty)]) for s in sets}
    return results[sets[0]], results.get("check") if len(sets) > 1 else None


# ----------------------------------------------------------------------------- claim kinds


def level(study: str, key: str, what: str, rows: pd.DataFrame, col: str = "spearman", *,
          above: float | None = None, below: float | None = None, kind: str = "finding",
          note: str = "", healthy_only: bool = True, least: int = MIN_MODELS) -> Claim:
    """The mean of ``col`` over model units; judged against ``above`` (held when the mean is
    above it beyond 2 SE, reversed when below it beyond 2 SE) or ``below`` (the mirror)."""
    good, _, excluded = usable(rows) if healthy_only else (rows, rows.iloc[:0], "")

    def compute(r: pd.DataFrame) -> Estimate:
        u = units(r, col)
        mean, se, sd, n = _stats(u["value"])
        if above is not None:
            v = two_sided(mean, se, n, bar=above, least=least)
        elif below is not None:
            v = two_sided(mean, se, n, bar=below, least=least)
            v = {HELD: REVERSED, REVERSED: HELD, NO_DATA: NO_DATA}.get(v, NOT_REPRODUCED)
        else:
            v = "reported"
        return Estimate(mean, se, sd, n, v, _seeds(r))

    main, check = _both([good], compute, seed_sets_of(rows))
    rule = (f"mean - 2 SE > {above:g} (reversed: mean + 2 SE < {above:g}), >= {least} models"
            if above is not None else
            f"mean + 2 SE < {below:g} (reversed: mean - 2 SE > {below:g}), >= {least} models"
            if below is not None else "")
    return Claim(study, key, what, rule, main, check, kind if rule else "description", note,
                 excluded)


def difference(study: str, key: str, what: str, a: pd.DataFrame, b: pd.DataFrame,
               col: str = "spearman", *, paired: bool = False, note: str = "",
               healthy_only: bool = True) -> Claim:
    """Mean of ``a`` minus mean of ``b`` in ``col`` over model units: paired when the same model
    is in both (e.g. two test points or two solvers of each model), else two independent
    samples of models (n: the smaller arm). Two-sided, at least :data:`MIN_MODELS` per arm."""
    (ga, _, xa), (gb, _, xb) = ((usable(a), usable(b)) if healthy_only
                                else ((a, a.iloc[:0], ""), (b, b.iloc[:0], "")))

    def compute(ra: pd.DataFrame, rb: pd.DataFrame) -> Estimate:
        ua, ub = units(ra, col), units(rb, col)
        if paired:  # the same model unit in both arms: matched on every identifying column
            on = [c for c in ua.columns if c in ub.columns and c != "value"]
            joined = ua.merge(ub, on=on, suffixes=("_a", "_b"))
            mean, se, sd, n = _stats(joined["value_a"] - joined["value_b"])
        else:
            ma, sa, sda, na = _stats(ua["value"])
            mb, sb, sdb, nb = _stats(ub["value"])
            mean, n = ma - mb, min(na, nb)
            se = math.sqrt(sa**2 + sb**2) if na > 1 and nb > 1 else math.nan
            sd = math.sqrt(sda**2 + sdb**2) if na > 1 and nb > 1 else math.nan
        return Estimate(mean, se, sd, n, two_sided(mean, se, n), max(_seeds(ra), _seeds(rb)))

    main, check = _both([ga, gb], compute, seed_sets_of(a, b))
    rule = f"|difference| > 2 SE, >= {MIN_MODELS} models per arm" + (" (paired by model)"
                                                                      if paired else "")
    excluded = "; ".join(x for x in dict.fromkeys((xa, xb)) if x)
    return Claim(study, key, what, rule, main, check, "finding", note, excluded)


def apart(claim: Claim, a: pd.DataFrame, b: pd.DataFrame | None = None,
          col: str = "spearman", paired: bool = False) -> Claim | None:
    """The same claim on the models left out of it for not being stationary: reported apart
    (a description), or None when there are none."""
    _, ma, _ = usable(a)
    mb = usable(b)[1] if b is not None else None
    if ma.empty and (mb is None or mb.empty):
        return None
    what = f"{claim.what} [models NOT at a stationary point, reported apart]"
    if b is None:
        c = level(claim.study, claim.key + ":not_stationary", what, ma, col, healthy_only=False)
    else:
        c = difference(claim.study, claim.key + ":not_stationary", what, ma, mb, col,
                       paired=paired, healthy_only=False)
    return Claim(c.study, c.key, c.what, "", c.main, c.check, "description", c.note, "")


def range_null(rows: pd.DataFrame, draws: int = NULL_DRAWS, seed: int = 0) -> pd.DataFrame:
    """Per model: the observed range (max - min) of Spearman across its test points, and the
    range expected from sampling noise alone: every test point drawn around one common value
    with the spread of its own bootstrap interval (sd = interval width / 3.92), ``draws``
    times (seeded). Returns the model columns, ``observed``, ``null`` and ``excess``."""
    key = model_key(rows)
    rng = np.random.default_rng(seed)
    out = []
    for ident, g in rows.groupby(key, dropna=False, sort=False):
        g = g[np.isfinite(g["spearman"].to_numpy(dtype=float))]
        if len(g) < 2:
            continue
        sd = ((g["spearman_hi"] - g["spearman_lo"]) / 3.92).to_numpy(dtype=float)
        sd = np.where(np.isfinite(sd), sd, 0.0)
        sims = rng.normal(size=(draws, len(g))) * sd
        null = float((sims.max(axis=1) - sims.min(axis=1)).mean())
        observed = float(g["spearman"].max() - g["spearman"].min())
        row = dict(zip(key, ident if isinstance(ident, tuple) else (ident,)))
        row.update(observed=observed, null=null, excess=observed - null,
                   minimum=g["minimum"].iloc[0] if "minimum" in g else None)
        if "seed_set" in g:
            row["seed_set"] = g["seed_set"].iloc[0]
        out.append(row)
    return pd.DataFrame(out)


def _failed(rows: pd.DataFrame) -> pd.Series:
    return rows["error"].fillna("").astype(str) != "" if "error" in rows else \
        pd.Series(False, index=rows.index)


def _with(claims: Iterable[Claim | None]) -> list[Claim]:
    return [c for c in claims if c is not None]


# ----------------------------------------------------------------------------- per study


def _depth_like(t: pd.DataFrame, study: str, axis: str) -> list[Claim]:
    out: list[Claim | None] = []
    wd, no = t[t.weight_decay > 0], t[t.weight_decay == 0]
    word = {"depth": "depth", "width": "width"}[axis]
    for act, w in wd.groupby("activation", sort=False):
        lo = w[axis].min()
        hi, skipped = _largest_judgeable(w, axis)
        if lo == hi:
            continue
        key = "shallow_beats_deep" if axis == "depth" else "narrow_beats_wide"
        a, b = w[w[axis] == lo], w[w[axis] == hi]
        c = difference(study, f"{key}:{act}", f"({act}, weight decay) Spearman at {word} {lo:g} "
                       f"minus {word} {hi:g}", a, b, note=skipped)
        out += [c, apart(c, a, b)]
        if axis == "depth" and "top_eigenvalue" in w:
            logs = w.assign(log10_top=np.log10(w.top_eigenvalue.where(w.top_eigenvalue > 0)))
            out.append(difference(study, f"curvature_grows:{act}",
                                  f"({act}, weight decay) log10 top Hessian eigenvalue at depth "
                                  f"{hi:g} minus depth {lo:g}", logs[logs[axis] == hi],
                                  logs[logs[axis] == lo], col="log10_top"))
        n_act = no[no.activation == act]
        if len(n_act):
            c = difference(study, f"weight_decay_helps:{act}", f"({act}) Spearman with minus "
                           f"without weight decay, all {word}s", w, n_act)
            out += [c, apart(c, w, n_act)]
    return _with(out)


def _largest_judgeable(w: pd.DataFrame, axis: str) -> tuple[float, str]:
    """The largest ``axis`` value (depth, width) with at least :data:`MIN_MODELS` healthy model
    units on the preset seeds, so that the claim compares something it can judge (deep Iris
    nets collapse from most seeds); the largest value when none has, and a note naming the
    larger values passed over and why."""
    values = sorted(w[axis].unique())
    passed = []
    for v in reversed(values[1:]):
        rows = usable(w[w[axis] == v])[0]
        if "seed_set" in rows:
            rows = rows[rows.seed_set == "preset"]
        n = len(units(rows, "spearman"))
        if n >= MIN_MODELS:
            note = (f"{axis} {', '.join(f'{x:g} ({k} healthy)' for x, k in passed)} passed "
                    f"over: fewer than {MIN_MODELS} healthy models") if passed else ""
            return v, note
        passed.append((v, n))
    return values[-1], ""


def _depth(t: pd.DataFrame) -> list[Claim]:
    return _depth_like(t, "depth", "depth")


def _width(t: pd.DataFrame) -> list[Claim]:
    return _depth_like(t, "width", "width")


def _weight_decay(t: pd.DataFrame) -> list[Claim]:
    """The factorial: schedule x weight decay x estimation damping. A difference of the weight
    decay arms is judged only where both arms are stationary (else reported, not judged)."""
    out: list[Claim | None] = []
    group = [c for c in ("dataset", "arch", "schedule") if c in t]
    for ident, g in t.groupby(group, sort=False):
        name = " ".join(str(x) for x in (ident if isinstance(ident, tuple) else (ident,)))
        wd_values = sorted(g.weight_decay.unique())
        if 0 not in wd_values or len(wd_values) < 2:
            continue
        stat = {w: float(g[g.weight_decay == w].drop_duplicates(model_key(g))["stationary"]
                         .mean()) if "stationary" in g else 1.0 for w in wd_values}
        for w in [v for v in wd_values if v > 0]:
            for damping, d in g.groupby("damping_rule" if "damping_rule" in g else "damping",
                                        sort=False):
                a, b = d[d.weight_decay == w], d[d.weight_decay == 0]
                failed = _failed(d)
                note = (f"stationary models: {stat[w]:.0%} with weight decay, {stat[0]:.0%} "
                        "without")
                if failed.any():
                    note += (f"; {int(failed.sum())} failed estimate(s) left out "
                             f"({d[failed].error.iloc[0][:60]}...)")
                c = difference("weight_decay", f"weight_decay_helps:{name}:{w:g}:{damping}",
                               f"{name}: Spearman with weight decay {w:g} minus without "
                               f"(damping {damping})", a[~_failed(a)], b[~_failed(b)],
                               note=note)
                if stat[w] != stat[0]:
                    c = Claim(c.study, c.key, c.what + " [arms differ in stationarity: "
                              "reported, not judged]", "", c.main, c.check, "description",
                              c.note, c.excluded)
                out.append(c)
        if "damping_rule" in g and g.damping_rule.nunique() > 1:
            no = g[(g.weight_decay == 0) & ~_failed(g)]
            rules = list(dict.fromkeys(no.damping_rule))
            if len(rules) == 2:
                out.append(difference(
                    "weight_decay", f"damping_lifts_no_wd:{name}",
                    f"{name}, without weight decay: Spearman with estimation damping "
                    f"{rules[1]} minus {rules[0]} (part of the weight-decay effect that lives in "
                    "the estimator)", no[no.damping_rule == rules[1]],
                    no[no.damping_rule == rules[0]], paired=True))
        models = g.drop_duplicates(model_key(g))
        if "damping" in g:
            for w, m in models.groupby("weight_decay"):
                damp = float(g.damping.max())
                indefinite = m[m.min_eigenvalue + damp < 0]
                out.append(level("weight_decay", f"indefinite:{name}:{w:g}",
                                 f"{name}, weight decay {w:g}: smallest Ritz value of the Hessian "
                                 f"(H + {damp:g} I indefinite in {len(indefinite)} of {len(m)} "
                                 "models)", m, "min_eigenvalue", healthy_only=False))
    return _with(out)


def _architecture(t: pd.DataFrame) -> list[Claim]:
    if "dataset" in t and t["dataset"].nunique() > 1:
        return [_in(c, ds) for ds, g in t.groupby("dataset", sort=False)
                for c in _architecture(g.drop(columns="dataset"))]
    out: list[Claim | None] = []
    sizes = t.groupby("arch", sort=False)["n_params"].median().sort_values()
    archs = list(sizes.index)
    for solver, s in t.groupby("solver", sort=False):
        for arch in archs:
            g = s[s.arch == arch]
            failed = _failed(g)
            note = (f"{int(failed.sum())} of {len(g)} estimates FAILED "
                    f"({g[failed].error.iloc[0][:60]}...)" if failed.any() else "")
            out.append(level("architecture", f"level:{arch}:{solver}",
                             f"{arch} ({int(sizes[arch]):,} parameters), {solver}: Spearman",
                             g[~failed], note=note))
            err = g["rel_error"].dropna()
            if len(err):
                out.append(level("architecture", f"rel_error:{arch}:{solver}",
                                 f"{arch}, {solver}: relative error against the exact solve",
                                 g.dropna(subset=["rel_error"]), "rel_error"))
    if len(archs) >= 2:
        solver = t.solver.iloc[0]
        s = t[(t.solver == solver) & ~_failed(t)]
        small, large = archs[0], archs[-1]
        c = difference("architecture", "larger_is_worse",
                       f"{solver}: Spearman of the smallest net ({small}, "
                       f"{int(sizes[small]):,} parameters) minus the largest ({large}, "
                       f"{int(sizes[large]):,})", s[s.arch == small], s[s.arch == large])
        out += [c, apart(c, s[s.arch == small], s[s.arch == large])]
    return _with(out)


def _test_point(t: pd.DataFrame) -> list[Claim]:
    out: list[Claim | None] = []
    good, moving, excluded = usable(t)
    rn = range_null(good)
    if len(rn):
        c = level("test_point", "range", "Spearman range across the test points of one model, "
                  "minus the range sampling noise alone gives (per-row bootstrap intervals)",
                  rn.assign(stationary=True, collapsed=False), "excess", above=0.0)
        out.append(Claim(c.study, c.key, c.what, c.rule, c.main, c.check, c.kind,
                         f"observed range {rn.observed.mean():.3g}, null {rn.null.mean():.3g}",
                         excluded))
    depths = sorted(t.depth.dropna().unique()) if "depth" in t else []
    if len(depths) >= 2 and "activation" in t:
        lo, hi = depths[0], depths[-1]
        for act in dict.fromkeys(t.activation):
            a = t[t.activation == act]
            c = difference("test_point", f"depth:{act}", f"({act}) Spearman at depth {lo:g} "
                           f"minus depth {hi:g}", a[a.depth == lo], a[a.depth == hi])
            out += [c, apart(c, a[a.depth == lo], a[a.depth == hi])]
    tp = list(dict.fromkeys(t.test_point))
    if "highest" in tp and "median" in tp:
        c = difference("test_point", "highest_vs_median", "Spearman at the highest-loss minus "
                       "the median-loss test point", t[t.test_point == "highest"],
                       t[t.test_point == "median"], paired=True)
        out += [c, apart(c, t[t.test_point == "highest"], t[t.test_point == "median"],
                         paired=True)]
    return _with(out)


def _solver(t: pd.DataFrame) -> list[Claim]:
    out: list[Claim | None] = []
    lissa = t[t.solver == "lissa"]
    if len(lissa):
        lo = lissa.depth.min()
        c = difference("solver", "lissa_error_grows", f"LiSSA relative error at depths > {lo} "
                       f"minus at depth {lo}", lissa[lissa.depth > lo], lissa[lissa.depth == lo],
                       col="rel_error")
        out += [c, apart(c, lissa[lissa.depth > lo], lissa[lissa.depth == lo], "rel_error")]
    cg = t[t.solver == "cg"]
    if len(cg):
        ok = bool((cg.rel_error.dropna() < 1e-3).all())
        c = level("solver", "cg_exact", "CG relative error against the exact solve", cg,
                  "rel_error", below=1e-3, healthy_only=False, least=2)
        out.append(Claim(c.study, c.key, c.what, "every row < 1e-3",
                         Estimate(c.value, c.se, c.sd, c.n, HELD if ok else NOT_REPRODUCED,
                                  c.n_seeds), None, "check", c.note))
    return _with(out)


def _validation(t: pd.DataFrame) -> list[Claim]:
    out: list[Claim | None] = []
    truth = t["truth"] if "truth" in t else t["loo_mode"]

    def sel(params: str, name: str) -> pd.DataFrame:
        return t[(t.params == params) & (truth == name)]

    full = sel("all", "warm_start")
    for d in sorted(t.depth.unique()):
        f = full[full.depth == d]
        ll = sel("last_layer", "last_layer")
        if len(ll):
            out.append(difference("validation", f"last_layer_matched:{d}",
                                  f"depth {d}: Spearman of last-layer estimate vs last-layer "
                                  "LOO minus full estimate vs full LOO", ll[ll.depth == d], f,
                                  paired=True))
        pb = sel("all", "pbrf")
        if len(pb):
            out.append(difference("validation", f"pbrf_over_loo:{d}",
                                  f"depth {d}: Spearman of the estimate it targets with the PBRF "
                                  "minus the full estimate with warm-start LOO",
                                  pb[pb.depth == d], f, paired=True))
    for name, g in t[t.params == "all"].groupby(truth, sort=False):
        out.append(level("validation", f"within_noise:{name}", f"{name}: share of |actual| "
                         "within real retraining noise", g, "frac_within_noise"))
    return _with(out)


def _in(c: Claim, dataset: str) -> Claim:
    """``c`` as a claim about ``dataset`` (its key and words name it)."""
    return Claim(c.study, f"{dataset}:{c.key}", f"[{dataset}] {c.what}", c.rule, c.main,
                 c.check, c.kind, c.note, c.excluded)


def _group(t: pd.DataFrame) -> list[Claim]:
    if "dataset" in t and t["dataset"].nunique() > 1:
        return [_in(c, ds) for ds, g in t.groupby("dataset", sort=False)
                for c in _group(g.drop(columns="dataset"))]
    out: list[Claim | None] = []
    sizes = sorted(t.group_size.unique())
    one, big = t[t.group_size == sizes[0]], t[t.group_size == sizes[-1]]
    if sizes[0] == 1:
        out.append(level("group", "single_within_noise", "single training points: share of "
                         "actual effects within real retraining noise (|actual| < floor)", one,
                         "frac_within_noise", above=0.5))
    if len(sizes) > 1:
        out.append(difference("group", "groups_exceed_noise",
                              f"share within the noise floor: groups of {sizes[0]:g} minus "
                              f"groups of {sizes[-1]:g}", one, big, "frac_within_noise",
                              paired=True))
    for g in sizes:
        rows = t[t.group_size == g]
        out.append(level("group", f"rank:{g:g}", f"groups of {g:g}: Spearman of the summed "
                         "estimates with the actual group effects", rows,
                         above=0.0 if g == sizes[-1] else None))
        out.append(level("group", f"effect_to_noise:{g:g}", f"groups of {g:g}: median |actual| "
                         "/ real retraining noise", rows, "effect_to_noise"))
    return _with(out)


def _noise(t: pd.DataFrame) -> list[Claim]:
    """Finding (v) at small scale: single-point effects against real retraining noise."""
    out: list[Claim | None] = []
    for (model, truth), g in t.groupby(["model", "truth"], sort=False):
        one = g[g.group_size == 1]
        if len(one):
            out.append(level("noise", f"single_below_noise:{model}:{truth}",
                             f"{model}, {truth}: median single-point |effect| / real retraining "
                             "noise (below 1: one point changes less than retraining does)",
                             one, "effect_to_noise", below=1.0))
        sizes = sorted(g.group_size.unique())
        if len(sizes) > 1:
            big = g[g.group_size == sizes[-1]]
            out.append(level("noise", f"group_effect:{model}:{truth}:{sizes[-1]:g}",
                             f"{model}, {truth}: groups of {sizes[-1]:g}: median |effect| / "
                             "real retraining noise", big, "effect_to_noise"))
    return _with(out)


def _ground_truth(t: pd.DataFrame) -> list[Claim]:
    from .studies import ground_truth_claims

    return ground_truth_claims(t)


CLAIMS: Mapping[str, Callable[[pd.DataFrame], list[Claim]]] = {
    "depth": _depth, "width": _width, "weight_decay": _weight_decay,
    "architecture": _architecture, "test_point": _test_point, "solver": _solver,
    "validation": _validation, "group": _group, "noise": _noise,
    "ground_truth": _ground_truth,
}


def study_claims(study: str, table: pd.DataFrame) -> list[Claim]:
    """The claims of ``study`` computed from its ``table`` (empty for an empty table)."""
    if table.empty:
        return []
    table = pd.DataFrame(table.copy())
    table.attrs = {}  # the (estimated, actual) arrays are not needed here
    try:
        fn = CLAIMS[study]
    except KeyError:
        raise ValueError(f"no claims for study {study!r}; valid: {', '.join(CLAIMS)}") from None
    return fn(table)


def claims_frame(claims: Iterable[Claim]) -> pd.DataFrame:
    """A table of claims for display: what, value ± SE over models, n models, the verdict on
    each seed set, stable, the overall verdict, what was left out."""
    rows = []
    for c in claims:
        chk = c.check
        rows.append({"claim": c.what, "value": _g(c.value), "± SE": _g(c.se),
                     "n models": c.n, "preset seeds": c.main.verdict,
                     "check seeds": "" if chk is None else chk.verdict,
                     "check value": "" if chk is None else f"{_g(chk.value)} ± {_g(chk.se)}",
                     "verdict": c.verdict, "left out": c.excluded, "note": c.note})
    return pd.DataFrame(rows, columns=["claim", "value", "± SE", "n models", "preset seeds",
                                       "check seeds", "check value", "verdict", "left out",
                                       "note"])


def check_claims(claims: Iterable[Claim]) -> None:
    """What CI asserts about a study's claims: every one was computed (a finite value or an
    explicit n = 0), every verdict is one of :data:`VERDICTS` (or a check's ok / FAILED, a
    description's "reported"), findings name both seed sets when the table has them, and no
    check FAILED. It never asserts which verdict a finding reached (that depends on seeds and
    on the machine)."""
    problems = []
    for c in claims:
        allowed = {"finding": set(VERDICTS), "check": {"ok", "FAILED"},
                   "description": {"reported"}}[c.kind]
        if c.verdict not in allowed:
            problems.append(f"{c.key}: verdict {c.verdict!r} not in {sorted(allowed)}")
        if c.n > 0 and not np.isfinite(c.value):
            problems.append(f"{c.key}: n = {c.n} but the value is {c.value}")
        if c.kind == "check" and c.verdict == "FAILED":
            problems.append(c.sentence)
    if problems:
        raise AssertionError("claims not computed as they should be:\n" + "\n".join(problems))


def expect(claims: Iterable[Claim], held: Iterable[str] = (), not_held: Iterable[str] = ()
           ) -> None:
    """Assert verdicts (for a user's own runs, never in CI): every key of ``held`` held on both
    seed sets, every key of ``not_held`` did not, and no check failed."""
    by = {c.key: c for c in claims}
    problems = [f"missing claim {k}" for k in [*held, *not_held] if k not in by]
    problems += [by[k].sentence for k in held if k in by and not by[k].held]
    problems += [by[k].sentence for k in not_held if k in by and by[k].held]
    problems += [c.sentence for c in by.values() if c.kind == "check" and c.held is False]
    if problems:
        raise AssertionError("claims not as stated:\n" + "\n".join(problems))


def results_table(tables: Mapping[str, pd.DataFrame]) -> str:
    """The README's results table: one row per finding or check of every study in ``tables``
    (study name -> its table), in :data:`NOTEBOOK` order."""
    lines = [RESULTS_HEADER]
    for study in NOTEBOOK:
        if study not in tables:
            continue
        for c in study_claims(study, tables[study]):
            if c.kind == "description":
                continue
            value = _g(c.value) + ("" if not np.isfinite(c.se) else f" ± {_g(c.se)}")
            what = c.what.replace("|", "\\|")
            check = "—" if c.check is None else c.check.verdict
            stable = "—" if c.stable is None else ("yes" if c.stable else "no")
            verdict = c.main.verdict if c.kind == "finding" else c.verdict
            lines.append(f"| `{NOTEBOOK[study]}` | {what} | {value} | {c.n} | {verdict} | "
                         f"{check} | {stable} |")
    return "\n".join(lines) + "\n"


__all__ = ["Claim", "Estimate", "HELD", "MIN_MODELS", "NOT_REPRODUCED", "NO_DATA", "REVERSED",
           "UNSTABLE",
           "VERDICTS", "apart", "check_claims", "claims_frame", "difference", "expect", "level",
           "range_null", "results_table", "study_claims", "two_sided", "units", "usable"]
