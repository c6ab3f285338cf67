"""What the explorer shows: figures into ``Output`` widgets and small HTML panels.

Figures use the matplotlib object API only. They reach an ``Output`` by replacing its ``outputs``
with the figure's PNG in one assignment: the same as ``clear_output(wait=True)`` + ``display(fig)``
(no flicker), and also correct from the explorer's worker thread, where ``with out:`` capture
is not.
"""

from __future__ import annotations

import base64
import html
import io
import math
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as W
import numpy as np
import torch
from matplotlib.figure import Figure

from ..plots.scatter import thumbnail, trace_plot

ERROR_STYLE = (
    "border:1px solid #d9534f;background:#fdf2f2;color:#7a1f1f;padding:6px 10px;"
    "border-radius:4px;margin:4px 0"
)
NOTE_STYLE = (
    "border:1px solid #f0ad4e;background:#fff8ec;color:#6b4a10;padding:6px 10px;"
    "border-radius:4px;margin:4px 0"
)


def show_figure(out: W.Output, fig: Figure, dpi: int = 96) -> None:
    """Replace what ``out`` shows with ``fig`` (rendered to PNG)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    data = {
        "image/png": base64.b64encode(buf.getvalue()).decode("ascii"),
        "text/plain": f"<Figure {fig.get_size_inches()[0]:.1f}x{fig.get_size_inches()[1]:.1f} in>",
    }
    out.outputs = ({"output_type": "display_data", "data": data, "metadata": {}},)


def show_text(out: W.Output, text: str, stream: str = "stderr") -> None:
    """Replace what ``out`` shows with plain text."""
    out.outputs = ({"output_type": "stream", "name": stream, "text": text},)


def error_html(exc: BaseException, context: str = "") -> str:
    """A readable error box: the exception type and message (and what was being done)."""
    where = f" while {html.escape(context)}" if context else ""
    return (
        f'<div class="iw-error" style="{ERROR_STYLE}"><b>{type(exc).__name__}</b>{where}: '
        f"{html.escape(str(exc))}</div>"
    )


def plain_error_html(exc: BaseException, context: str = "") -> str:
    """An error for someone who does not read Python: what failed and the message's first
    lines, no exception type, no traceback."""
    lines = [line for line in str(exc).splitlines() if line.strip()][:3]
    message = " ".join(lines)[:400] or "no details were given"
    where = f" while {html.escape(context)}" if context else ""
    return (f'<div class="iw-error" role="alert" style="{ERROR_STYLE}"><b>Something went wrong'
            f"{where}.</b> {html.escape(message)}</div>")


def note_html(text: str) -> str:
    return f'<div class="iw-note" style="{NOTE_STYLE}">{html.escape(text)}</div>'


def format_traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return format(x, spec)


def _ci(stats: dict[str, Any], key: str) -> str:
    ci = stats.get(f"{key}_ci")
    return f" <span style='color:#666'>[{ci[0]:.2f}, {ci[1]:.2f}] 95% CI</span>" if ci else ""


#: One line per number the explorer shows: on hover (``title``) and in "what the numbers mean".
EXPLAIN = {
    "pearson": "linear correlation of estimated and actual across the dots: 1 = the estimates "
    "are an exact linear function of the actual changes, 0 = no linear relation",
    "spearman": "rank correlation: do the estimates order the dots as retraining does? 1 = the "
    "same order, 0 = unrelated, -1 = reversed",
    "ci": "95% bootstrap interval over the dots: how far the correlation could move with other "
    "dots of the same kind",
    "topk_overlap": "top-10 overlap: the share of the 10 dots with the largest |actual| change "
    "that are also among the 10 largest |estimates|",
    "sign_agreement": "sign agreement: the share of dots whose estimate and actual change have "
    "the same sign (both helping or both hurting)",
    "frac_within_noise": "within noise floor: the share of dots whose |actual| change is below "
    "the retraining noise floor (the orange band): their effect cannot be told from noise",
    "noise": "noise floor: the standard deviation, over retraining seeds, of the change in this "
    "test loss when nothing is removed; smaller actual changes are indistinguishable from 0",
    "n": "n: the number of dots compared (training points, or subsets for the LDS)",
    "vs_exact": "vs exact solve: this solver's estimate against the exact (H + damping I)^-1 "
    "solve of the same curvature and parameters, over every training point: relative error "
    "(2-norm) and Pearson; it separates solver error from the approximation itself",
    "lds": "LDS (linear datamodeling score): the Spearman correlation over random subsets of "
    "the summed estimates of the points each removes with the actual change after retraining",
}
def unit_labels(req: Any) -> dict[str, str]:
    """Axis and legend labels for the dots of ``req``'s ground truth: training points, or the
    units a truth draws itself (random subsets), whose estimate is the sum over what they
    remove."""
    truth = req.truth
    if not truth.draws_units:
        return {}
    return {"xlabel": "predicted: sum of the estimates of the removed points",
            "ylabel": f"actual change (retrained on the {truth.dot})",
            "points_label": truth.dots()}


def noise_number(noise: float) -> str:
    """The noise floor as the scatter's band names it (two significant digits), so the screen
    shows one number for it."""
    return f"{noise:.2g}"


def _hint(label: str, key: str) -> str:
    """``label`` with its explanation on hover (dotted underline)."""
    return (f"<span title='{html.escape(EXPLAIN[key], quote=True)}' "
            f"style='border-bottom:1px dotted #888;cursor:help'>{label}</span>")


def stats_html(
    stats: dict[str, Any],
    *,
    index_note: str,
    gt_note: str,
    noise: float | None,
    retrains: int,
    seconds: dict[str, float],
    lds: bool = False,
    vs_exact: dict[str, Any] | None = None,
    noise_source: str | None = None,
    noise_kind: str | None = None,
) -> str:
    """Correlations with bootstrap CIs and the settings that produced them; every number with
    its explanation on hover and in a "what the numbers mean" section."""
    spearman = "Spearman (= LDS)" if lds else "Spearman"
    rows = [
        f"<b>{_hint('Pearson', 'pearson')}</b> {_fmt(stats.get('pearson'), '.3f')}"
        f"{_ci(stats, 'pearson')}",
        f"<b>{_hint(spearman, 'lds' if lds else 'spearman')}</b> "
        f"{_fmt(stats.get('spearman'), '.3f')}{_ci(stats, 'spearman')}",
    ]
    extra = []
    for key, label in (
        ("topk_overlap", "top-10 overlap"),
        ("sign_agreement", "sign agreement"),
        ("frac_within_noise", "within noise floor"),
    ):
        if key == "frac_within_noise" and noise_kind == "perturbation":
            continue  # a perturbation-only floor is not retraining noise: nothing is "within" it
        if stats.get(key) is not None:
            extra.append(f"{_hint(label, key)} {_fmt(stats[key], '.2f')}")
    rows.append(" · ".join(extra))
    if vs_exact is not None:
        if "error" in vs_exact:
            rows.append(f"{_hint('vs exact solve', 'vs_exact')}: not available "
                        f"({html.escape(vs_exact['error'][:160])})")
        else:
            rows.append(f"{_hint('vs exact solve', 'vs_exact')}: relative error "
                        f"{_fmt(vs_exact['rel_error'], '.2e')} · Pearson "
                        f"{_fmt(vs_exact['pearson'], '.4f')}")
    if stats.get("note"):
        rows.append(f"<span style='color:#a60'>{html.escape(str(stats['note']))}</span>")
    rows.append(
        f"<span style='color:#555'>{html.escape(index_note)} · {_hint('n', 'n')} = "
        f"{stats.get('n', '–')}</span>"
    )
    if noise is None:
        noise_txt = "no noise floor"
    elif noise_kind == "perturbation":
        noise_txt = (f"perturbation-only floor ±{noise_number(noise)} (how reproducible the "
                     f"optimiser is from a nudged start: {html.escape(noise_source or 'seeds')}; "
                     "not retraining noise, so no band and nothing called within noise)")
    else:  # the same number, in the same format, as the band in the scatter's legend
        noise_txt = (f"{_hint('noise floor', 'noise')} ±{noise_number(noise)} (std over "
                     f"{html.escape(noise_source or 'seeds')})")
    rows.append(f"<span style='color:#555'>{html.escape(gt_note)} · {noise_txt}</span>")
    rows.append(
        f"<span style='color:#555'>{retrains} retrains computed now · "
        f"{seconds.get('total', 0.0):.2f} s (estimate {seconds.get('estimate', 0.0):.2f}, "
        f"{'subsets' if lds else 'LOO'} {seconds.get('retrain', 0.0):.2f}, "
        f"noise {seconds.get('noise', 0.0):.2f})</span>"
    )
    keys = ["pearson", "lds" if lds else "spearman", "ci", "topk_overlap", "sign_agreement",
            "frac_within_noise", "noise", "n"] + (["vs_exact"] if vs_exact is not None else [])
    if noise_kind == "perturbation":
        keys = [k for k in keys if k not in ("frac_within_noise", "noise")]
    legend = "".join(f"<li>{html.escape(EXPLAIN[k])}</li>" for k in keys)
    rows.append(
        "<details class='iw-explain'><summary style='cursor:pointer;color:#2a6f97'>What do "
        f"these numbers mean?</summary><ul style='margin:2px 0 2px 16px;padding:0'>{legend}"
        "</ul></details>"
    )
    return "<div class='iw-stats' style='line-height:1.5'>" + "<br>".join(rows) + "</div>"


def run_label(out: Any) -> str:
    """A run in a few words, for the history list and the overlay's legend."""
    req = out.request
    rho = out.stats.get("spearman")
    rho = "–" if rho is None else f"{rho:.2f}"
    return (f"{req.model} #{req.test_index} · {req.solver} d={req.damping:g} · {req.curvature} · "
            f"{req.params} · {req.gt_mode} (ρ {rho})")


PLOT_FONT = {"title": 11, "labels": 11, "ticks": 10.5, "legend": 10}  # readable on a projector


def style_for_projector(artists: dict[str, Any]) -> None:
    """Larger fonts on the explorer's scatter, and at most five ticks per axis, as a power of
    ten on the axis's end instead of long tick labels that collide (1e-4 scales)."""
    from matplotlib.ticker import MaxNLocator

    ax = artists["ax"]
    ax.title.set_fontsize(PLOT_FONT["title"])
    ax.xaxis.label.set_fontsize(PLOT_FONT["labels"])
    ax.yaxis.label.set_fontsize(PLOT_FONT["labels"])
    ax.tick_params(labelsize=PLOT_FONT["ticks"])
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=5))
    ax.ticklabel_format(style="sci", scilimits=(-2, 3), useMathText=True)
    for axis in (ax.xaxis, ax.yaxis):
        axis.get_offset_text().set_fontsize(PLOT_FONT["ticks"])
    legend = artists.get("legend")
    if legend is not None:
        for text in legend.get_texts():
            text.set_fontsize(PLOT_FONT["legend"])


def scatter_alt_text(out: Any) -> str:
    """The scatter in words, for screen readers and as the canvas's tooltip."""
    req, stats = out.request, out.stats
    dots = req.truth.dots(len(out.estimated)) if req.draws_units else "training points"
    return (f"Scatter of {len(out.estimated)} {dots} of {req.model}, test point "
            f"#{req.test_index}: estimated change in test loss (x, {req.solver}) against the "
            f"actual change ({req.truth.short or req.gt_mode}, y); Pearson "
            f"{_fmt(stats.get('pearson'), '.2f')}, Spearman {_fmt(stats.get('spearman'), '.2f')}")


def agreement_html(frame: Any, out: Any) -> str:
    """What the agreement per test point shows, in words."""
    rho = frame["spearman"].dropna()
    req = out.request
    if rho.empty:
        return note_html("no test point had enough distinct values to rank")
    shown = frame.loc[frame["shown"], "spearman"]
    here = "–" if shown.empty or not np.isfinite(shown.iloc[0]) else f"{shown.iloc[0]:.2f}"
    return (
        f"<div class='iw-agreement'><b>{html.escape(req.solver)} against "
        f"{html.escape(req.truth.short or req.gt_mode)} on {len(frame)} test points</b> of "
        f"{html.escape(req.model)}: Spearman median {rho.median():.2f}, from {rho.min():.2f} to "
        f"{rho.max():.2f} (test #{req.test_index}: {here}). Every test point is compared over "
        f"the same {len(out.indices)} training points, those evaluated for test "
        f"#{req.test_index}; nothing was retrained.</div>")


def agreement_figure(frame: Any, out: Any) -> Figure:
    """One bar per test point (sorted), the one shown in crimson."""
    fig = Figure(figsize=(6.4, 2.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    order = frame.sort_values("spearman", na_position="first").reset_index(drop=True)
    colours = ["crimson" if s else "tab:blue" for s in order["shown"]]
    ax.bar(np.arange(len(order)), order["spearman"].fillna(0.0), color=colours)
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xticks([])
    ax.set_xlabel(f"test points, sorted (crimson: #{out.request.test_index})", fontsize=11)
    ax.set_ylabel("Spearman ρ", fontsize=11)
    ax.tick_params(labelsize=10)
    return fig


def overlay_label(out: Any) -> str:
    """An overlaid run in the legend: short enough that the legend stays inside the figure and
    the axes keep their size (the full settings and statistics are in :func:`overlay_html`)."""
    req = out.request
    rho = out.stats.get("spearman")
    rho = "–" if rho is None else f"{rho:.2f}"
    return f"earlier: {req.solver} · {req.truth.short or req.gt_mode} (ρ {rho})"


def overlay_html(out: Any) -> str:
    """The overlaid run's settings and statistics, under the current run's."""
    stats = out.stats
    return (
        "<div class='iw-overlay-stats' style='color:#444;border-left:3px solid #888;"
        "padding-left:6px;margin:2px 0'><b>overlaid run</b> (grey ×): "
        f"{html.escape(describe_request(out.request))}<br><b>Pearson</b> "
        f"{_fmt(stats.get('pearson'), '.3f')}{_ci(stats, 'pearson')} · <b>Spearman</b> "
        f"{_fmt(stats.get('spearman'), '.3f')}{_ci(stats, 'spearman')} · n = "
        f"{stats.get('n', '–')}</div>")


def dot_label(out: Any, pos: int) -> str:
    """One dot in a line: its training point (or subset), estimate and actual change."""
    est, act = float(out.estimated[pos]), float(out.actual[pos])
    se = "" if out.actual_se is None else f" ± {float(out.actual_se[pos]):.1e}"
    if out.request.draws_units:
        return f"{out.request.truth.dot} {pos}: predicted {est:+.3g}, actual {act:+.3g}{se}"
    return f"#{int(out.indices[pos])}: est {est:+.3g}, actual {act:+.3g}{se}"


def dot_html(out: Any, pos: int) -> str:
    """The hover line for one dot."""
    return f"<b>{html.escape(dot_label(out, pos))}</b>"


def subset_html(out: Any, pos: int, class_names: Sequence[str] | None, y: Any) -> str:
    """One LDS subset: how much it removes, by class, and its predicted and actual change."""
    removed = torch.as_tensor(out.loo.units[pos], dtype=torch.long)
    labels_all = np.asarray(y.cpu() if hasattr(y, "cpu") else y)
    labels = labels_all[removed.numpy()]
    counts = ", ".join(
        f"{html.escape(_label(class_names, int(c)))}: {int((labels == c).sum())}"
        for c in np.unique(labels)
    )
    return (
        f"<b>{out.request.truth.dot} {pos}</b><br>removes {removed.numel()} of {len(labels_all)} "
        f"training points ({counts})<br>predicted {float(out.estimated[pos]):+.3g} (sum of their "
        f"estimates)<br>actual {float(out.actual[pos]):+.3g} (retrained on the rest)"
    )


def _label(class_names: Sequence[str] | None, y: int) -> str:
    return str(class_names[y]) if class_names is not None and 0 <= y < len(class_names) else str(y)


def feature_table(x: Any, names: Sequence[str] | None) -> str:
    """Feature values as a two-column HTML table."""
    vals = np.asarray(
        x.detach().cpu().double() if hasattr(x, "detach") else x, dtype=float
    ).reshape(-1)
    names = list(names) if names is not None else [f"x{i}" for i in range(vals.size)]
    cells = "".join(
        f"<tr><td style='padding-right:8px;overflow-wrap:anywhere'>{html.escape(str(n))}</td>"
        f"<td style='text-align:right'>{v:.3g}</td></tr>"
        for n, v in zip(names, vals)
    )
    return f"<table style='font-size:12px'>{cells}</table>"


def point_html(
    title: str,
    x: Any,
    y: int,
    *,
    class_names: Sequence[str] | None,
    is_image: bool,
    feature_names: Sequence[str] | None = None,
    extra: str = "",
) -> str:
    """A header line for one data point, with its feature values unless it is an image."""
    head = (
        f"<b>{html.escape(title)}</b><br>label <b>{html.escape(_label(class_names, y))}</b>{extra}"
    )
    return head if is_image else head + feature_table(x, feature_names)


def for_display(x: Any, info: dict[str, Any]) -> np.ndarray:
    """An input in its original units: standardised features are mapped back (per feature or,
    for images standardised per channel, per channel) so that images look like images."""
    arr = np.asarray(x.detach().cpu().double() if hasattr(x, "detach") else x, dtype=float)
    st = info.get("standardization")
    if not st:
        return arr
    mean, std = np.asarray(st["mean"], dtype=float), np.asarray(st["std"], dtype=float)
    if mean.size == arr.size:
        return (arr.reshape(-1) * std + mean).reshape(arr.shape)
    if arr.ndim == 3 and mean.size == arr.shape[0]:
        return arr * std[:, None, None] + mean[:, None, None]
    return arr


def thumbnail_figure(x: Any, image_shape: Sequence[int] | None, size: float = 1.6) -> Figure:
    """One image, drawn small."""
    fig = Figure(figsize=(size, size), layout="constrained")
    thumbnail(x, ax=fig.add_subplot(), image_shape=image_shape)
    return fig


def extremes_figure(
    X: Any,
    y: Any,
    positions: dict[str, list[int]],
    indices: Any,
    est: Any,
    act: Any,
    *,
    class_names: Sequence[str] | None,
    image_shape: Sequence[int] | None,
    info: dict[str, Any],
) -> Figure:
    """Image thumbnails of the most helpful (top row) and most harmful (bottom row) points."""
    import textwrap

    ncols = max(1, max(len(v) for v in positions.values()))
    width = 1.9 * ncols + 0.4
    fig = Figure(figsize=(width, 5.4), layout="constrained")
    for sub, (kind, pos_list) in zip(fig.subfigures(2, 1), positions.items()):
        # wrapped to the figure's width (about 13 characters of 10.5 pt per inch): never cut off
        heading = textwrap.fill(kind, width=max(20, int(11.5 * width)))
        sub.suptitle(heading, fontsize=10.5, fontweight="bold", x=0.02, ha="left")
        for col, ax in enumerate(sub.subplots(1, ncols, squeeze=False)[0]):
            ax.set_axis_off()
            if col >= len(pos_list):
                continue
            p = pos_list[col]
            i = int(indices[p])
            thumbnail(for_display(X[i], info), ax=ax, image_shape=image_shape)
            ax.set_title(
                f"#{i} ({_label(class_names, int(y[i]))})\nest {float(est[p]):+.2g}\n"
                f"actual {float(act[p]):+.2g}",
                fontsize=9,
            )
    return fig


def extremes_html(
    X: Any,
    y: Any,
    positions: dict[str, list[int]],
    indices: Any,
    est: Any,
    act: Any,
    *,
    class_names: Sequence[str] | None,
    feature_names: Sequence[str] | None,
    info: dict[str, Any],
) -> str:
    """A table of the most helpful and most harmful points with their feature values
    (in original units)."""
    n_feat = int(np.prod(X.shape[1:]))
    names = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(n_feat)]
    head = "".join(f"<th style='padding:0 6px'>{html.escape(str(n))}</th>" for n in names)
    parts = []
    for kind, pos_list in positions.items():
        rows = []
        for p in pos_list:
            i = int(indices[p])
            feats = "".join(
                f"<td style='text-align:right;padding:0 6px'>{float(v):.2f}</td>"
                for v in for_display(X[i], info).reshape(-1).tolist()
            )
            rows.append(
                f"<tr><td>#{i}</td><td>{html.escape(_label(class_names, int(y[i])))}</td>"
                f"<td style='text-align:right;padding:0 6px'>{float(est[p]):+.3g}</td>"
                f"<td style='text-align:right;padding:0 6px'>{float(act[p]):+.3g}</td>{feats}</tr>"
            )
        body = "".join(rows) or f"<tr><td colspan='{4 + n_feat}'><i>none</i></td></tr>"
        parts.append(
            f"<b>{html.escape(kind)}</b><table style='font-size:12px;margin-bottom:8px'>"
            f"<tr><th>train</th><th>label</th><th style='padding:0 6px'>estimated</th>"
            f"<th style='padding:0 6px'>actual</th>{head}</tr>{body}</table>"
        )
    return "<div class='iw-extremes'>" + "".join(parts) + "</div>"


def extreme_positions(est: Any, n: int = 3) -> dict[str, list[int]]:
    """Positions (in the evaluated set) of the most helpful (largest estimate) and most harmful
    (most negative estimate) points."""
    e = np.asarray(est, dtype=float)
    order = np.argsort(e)
    helpful = [int(p) for p in order[::-1][:n] if e[p] > 0]
    harmful = [int(p) for p in order[:n] if e[p] < 0]
    return {
        "most helpful by the estimate (removing it is estimated to raise the test loss)": helpful,
        "most harmful by the estimate (removing it is estimated to lower the test loss)": harmful,
    }


def _eigen_text(eigen: dict[str, Any]) -> str:
    """The top and the smallest eigenvalue, named for what they are: "most negative" only for a
    negative one (a positive smallest eigenvalue means none is negative)."""
    top, low, n_neg = eigen.get("top_eigenvalue"), eigen.get("min_eigenvalue"), eigen.get(
        "n_negative")
    text = (f"<span title='the largest eigenvalue: how sharply the loss curves in its steepest "
            f"direction'>top <b>{_fmt(top)}</b></span>")
    if low is not None:
        if low < 0:
            neg = f", {n_neg} negative" if n_neg is not None else ""
            text += (f", most negative <b>{_fmt(low)}</b>{neg} (the curvature is indefinite: "
                     "solvers need damping above it)")
        else:
            text += (f", smallest <b>{_fmt(low)}</b> (none negative: positive definite, "
                     "condition number " f"{_fmt(top / low if low > 0 and top else None)})")
    return text


def diagnostics_html(
    diag: dict[str, Any],
    eigen: dict[str, Any],
    model_diag: dict[str, Any],
    *,
    curvature: str,
    solver: str,
) -> str:
    """Gradient norm and convergence, curvature eigenvalues, solver notes and warnings."""
    conv = model_diag.get("converged")
    conv_txt = (
        "<span style='color:#2a7'>converged</span>"
        if conv
        else "<span style='color:#c33'>not converged: influence functions assume a stationary "
        "point</span>"
    )
    curv = "Hessian" if curvature == "hessian" else "GGN"
    rows = [
        "gradient norm at the trained parameters: "
        f"<b>{_fmt(model_diag.get('grad_norm'), '.2e')}</b> "
        f"(tol {_fmt(model_diag.get('grad_tol'), '.0e')}) · {conv_txt}",
        f"{curv} eigenvalues: {_eigen_text(eigen)}",
    ]
    if eigen.get("note"):
        rows.append(html.escape(eigen["note"]))
    if solver == "cg" and "iterations" in diag:
        rows.append(
            f"CG: {diag['iterations']} iterations, final relative residual "
            f"{_fmt(diag.get('residual'), '.2e')}"
        )
    if solver == "lissa" and "scale" in diag:
        rows.append(
            f"LiSSA scale {_fmt(diag['scale'])} ({html.escape(str(diag.get('scale_source', '')))})"
        )
    body = "<br>".join(rows)
    if diag.get("warning"):
        body += note_html(diag["warning"])
    return f"<div class='iw-diagnostics' style='line-height:1.5'>{body}</div>"


def trace_figure(diag: dict[str, Any]) -> Figure | None:
    """The CG residual or LiSSA norm trace, when the solver recorded one."""
    for key, label in (
        ("residual_trace", "CG relative residual"),
        ("norm_trace", "LiSSA iterate norm"),
    ):
        if diag.get(key):
            fig = Figure(figsize=(4.2, 2.4), layout="constrained")
            trace_plot(diag[key], ax=fig.add_subplot(), label=label)
            return fig
    return None


# ----------------------------------------------------------------------------- trust report

STALE_STYLE = (
    "border:1px dashed #999;background:#f4f4f4;color:#444;padding:4px 10px;"
    "border-radius:4px;margin:2px 0"
)
FADED_CSS = "<style>.iw-stale{opacity:0.45;transition:opacity .2s}</style>"


def solver_label(req: Any) -> str:
    """The solver's name with the settings that differ from its defaults: ``lissa (scale 3)``."""
    from ..influence.settings import SolverSettings

    st = req.settings
    opts = st.options() if isinstance(st, SolverSettings) else {}
    defaults = type(st)().options() if isinstance(st, SolverSettings) else {}
    changed = ", ".join(f"{k} {v}" for k, v in opts.items() if defaults.get(k) != v)
    return f"{req.solver} ({changed})" if changed else req.solver


def truth_label(req: Any) -> str:
    """The ground truth's short name with the settings that differ from its defaults:
    ``LOO (steps 150)``."""
    truth = req.truth
    opts = truth.settings.options()
    defaults = type(truth.settings)().options()
    changed = ", ".join(f"{k} {v}" for k, v in opts.items() if defaults.get(k) != v)
    name = truth.short or truth.name
    return f"{name} ({changed})" if changed else name


def describe_request(req: Any) -> str:
    """The settings of a compute in one line (for the stale marker)."""
    solver = solver_label(req)
    gt = truth_label(req) + (f" {req.gt_steps} steps" if req.uses_steps else "")
    return (
        f"{req.model} · test #{req.test_index} · {solver} · damping {req.damping:g} · "
        f"{req.curvature} · params {req.params} · {gt} · {req.selection} {req.k}"
    )


# Readable on a projector: 15 px text in every control of the explorer (ipywidgets reads the
# variable), the digit gallery's headings never cut off.
EXPLORER_CSS = (
    "<style>.iw-explorer{--jp-widgets-font-size:15px;--jp-widgets-inline-height:30px;"
    "font-size:15px}.iw-explorer .widget-html-content{font-size:15px;line-height:1.45}"
    ".iw-explorer .jupyter-matplotlib-toolbar{opacity:1}</style>")

FISHER_NAMES = {"sampled": "sampled Fisher", "empirical": "empirical Fisher", "ggn": "GGN"}


def curvature_label(req: Any) -> str:
    """The curvature the estimate really inverts: the Hessian or the GGN (``curvature=``), or the
    solver's own (a factored solver's Fisher, the identity), which ``curvature=`` does not
    change."""
    fisher = getattr(req.settings, "fisher", None)
    if fisher is not None:
        return FISHER_NAMES.get(fisher, f"{fisher} Fisher")
    if req.solver == "identity":
        return "no curvature (identity)"
    return "Hessian" if req.curvature == "hessian" else "GGN"


def intro_html(dot: str = "training point", draws_units: bool = False) -> str:
    """The explorer's header: what one dot is (a training point, or a random subset for a truth
    that draws its own units) and how to read the scatter."""
    if draws_units:
        what = (f"each dot is one {dot} of the training set. x: the <i>predicted</i> change in "
                "the test point's loss when the points outside it are removed (the sum of their "
                "estimates); y: the <i>actual</i> change after retraining on it. The Spearman "
                "correlation across the dots is the LDS.")
    else:
        what = ("each dot is one training point. x: <i>estimated</i> change in the test point's "
                "loss if that point is removed; y: <i>actual</i> change after leave-one-out "
                "retraining. Dots on the dashed y = x line are estimated right; the shaded "
                "horizontal band holds the dots whose actual change is below the retraining "
                "noise floor (indistinguishable from 0). Positive: the point was helping the "
                "test point.")
    return (f"{EXPLORER_CSS}<div class='iw-intro'><b>Influence explorer</b> — {what} Click a dot "
            "to see it; hover a number for its meaning.</div>")


def plot_title(req: Any, dtype: str, k: int) -> str:
    """What produced a scatter, in its title: model, test point, solver (with the settings that
    differ from its defaults), damping, curvature, parameters; then the ground truth."""
    curv = curvature_label(req)
    params = "all params" if req.params == "all" else f"{req.params.replace('_', ' ')} params"
    solver = solver_label(req)
    return (f"{req.model} · test #{req.test_index}\n{solver} · damping {req.damping:g} · {curv} · "
            f"{params}\n{gt_title(req, dtype, k)}")


def gt_title(req: Any, dtype: str, k: int) -> str:
    """The ground truth in a few words, for the scatter's title: the truth with its settings
    that differ from its defaults, dtype, what the dots are."""
    truth = req.truth
    steps = f" {req.gt_steps} steps" if req.uses_steps else ""
    name = truth.label if not truth.draws_units else truth.short or truth.name
    opts, defaults = truth.settings.options(), type(truth.settings)().options()
    changed = ", ".join(f"{k_} {v}" for k_, v in opts.items()
                        if defaults.get(k_) != v and k_ != "steps")
    what = f"{name}{steps}" + (f" ({changed})" if changed else "")
    dots = (f"{k} {truth.dots(k)}" if truth.draws_units
            else f"k = {k} ({req.selection})")
    return f"{what} · {dtype} · {dots}"


CONFIRM_STYLE = (
    "border:1px solid #f0ad4e;background:#fff8ec;color:#3d2a05;padding:6px 10px;"
    "border-radius:4px;margin:4px 0"
)


def confirm_html(eta: Any, limit: float, alternatives: bool) -> str:
    """The question before a long compute: its expected time by part and what that rests on."""
    details = "".join(f"<li>{html.escape(line)}</li>" for line in eta.details())
    choice = (
        "Run it anyway, or pick a cheaper setting below (each sets its controls and computes):"
        if alternatives
        else "No cheaper setting here fits; run it anyway, or change the settings."
    )
    return (
        f'<div class="iw-confirm-note" style="{CONFIRM_STYLE}"><b>This compute is '
        f"{html.escape(eta.describe())}</b>, over the {limit:g} s after which the explorer "
        f"asks first.<ul style='margin:2px 0 2px 16px;padding:0'>{details}</ul>{choice}</div>"
    )


def stale_html(settings: str, reason: str) -> str:
    """The visible "stale" line (and the style that fades what it marks)."""
    return (
        f'{FADED_CSS}<div class="iw-stale-note" style="{STALE_STYLE}"><b>stale</b> '
        f"({html.escape(reason)}): these results are for {html.escape(settings)}; "
        "press Compute</div>"
    )


def report_widgets(
    report: Any, on_action: Callable[[dict[str, Any]], None]
) -> tuple[list[W.Widget], list[tuple[Any, dict, W.Button]]]:
    """The trust report as widgets: a summary line, then each finding (severity, source,
    what / why / fix) with one button per one-click fix; ``on_action(action)`` runs on a click.
    Returns the widgets and ``(finding, action, button)`` for every button."""
    from .._findings import describe_action

    worst = report.worst
    colour = {"error": "#c33", "warning": "#a60", "info": "#2a6f97", None: "#2a7"}[worst]
    head = W.HTML(
        f"<div class='iw-report-head' style='color:{colour}'><b>Trust report</b>: "
        f"{html.escape(report.summary())}</div>"
    )
    children: list[W.Widget] = [head]
    buttons: list[tuple[Any, dict, W.Button]] = []
    for findings in report.by_source().values():  # pipeline order: training first
        for f in findings:
            children.append(W.HTML(f.to_html(), layout=W.Layout(width="100%")))
            row = []
            for action in f.actions:
                what = describe_action(action)
                b = W.Button(
                    description=f"apply {what}",
                    tooltip=f"set {what} and recompute ({f.code})",
                    layout=W.Layout(width="auto"),
                )
                b.add_class("iw-action")
                b.on_click(lambda _b, a=action: on_action(a))
                row.append(b)
                buttons.append((f, action, b))
            if row:
                children.append(W.HBox(row, layout=W.Layout(flex_flow="row wrap")))
    return children, buttons
