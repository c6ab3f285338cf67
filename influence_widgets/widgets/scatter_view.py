"""The explorer's scatter panel: the figure, the live canvas (or a static image), the lock that
keeps every frame whole, the hover line and the scatter's words for screen readers.

It draws what it is given and says which dot a mouse event is on; it knows nothing of
computing (the explorer decides what to plot and what a click selects).
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as W
import numpy as np
from matplotlib.figure import Figure

from ..plots.scatter import scatter_estimated_vs_actual, set_highlight
from . import panels

WIDTH = "520px"
TOOLBAR_PX = 42  # the height of ipympl's toolbar, in figure pixels (dpi 100)
PLACEHOLDER = ("scatter of estimated (x) against actual (y) influence: press Compute to "
               "draw it")


def _locked_canvas(figure: Figure, lock: threading.RLock) -> Any:
    """An ipympl canvas on ``figure`` whose every draw holds ``lock``.

    The explorer changes the figure in its worker thread while the browser may ask the kernel
    for a frame at any moment (ipympl answers such a request on the kernel's main thread): a
    frame drawn in the middle of a change shows a half-built figure (cleared, or axes with no
    data yet). Holding one lock for a change and for every draw keeps each frame whole."""
    from ipympl.backend_nbagg import Canvas

    class LockedCanvas(Canvas):
        def draw(self) -> None:
            with lock:
                super().draw()

    return LockedCanvas(figure)


class ScatterView:
    """The scatter panel (see the module docstring). ``interactive``: a live ipympl canvas
    whose dots are clicked (``on_pick(event)``) and hovered (``on_hover(event)``); otherwise a
    static image in an ``Output``."""

    def __init__(self, interactive: bool, on_pick: Callable[[Any], None],
                 on_hover: Callable[[Any], None]) -> None:
        self.interactive = interactive
        self.out = W.Output(layout=W.Layout(min_height="425px", width=WIDTH))
        self.figure = Figure(figsize=(5.2, 5.7), dpi=100, layout="constrained")
        self.lock = threading.RLock()  # held while the figure changes and while it is drawn
        self.artists: dict[str, Any] = {}
        self.canvas = None
        if interactive:
            from ipympl.backend_nbagg import FigureManager

            self.canvas = _locked_canvas(self.figure, self.lock)
            FigureManager(self.canvas, 0)  # the canvas's manager; never registered with pyplot
            self.canvas.header_visible = False
            self.canvas.footer_visible = False
            self.canvas.toolbar_visible = True  # zoom and pan into the cluster at the origin
            self.canvas.toolbar_position = "top"
            # ipympl draws the toolbar over the figure: keep the figure's top strip free for it
            self.figure.set_layout_engine("constrained", rect=(0, 0, 1, 1 - TOOLBAR_PX / 570))
            # (no tooltip on the canvas itself: ipympl's view fails to render with one)
            self.canvas.resizable = False
            self.canvas.capture_scroll = False
            self.canvas.mpl_connect("pick_event", on_pick)
            self.canvas.mpl_connect("motion_notify_event", on_hover)
            self.canvas.add_class("iw-canvas")
        view = self.canvas if self.canvas is not None else self.out
        # the scatter in words, for screen readers (read out when it changes); not a widget
        # tooltip: Voila's widget manager fails to render a box or canvas that has one
        self.alt = W.HTML(layout=W.Layout(width=WIDTH))
        self.alt.add_class("iw-scatter-alt")
        self.box = W.VBox([view, self.alt], layout=W.Layout(min_height="425px", width=WIDTH))
        self.box.add_class("iw-scatter")
        self.hover = W.HTML(layout=W.Layout(width=WIDTH))
        self.hover.add_class("iw-hover")
        self.label_text = ""
        self.label(PLACEHOLDER)
        self.prompt("training point")

    # ------------------------------------------------------------------ drawing
    def plot(self, estimated: Any, actual: Any, **options: Any) -> dict[str, Any]:
        """Replace the figure by the scatter of ``estimated`` against ``actual`` (``options``
        go to :func:`~influence_widgets.plots.scatter.scatter_estimated_vs_actual`), in
        projector fonts, and show it; returns its artists."""
        with self.lock:  # no frame is drawn from a half-built figure
            self.figure.clear()
            self.artists = scatter_estimated_vs_actual(
                estimated, actual, ax=self.figure.add_subplot(), **options)
            panels.style_for_projector(self.artists)
            self.show()
        return self.artists

    def clear(self) -> None:
        """No scatter: an empty figure, no image, the placeholder label and prompt."""
        self.artists = {}
        self.out.outputs = ()
        with self.lock:
            self.figure.clear()
            self.draw_canvas()
        self.label(PLACEHOLDER)

    def highlight(self, pos: int | None) -> None:
        """The ring around dot ``pos`` (None: no ring), shown at once."""
        if not self.artists:
            return
        with self.lock:
            set_highlight(self.artists, pos)
            self.show()

    def show(self) -> None:
        """Draw the figure where the scatter lives: the live canvas, or a static image."""
        if self.canvas is not None:
            self.draw_canvas()
        else:
            panels.show_figure(self.out, self.figure)

    def draw_canvas(self) -> None:
        """Draw the live canvas now and send the frame to the browser.

        Not ``draw_idle()``: with ipympl that only asks the browser to request a frame, and the
        browser drops the request while it still waits for an earlier frame (one it asked for
        while the figure was being changed), so the first Compute could leave a blank frame
        until the next draw. A frame sent without being asked for is always shown.

        Nothing is sent before a browser has shown the canvas (ipympl's ``syncing_data_url``
        is then still set): such a frame would become the canvas's first image without the
        prefix of a data URL, a broken image that stops the browser from ever sizing the
        canvas. A browser showing the canvas asks for a full frame itself."""
        if self.canvas is None or self.canvas.syncing_data_url:
            return
        with self.lock:
            self.canvas.draw()

    def png(self, dpi: int = 120) -> bytes:
        """The figure as PNG bytes."""
        import io

        buf = io.BytesIO()
        with self.lock:
            self.figure.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()

    # ------------------------------------------------------------------ words
    def label(self, text: str) -> None:
        """The scatter in words: a line that screen readers read (visually hidden), also kept
        in ``label_text``."""
        self.label_text = text
        self.alt.value = (
            f"<span role='img' aria-live='polite' aria-label='{html.escape(text, quote=True)}' "
            "style='position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)'>"
            f"{html.escape(text)}</span>")

    def prompt(self, what: str) -> None:
        """The hover line's invitation (no dot's numbers), for dots that are ``what``s."""
        self.hover.value = (f"<span style='color:#666'>Click a dot to select its {what}.</span>"
                            if self.interactive else "")

    # ------------------------------------------------------------------ mouse
    def dot_at(self, event: Any) -> int | None:
        """The position (into the plotted arrays) of the dot under a mouse event, or None; of
        several, the nearest."""
        points = self.artists.get("points")
        if points is None or event.inaxes is not points.axes:
            return None
        if not self.lock.acquire(timeout=0.05):  # the figure is being redrawn
            return None
        try:
            hit, info = points.contains(event)
            if not hit or not len(info.get("ind", ())):
                return None
            ind = np.asarray(info["ind"])
            xy = points.get_offset_transform().transform(np.asarray(points.get_offsets())[ind])
            near = np.hypot(xy[:, 0] - event.x, xy[:, 1] - event.y)
            return int(ind[int(np.argmin(near))])
        finally:
            self.lock.release()
