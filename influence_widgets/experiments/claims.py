"""Each study's claims, computed from its table: a value with its spread over seeds (and test
points), a rule, and a verdict. Notebooks print these sentences and the README's results table
is made from them (``python -m influence_widgets results-table``), so no number is written by hand.

A *finding* holds only beyond two standard errors (otherwise: "not reproduced at this scale"); a
*check* is a condition the protocol needs (e.g. curvature above the damping); a *description* is
a number reported without a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: The notebook of each study (for the results table).
NOTEBOOK = {
    "depth": "01_depth_and_width", "width": "01_depth_and_width",
    "weight_decay": "02_weight_decay", "architecture": "03_architectures",
    "test_point": "04_test_points", "solver": "05_solvers_and_curvature",
    "validation": "06_validation_procedure", "group": "07_scale_and_groups",
    "ground_truth": "08_which_ground_truth",
}
NOT_REPRODUCED = "not reproduced at this scale"
#: A finding needs at least this many units (seeds, or seeds x test points) to be judged: with
#: two, a standard error rests on one degree of freedom and "beyond 2 SE" means little.
MIN_UNITS = 3
#: The header of the results table (the README's table starts with it; a test checks that).
RESULTS_HEADER = ("| notebook | claim | value (mean ± SE) | sd | n (seeds) | verdict |\n"
                  "|---|---|---|---|---|---|")


@dataclass(frozen=True)
class Claim:
    """One claim of a study: ``value`` (a mean, or a mean difference) with its standard error
    ``se`` and standard deviation ``sd`` over ``n`` units from ``n_seeds`` seeds; ``held`` by
    ``rule`` (``None`` for a description)."""

    study: str
    key: str
    what: str
    value: float
    se: float
    sd: float
    n: int
    n_seeds: int
    rule: str
    held: bool | None
    kind: str = "finding"  # "finding", "check" or "description"
    note: str = ""
    held_as: str = ""  # the verdict's words when held by another rule than "beyond 2 SE"

    @property
    def verdict(self) -> str:
        if self.held is None:
            return "reported"
        if self.kind == "check":
            return "ok" if self.held else "FAILED"
        if self.held:
            return f"held ({self.held_as})" if self.held_as else "held beyond 2 SE"
        return NOT_REPRODUCED

    @property
    def sentence(self) -> str:
        se = "" if not np.isfinite(self.se) else f" ± {_g(self.se)}"
        text = (f"{self.what}: {_g(self.value)}{se} (mean ± SE; sd {_g(self.sd)}, n = {self.n} "
                f"from {self.n_seeds} seed(s))")
        if self.held is not None:
            text += f"; rule: {self.rule} -> {self.verdict}"
        return text + (f". {self.note}" if self.note else "")


def _g(v: float) -> str:
    """Three significant digits (never 0.000 for a small value)."""
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def _stats(values: Iterable[float]) -> tuple[float, float, float, int]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan, 0
    sd = float(v.std(ddof=1)) if len(v) > 1 else math.nan
    return float(v.mean()), sd / math.sqrt(len(v)) if len(v) > 1 else math.nan, sd, len(v)


def _seeds(*frames: pd.DataFrame) -> int:
    seeds: set = set()
    for f in frames:
        if "seed" in f:
            seeds |= set(f["seed"].tolist())
    return len(seeds)


def _least(kind: str) -> int:
    """Units a verdict needs: :data:`MIN_UNITS` for a finding, 2 for a check."""
    return MIN_UNITS if kind == "finding" else 2


def level(study: str, key: str, what: str, rows: pd.DataFrame, col: str = "spearman", *,
          above: float | None = None, below: float | None = None, kind: str = "finding",
          note: str = "") -> Claim:
    """The mean of ``col`` over ``rows``; with ``above``/``below``, held when the mean is beyond
    that bar by two standard errors."""
    mean, se, sd, n = _stats(rows[col]) if len(rows) else (math.nan, math.nan, math.nan, 0)
    held: bool | None = None
    rule = ""
    if above is not None:
        rule, held = f"mean - 2 SE > {above:g}", bool(n >= _least(kind) and mean - 2 * se > above)
    elif below is not None:
        rule, held = f"mean + 2 SE < {below:g}", bool(n >= _least(kind) and mean + 2 * se < below)
    return Claim(study, key, what, mean, se, sd, n, _seeds(rows) if len(rows) else 0, rule, held,
                 kind, note)


def difference(study: str, key: str, what: str, a: pd.DataFrame, b: pd.DataFrame,
               col: str = "spearman", *, pair: list[str] | None = None,
               note: str = "") -> Claim:
    """Mean of ``a`` minus mean of ``b`` in ``col``: paired over the ``pair`` columns when given,
    else two independent samples; held when beyond twice its standard error (positive)."""
    if pair:
        d = (a.set_index(pair)[col] - b.set_index(pair)[col]).dropna()
        mean, se, sd, n = _stats(d)
    else:
        ma, sa, sda, na = _stats(a[col])
        mb, sb, sdb, nb = _stats(b[col])
        mean, n = ma - mb, min(na, nb)
        se = math.sqrt(sa**2 + sb**2) if na > 1 and nb > 1 else math.nan
        sd = math.nan if not (na > 1 and nb > 1) else math.sqrt(sda**2 + sdb**2)
    held = bool(n >= MIN_UNITS and np.isfinite(se) and mean > 2 * se)
    rule = f"difference > 2 SE, n >= {MIN_UNITS}"
    return Claim(study, key, what, mean, se, sd, n, _seeds(a, b), rule, held,
                 "finding", note)


def _failed(rows: pd.DataFrame) -> pd.Series:
    return rows["error"].fillna("").astype(str) != "" if "error" in rows else \
        pd.Series(False, index=rows.index)


# ----------------------------------------------------------------------------- per study


def _depth(t: pd.DataFrame) -> list[Claim]:
    out = []
    wd, no = t[t.weight_decay > 0], t[t.weight_decay == 0]
    for act, w in wd.groupby("activation", sort=False):
        lo, hi = w.depth.min(), w.depth.max()
        out.append(difference("depth", f"shallow_beats_deep:{act}",
                              f"({act}, weight decay) Spearman at depth {lo} minus depth {hi}",
                              w[w.depth == lo], w[w.depth == hi]))
        # eigenvalues span orders of magnitude across seeds: compare them on a log scale
        logs = w.assign(log10_top=np.log10(w.top_eigenvalue.where(w.top_eigenvalue > 0)))
        out.append(difference("depth", f"curvature_grows:{act}",
                              f"({act}, weight decay) log10 top Hessian eigenvalue at depth {hi} "
                              f"minus depth {lo}", logs[logs.depth == hi], logs[logs.depth == lo],
                              col="log10_top"))
        n_act = no[no.activation == act]
        if len(n_act):
            out.append(difference("depth", f"weight_decay_helps:{act}",
                                  f"({act}) Spearman with minus without weight decay, all depths",
                                  w, n_act))
    return out


def _width(t: pd.DataFrame) -> list[Claim]:
    out = []
    for act, w in t[t.weight_decay > 0].groupby("activation", sort=False):
        lo, hi = w.width.min(), w.width.max()
        out.append(difference("width", f"narrow_beats_wide:{act}",
                              f"({act}) Spearman at width {lo} minus width {hi}",
                              w[w.width == lo], w[w.width == hi],
                              note="one seed gives no standard error" if w.seed.nunique() < 2
                              else ""))
    return out


def _weight_decay(t: pd.DataFrame) -> list[Claim]:
    out = []
    damping = float(t["damping"].iloc[0])
    key = ["dataset", "arch", "solver", "seed"]  # one test point per model
    for (ds, arch), g in t.groupby(["dataset", "arch"], sort=False):
        wd, no = g[g.weight_decay > 0], g[g.weight_decay == 0]
        failed = _failed(g)
        note = ""
        if failed.any():
            f = g[failed]
            note = ("failed estimates (shown as failed, not averaged; the pair is left out): "
                    + ", ".join(f"{r.solver} wd {r.weight_decay:g} seed {r.seed}"
                                for r in f.itertuples()))
        for w in sorted(wd.weight_decay.unique()):
            out.append(difference("weight_decay", f"weight_decay_helps:{ds}:{arch}:{w:g}",
                                  f"{ds} {arch}: Spearman with weight decay {w:g} minus without "
                                  "(paired by solver and seed)", wd[wd.weight_decay == w], no,
                                  pair=key, note=note))
        models = g.drop_duplicates(["weight_decay", "seed"])
        no_models = models[models.weight_decay == 0]
        if len(no_models):
            ratio = no_models.assign(ratio=no_models.top_eigenvalue / damping)
            out.append(level("weight_decay", f"curvature_above_damping:{ds}:{arch}",
                             f"{ds} {arch} without weight decay: top Hessian eigenvalue / damping "
                             f"{damping:g} (smallest {ratio.ratio.min():.3g})", ratio, "ratio",
                             kind="check", note=""))
            out[-1] = _check(out[-1], bool(ratio.ratio.min() >= 10), "every model >= 10")
        for w, m in models.groupby("weight_decay"):
            indefinite = m[m.min_eigenvalue + damping < 0]
            out.append(level("weight_decay", f"indefinite:{ds}:{arch}:{w:g}",
                             f"{ds} {arch}, weight decay {w:g}: smallest Ritz value of the Hessian "
                             f"(H + {damping:g} I indefinite in {len(indefinite)} of {len(m)} "
                             "models)", m, "min_eigenvalue", kind="description"))
    return out


def _check(c: Claim, ok: bool, rule: str) -> Claim:
    return Claim(c.study, c.key, c.what, c.value, c.se, c.sd, c.n, c.n_seeds, rule, ok,
                 "check", c.note)


def _architecture(t: pd.DataFrame) -> list[Claim]:
    out = []
    archs = list(dict.fromkeys(t.arch))
    for solver, s in t.groupby("solver", sort=False):
        for arch in archs:
            g = s[s.arch == arch]
            failed = _failed(g)
            stationary = int(g.drop_duplicates("seed").converged.sum())
            n_models = g.seed.nunique()
            note = (f"{int(failed.sum())} of {len(g)} estimates FAILED ({g[failed].error.iloc[0][:60]}...)"
                    if failed.any() else "")
            note += (" " if note else "") + (f"{n_models - stationary} of {n_models} models not "
                                             "at their stationarity tolerance")
            out.append(level("architecture", f"level:{arch}:{solver}",
                             f"{arch}, {solver}: Spearman", g, kind="description", note=note))
            err = g["rel_error"].dropna()
            if len(err):
                out.append(level("architecture", f"rel_error:{arch}:{solver}",
                                 f"{arch}, {solver}: relative error against the exact solve",
                                 g.dropna(subset=["rel_error"]), "rel_error",
                                 kind="description"))
    solver = t.solver.iloc[0]
    first, last = archs[0], archs[-1]
    if first != last:
        s = t[t.solver == solver]
        a, b = s[s.arch == first], s[s.arch == last]
        c = difference("architecture", "larger_is_worse",
                       f"{solver} (common to every architecture): Spearman of {first} minus "
                       f"{last}", a, b)
        if _failed(a).any() or _failed(b).any():
            c = Claim(c.study, c.key, c.what, c.value, c.se, c.sd, c.n, c.n_seeds, c.rule, False,
                      "finding", f"{solver} failed on some seeds: not testable with it")
        out.append(c)
    return out


def _test_point(t: pd.DataFrame) -> list[Claim]:
    model = [c for c in ("activation", "depth", "seed") if c in t]
    rng = t.groupby(model)["spearman"].agg(lambda s: s.max() - s.min()).rename("range")
    rows = rng.reset_index()
    out = [level("test_point", "range", "Spearman range (max - min) across the test points of one "
                 f"model, over {len(rows)} models", rows, "range", above=0.1)]
    # finding (i) within this study, per activation, beside how many models are stationary:
    # first-order influence assumes a minimum, so depth is read apart from convergence
    depths = sorted(t.depth.dropna().unique()) if "depth" in t else []
    if len(depths) >= 2 and "activation" in t:
        lo, hi = depths[0], depths[-1]
        pair = [c for c in ("seed", "test_point") if c in t]
        for act in dict.fromkeys(t.activation):
            a = t[t.activation == act]
            out.append(difference("test_point", f"depth:{act}",
                                  f"({act}) Spearman at depth {lo:g} minus depth {hi:g} (paired "
                                  "by seed and test point)", a[a.depth == lo], a[a.depth == hi],
                                  pair=pair))
            if "converged" in a:
                models = a.drop_duplicates([c for c in ("depth", "seed") if c in a])
                out.append(level("test_point", f"converged:{act}",
                                 f"({act}) share of models at their stationarity tolerance",
                                 models.assign(conv=models.converged.astype(float)), "conv",
                                 kind="description"))
    tp = list(dict.fromkeys(t.test_point))
    if "highest" in tp and "median" in tp:
        out.append(difference("test_point", "highest_vs_median",
                              "Spearman at the highest-loss minus the median-loss test point "
                              "(paired by model)", t[t.test_point == "highest"],
                              t[t.test_point == "median"], pair=model))
    return out


def _solver(t: pd.DataFrame) -> list[Claim]:
    out = []
    lissa = t[t.solver == "lissa"]
    if len(lissa):
        lo = lissa.depth.min()
        out.append(difference("solver", "lissa_error_grows",
                              f"LiSSA relative error at depths > {lo} minus at depth {lo}",
                              lissa[lissa.depth > lo], lissa[lissa.depth == lo], col="rel_error"))
    cg = t[t.solver == "cg"]
    if len(cg):
        c = level("solver", "cg_exact", "CG relative error against the exact solve", cg,
                  "rel_error", below=1e-3, kind="check")
        out.append(_check(c, bool(cg.rel_error.max() < 1e-3), "every row < 1e-3"))
    return out


def _validation(t: pd.DataFrame) -> list[Claim]:
    out = []
    pair = ["depth", "seed", "test_index"]

    def sel(params: str, mode: str, loo_params: str) -> pd.DataFrame:
        return t[(t.params == params) & (t.loo_mode == mode) & (t.loo_params == loo_params)]

    full = sel("all", "warm_start", "all")
    for d in sorted(t.depth.unique()):
        f = full[full.depth == d]
        ll = sel("last_layer", "warm_start", "last_layer")
        out.append(difference("validation", f"last_layer_matched:{d}",
                              f"depth {d}: Spearman of last-layer estimate vs last-layer LOO minus "
                              "full estimate vs full LOO (paired by seed)",
                              ll[ll.depth == d], f, pair=pair))
        pb = sel("all", "pbrf", "all")
        if len(pb):
            out.append(difference("validation", f"pbrf_over_loo:{d}",
                                  f"depth {d}: Spearman of the full estimate with the PBRF minus "
                                  "with warm-start LOO", pb[pb.depth == d], f, pair=pair))
    for (mode, lp), g in t[t.params == "all"].groupby(["loo_mode", "loo_params"], sort=False):
        out.append(level("validation", f"within_noise:{mode}:{lp}",
                         f"{mode} LOO of {lp}: share of |actual| within its own noise floor",
                         g, "frac_within_noise", kind="description"))
    return out


def _group(t: pd.DataFrame) -> list[Claim]:
    out = []
    sizes = sorted(t.group_size.unique())
    pair = ["seed", "test_index"]
    one, big = t[t.group_size == sizes[0]], t[t.group_size == sizes[-1]]
    if sizes[0] == 1:
        out.append(level("group", "single_within_noise", "single training points: share of "
                         "actual effects within the retraining noise floor (abs(actual) < floor)", one,
                         "frac_within_noise", above=0.5))
    if len(sizes) > 1:
        out.append(difference("group", "groups_exceed_noise",
                              f"share within the noise floor: groups of {sizes[0]:g} minus groups "
                              f"of {sizes[-1]:g} (paired by seed and test point)", one, big,
                              "frac_within_noise", pair=pair))
    for g in sizes:
        rows = t[t.group_size == g]
        out.append(level("group", f"rank:{g:g}", f"groups of {g:g}: Spearman of the summed "
                         "estimates with the actual group effects", rows,
                         above=0.0 if g == sizes[-1] else None,
                         kind="finding" if g == sizes[-1] else "description"))
        out.append(level("group", f"effect_to_noise:{g:g}", f"groups of {g:g}: median |actual| / "
                         "noise floor", rows, "effect_to_noise", kind="description"))
    return out


def _ground_truth(t: pd.DataFrame) -> list[Claim]:
    from .studies import ground_truth_claims

    out = []
    for c in ground_truth_claims(t):
        what = c.sentence.split(" -> ")[0].rsplit(": ", 1)[0]
        verdict = c.sentence.split("->")[-1].strip()
        out.append(Claim("ground_truth", c.key, what, c.value, c.se,
                         c.se * math.sqrt(c.n) if np.isfinite(c.se) else math.nan, c.n,
                         int(t.seed.nunique()), "see sentence", c.held, note=verdict,
                         held_as=verdict if c.held and "within" in verdict else ""))
    return out


CLAIMS: Mapping[str, Callable[[pd.DataFrame], list[Claim]]] = {
    "depth": _depth, "width": _width, "weight_decay": _weight_decay,
    "architecture": _architecture, "test_point": _test_point, "solver": _solver,
    "validation": _validation, "group": _group, "ground_truth": _ground_truth,
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
    """A table of claims for display: what, mean ± SE, sd, n, seeds, rule and verdict."""
    rows = [{"claim": c.what, "value": _g(c.value), "± SE": _g(c.se), "sd": _g(c.sd),
             "n": c.n, "seeds": c.n_seeds, "rule": c.rule, "verdict": c.verdict,
             "note": c.note} for c in claims]
    return pd.DataFrame(rows, columns=["claim", "value", "± SE", "sd", "n", "seeds", "rule",
                                       "verdict", "note"])


def expect(claims: Iterable[Claim], held: Iterable[str] = (), not_held: Iterable[str] = ()
           ) -> None:
    """Assert the verdicts a notebook states: every key of ``held`` held, every key of
    ``not_held`` did not, and no check failed (AssertionError with the sentences otherwise)."""
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
            lines.append(f"| `{NOTEBOOK[study]}` | {what} | {value} | {_g(c.sd)} | "
                         f"{c.n} ({c.n_seeds}) | {c.verdict} |")
    return "\n".join(lines) + "\n"
