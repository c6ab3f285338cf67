"""Issue 21 (1): the live scatter's first Compute always reaches the browser with its dots.

The browser shows only frames the kernel sends it. ``draw_idle()`` sends no frame, it asks the
browser to request one, and the browser drops that request while it waits for an earlier
frame; a frame drawn while the figure is being rebuilt shows an empty axes. These tests look at
the frames the canvas really sends.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_explorer_view import MODEL, K, iris_model  # noqa: F401  (a module fixture)

import influence_widgets as iw
from influence_widgets.widgets import panels

pytest.importorskip("ipympl")

DOT_BLUE = np.array([76, 146, 195])  # tab:blue at alpha 0.8 over white
MIN_DOT_PIXELS = 150  # K dots of ~30 pixels each; the legend's one marker has ~30


def _dot_pixels(rgba: np.ndarray) -> int:
    return int((np.abs(rgba[..., :3].astype(int) - DOT_BLUE) < 28).all(axis=-1).sum())


def _record_frames(ex) -> list[int]:
    """Replace the canvas's sender by one that records each frame sent to the browser (as the
    number of the dots' pixels in the whole frame)."""
    frames: list[int] = []
    canvas = ex.canvas

    def send_binary(data):
        frames.append(_dot_pixels(np.asarray(canvas.get_renderer().buffer_rgba())))

    canvas.send_binary = send_binary
    return frames


def _live(iris_model, monkeypatch):  # noqa: F811
    monkeypatch.setattr(iw.InfluenceExplorer, "INTERACTIVE", True)
    ex = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False)
    ex.controls.k.value = K
    ex.controls.gt_steps.value = 150
    ex.canvas._handle_message(ex.canvas, {"type": "initialized"}, [])  # as a browser showing it
    return ex


def test_no_frame_is_sent_before_a_browser_shows_the_canvas(iris_model, monkeypatch):  # noqa: F811
    """A frame sent then becomes the canvas's first image as a broken data URL (no prefix), and
    the browser never sizes the canvas (a 0 x 0 canvas after Compute)."""
    monkeypatch.setattr(iw.InfluenceExplorer, "INTERACTIVE", True)
    ex = iw.InfluenceExplorer({MODEL: iris_model}, model=MODEL, threaded=False)
    ex.controls.k.value = K
    ex.controls.gt_steps.value = 150
    ex.compute(raise_errors=True)
    assert ex.canvas._data_url is None


def test_the_first_compute_sends_a_frame_with_the_dots(iris_model, monkeypatch):  # noqa: F811
    ex = _live(iris_model, monkeypatch)
    frames = _record_frames(ex)
    ex.compute(raise_errors=True)
    assert frames, "the compute sent no frame to the browser (only a request to ask for one)"
    assert frames[-1] >= MIN_DOT_PIXELS, frames


def test_a_frame_the_browser_asks_for_mid_render_is_never_half_built(iris_model,  # noqa: F811
                                                                     monkeypatch):
    """The browser's request for a frame is answered on the kernel's main thread while the
    worker rebuilds the figure: the answer waits for the figure to be whole."""
    ex = _live(iris_model, monkeypatch)
    ex.compute(raise_errors=True)
    out = ex.outcome
    frames = _record_frames(ex)
    cleared, go_on = threading.Event(), threading.Event()
    title = panels.plot_title

    def slow_title(*args, **kwargs):  # called after the figure is cleared, before the dots
        cleared.set()
        go_on.wait(10)
        return title(*args, **kwargs)

    monkeypatch.setattr(panels, "plot_title", slow_title)
    render = threading.Thread(target=ex._render_scatter, args=(out,))
    render.start()
    assert cleared.wait(10)
    browser = threading.Thread(target=ex.canvas.manager.handle_json, args=({"type": "draw"},))
    browser.start()
    browser.join(0.5)  # the old code drew (and sent) the empty axes here
    go_on.set()
    render.join(10)
    browser.join(10)
    assert len(frames) >= 2, frames
    assert min(frames) >= MIN_DOT_PIXELS, f"a half-built frame was sent: {frames}"


def _png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def test_the_browser_check_fails_on_a_blank_frame_and_passes_on_the_scatter():
    """The browser tests' data check (dots' pixels inside the axes) rejects the blank frame the
    issue saw (empty 0-1 axes under a title), which the older contrast-and-colours check let
    through; it passes on a drawn scatter."""
    from matplotlib.figure import Figure
    from test_browser import MIN_DATA_PIXELS, _check_image, data_pixels

    from influence_widgets.plots.scatter import scatter_estimated_vs_actual

    blank = Figure(figsize=(5.2, 5.7), dpi=100, layout="constrained")
    ax = blank.add_subplot()
    ax.set_title("iris · test #17\nexact · damping 0 · Hessian · all params\nLOO warm start",
                 fontsize=9)
    blank_png = _png(blank)
    _check_image(blank_png)  # the old check: passes on the blank frame
    assert data_pixels(blank_png) == 0

    rng = np.random.default_rng(0)
    est = rng.normal(size=40)
    drawn = Figure(figsize=(5.2, 5.7), dpi=100, layout="constrained")
    scatter_estimated_vs_actual(est, est + 0.1 * rng.normal(size=40), ax=drawn.add_subplot(),
                                noise=0.05, stats={"pearson": 0.99, "spearman": 0.98, "n": 40})
    assert data_pixels(_png(drawn)) >= MIN_DATA_PIXELS
