"""The explorer's export: the comparison shown as a CSV and the figure as a PNG, offered to the
browser as downloads (Voila visitors never share a file on the server) or written to a folder.

It knows what to export only through the callables it is given; it computes nothing.
"""

from __future__ import annotations

import base64
import html
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as W

NOTHING_YET = "nothing to export yet: press Compute first"


class ExportPanel:
    """The Download button and its links. ``outcome()`` is the results shown (or None),
    ``frame()`` their table, ``png()`` the figure's bytes."""

    def __init__(self, outcome: Callable[[], Any], frame: Callable[[], Any],
                 png: Callable[[], bytes]) -> None:
        self._outcome, self._frame, self._png = outcome, frame, png
        self.visitor = secrets.token_hex(3)  # this explorer's own id in exported file names
        self.button = W.Button(
            description="Download CSV + PNG", icon="download", layout=W.Layout(width="165px"),
            tooltip="the comparison (one row per dot, with its features, the statistics and the "
            "settings) as a CSV and the figure as a PNG, saved by your browser")
        self.links = W.HTML(layout=W.Layout(width="520px"))

    def stem(self) -> str:
        """The files' name (without suffix): model, test point, solver, ground truth, a hash of
        every setting, and this explorer's own id (each Voila visitor has an explorer of their
        own, so two visitors never write the same file)."""
        from .._cache import hash_settings

        out = self._outcome()
        if out is None:
            raise ValueError(NOTHING_YET)
        req = out.request
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in (
            f"{req.model}-test{req.test_index}-{req.solver}-{req.gt_mode}-"
            f"{hash_settings(out.settings(), length=8)}-{self.visitor}"))

    def files(self) -> dict[str, bytes]:
        """The CSV (one row per dot: its features, estimate, actual change, the statistics and
        every setting) and the PNG, as bytes."""
        if self._outcome() is None:
            raise ValueError(NOTHING_YET)
        return {"csv": self._frame().to_csv(index=False).encode(), "png": self._png()}

    def write(self, folder: Any) -> dict[str, Path]:
        """Both files into ``folder`` (``~`` expanded, created if missing), atomically, readable
        as any file the user creates; a file path or an unwritable folder is a clear error."""
        from .._cache import atomic_write_bytes

        data = self.files()
        stem = self.stem()
        folder = Path(folder).expanduser()
        if folder.exists() and not folder.is_dir():
            raise ValueError(
                f"export() writes two files into a folder, and {folder} is a file: give a "
                "folder (it is created if missing), e.g. export('~/influence_exports')")
        paths = {kind: folder / f"{stem}.{kind}" for kind in data}
        umask = os.umask(0)
        os.umask(umask)
        try:
            for kind, path in paths.items():
                atomic_write_bytes(path, data[kind])
                os.chmod(path, 0o666 & ~umask)  # as any file you create, not private
        except PermissionError as e:
            raise PermissionError(
                f"cannot write into {folder} ({e.strerror}): choose a folder you can write to, "
                "e.g. export('~/influence_exports'), or use the Download button") from None
        return paths

    def offer(self) -> str:
        """Two links that save the CSV and the PNG in the browser; returns the files' stem."""
        data = self.files()
        stem = self.stem()
        links = []
        for kind, mime in (("csv", "text/csv"), ("png", "image/png")):
            uri = f"data:{mime};base64,{base64.b64encode(data[kind]).decode()}"
            links.append(f"<a class='iw-download-{kind}' download='{html.escape(stem)}.{kind}' "
                         f"href='{uri}' style='margin-right:12px'>⬇ save {kind.upper()}</a>")
        self.links.value = ("<div class='iw-downloads'>" + "".join(links) +
                            "<span style='color:#666'>(saved by your browser)</span></div>")
        return stem

    def clear(self) -> None:
        """No links (the results they were for are no longer shown)."""
        self.links.value = ""
