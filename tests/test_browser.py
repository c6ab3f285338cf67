"""The quickstart notebook in a real JupyterLab, driven by headless Debian Chromium (Playwright).

Needs ``chromium`` on the PATH (``apt-get install chromium``); never ``playwright install``.
Locally a missing browser skips; under ``CI=true`` it fails.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "00_quickstart.ipynb"
ARTIFACTS = ROOT / "artifacts" / "browser"
DEADLINE_S = 180.0
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LAB_SETTINGS = {  # user settings: no news, no update checks
    "apputils-extension/notification": {
        "checkForUpdates": False,
        "fetchNews": "false",
        "doNotDisturbMode": True,
    },
}


def _chromium() -> str:
    path = shutil.which("chromium")
    if path:
        return path
    message = (
        "Debian chromium is not on the PATH: install it with `apt-get install chromium` "
        "(never `playwright install`)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_env(tmp: Path) -> dict[str, str]:
    """A private environment: IW cache, Jupyter config/data/runtime, quiet Lab settings."""
    for name, values in LAB_SETTINGS.items():
        path = tmp / "lab-settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(os.environ)
    env.update(
        INFLUENCE_WIDGETS_CACHE=str(tmp / "iw-cache"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab-workspaces"),
        JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"),
        JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"),
        JUPYTER_DATA_DIR=str(tmp / "jupyter-data"),
        IPYTHONDIR=str(tmp / "ipython"),
        MPLBACKEND="Agg",
    )
    env.pop("IW_NOTEBOOK_QUICK", None)  # the browser clicks Compute itself
    return env


def _start_lab(root: Path, port: int, env: dict[str, str], log: io.TextIOBase) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.token=",
        "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True",
        "--allow-root",
        "--no-browser",
        f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_for_server(url: str, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/status", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer {url}/api/status within {timeout:.0f} s")


def _stop_server(url: str, proc: subprocess.Popen) -> None:
    """Shut the server (and its kernels) down through its API; terminate it if that fails."""
    if proc.poll() is None:
        try:
            req = urllib.request.Request(f"{url}/api/shutdown", method="POST", data=b"")
            urllib.request.urlopen(req, timeout=5).close()
            proc.wait(timeout=20)
        except Exception:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _remaining(t_end: float) -> float:
    """Milliseconds left before the overall deadline (at least 1 s)."""
    return max(1000.0, (t_end - time.monotonic()) * 1000.0)


def _settle(page, t_end: float) -> None:
    """Wait until the kernel is idle and stays so with no dialog for 3 s, accepting a
    "Select Kernel" dialog (JupyterLab may ask once its session set-up finishes)."""
    idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
    for _ in range(10):
        idle.first.wait_for(timeout=_remaining(t_end))
        page.wait_for_timeout(3000)
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            dialog.locator(".jp-Dialog-button.jp-mod-accept").first.click()
            dialog.first.wait_for(state="detached", timeout=_remaining(t_end))
            continue
        if idle.count():
            return


RUN_STATE_JS = """() => {
  if (document.querySelector('.jp-Dialog')) return 'dialog';
  const outputs = [...document.querySelectorAll('.jp-OutputArea-output')];
  if (outputs.some(o => o.textContent.includes('Error displaying widget'))) return 'broken';
  const buttons = [...document.querySelectorAll('.widget-button')];
  if (buttons.some(b => b.textContent.includes('Compute'))) return 'widget';
  const busy = document.querySelector(".jp-Notebook-ExecutionIndicator[data-status='busy']");
  const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')];
  const pending = prompts.some(p => /\\[[ *]\\]/.test(p.textContent));
  return (!busy && pending && !prompts.some(p => p.textContent.includes('*'))) ? 'stalled' : false;
}"""


def _run_all(page, t_end: float) -> None:
    """Menu Run > Run All Cells until the explorer appears. If JupyterLab replaced the kernel it
    had just started (a late "Select Kernel" dialog, queued cells dropped, or widgets bound to
    the old kernel), settle (reloading the page if needed) and run again."""
    for _attempt in range(4):
        _settle(page, t_end)
        page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        page.locator(".lm-Menu-item", has_text="Run All Cells").first.click()
        page.wait_for_timeout(5000)
        state = page.wait_for_function(RUN_STATE_JS, timeout=_remaining(t_end)).json_value()
        if state == "widget":
            return
        if state == "broken":
            page.reload(timeout=_remaining(t_end))
            page.locator(".jp-Notebook").first.wait_for(timeout=_remaining(t_end))
    raise AssertionError("the notebook's cells did not run after four Run All Cells")


def _run_notebook_and_compute(page, url: str, t_end: float) -> None:
    page.goto(f"{url}/lab/tree/00_quickstart.ipynb", timeout=_remaining(t_end))
    page.locator(".jp-Notebook").first.wait_for(timeout=_remaining(t_end))
    _run_all(page, t_end)
    page.wait_for_function(  # enabled once the model is loaded
        "() => [...document.querySelectorAll('.widget-button')].some("
        "b => b.textContent.includes('Compute') && !b.disabled)",
        timeout=_remaining(t_end),
    )
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(
        timeout=_remaining(t_end)
    )
    click_compute(page, t_end)
    page.locator(".iw-explorer", has_text="done in").first.wait_for(timeout=_remaining(t_end))


def click_compute(page, t_end: float) -> None:
    """Click Compute and wait for the statistics; on a busy machine the expected time may pass
    the explorer's limit, and it asks first: then "Run anyway"."""
    page.locator(".iw-explorer .widget-button", has_text="Compute").first.click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.iw-stats')].some(e => e.innerText.includes("
        "'Spearman')) || document.querySelector('.iw-confirm-button')",
        timeout=_remaining(t_end))
    run_anyway = page.locator(".iw-confirm-button", has_text="Run anyway")
    if run_anyway.count():
        run_anyway.first.click()
    page.locator(".iw-stats", has_text="Spearman").first.wait_for(timeout=_remaining(t_end))


def _check_image(png: bytes) -> None:
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    colours = len(np.unique(img.reshape(-1, 3), axis=0))
    assert img.shape[0] > 100 and img.shape[1] > 100, f"scatter image is tiny: {img.shape}"
    assert img.std() > 10 and colours > 50, (
        f"scatter image looks blank (pixel std {img.std():.1f}, {colours} colours)"
    )


DOT_COLOURS = ((76, 146, 195), (76, 139, 180))  # tab:blue at alpha 0.8 on white / on the band
MIN_DATA_PIXELS = 150  # a few dots; a blank (cleared or empty 0-1) frame has none


def _axes_box(img) -> tuple[int, int, int, int]:
    """The inside of the axes (top, bottom, left, right), found by their black spines."""
    import numpy as np

    dark = (img < 60).all(axis=-1)
    h, w = dark.shape
    cols = np.flatnonzero(dark.sum(axis=0) > 0.4 * h)
    rows = np.flatnonzero(dark.sum(axis=1) > 0.4 * w)
    assert len(cols) >= 2 and len(rows) >= 2, "the axes' frame was not found in the scatter"
    return rows.min() + 3, rows.max() - 2, cols.min() + 3, cols.max() - 2


def data_pixels(png: bytes) -> int:
    """How many pixels of the dots' colour lie inside the axes of a scatter screenshot."""
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    top, bottom, left, right = _axes_box(img)
    inside = img[top:bottom, left:right]
    hit = np.zeros(inside.shape[:2], dtype=bool)
    for colour in DOT_COLOURS:
        hit |= (np.abs(inside - np.asarray(colour)) < 28).all(axis=-1)
    return int(hit.sum())


def _check_data_drawn(png: bytes) -> None:
    """The scatter shows its dots: a blank frame (the figure cleared, or axes with no data)
    passes the colour and contrast check of ``_check_image`` but fails this one."""
    n = data_pixels(png)
    assert n >= MIN_DATA_PIXELS, (
        f"the scatter shows no data: {n} pixels of the dots' colour inside the axes "
        f"(at least {MIN_DATA_PIXELS} expected): the first Compute left a blank frame")


def _nothing_over_the_axes(png: bytes) -> None:
    """No text inside the axes: the statistics and the legend (black text) sit outside them.
    The axes are found by their black spines; inside them only the data, the reference lines
    (grey), the band (orange) and the ring (crimson) may be drawn."""
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    top, bottom, left, right = _axes_box(img)
    inside = (img < 60).all(axis=-1)[top:bottom, left:right]
    assert inside.sum() < 5, f"{int(inside.sum())} dark (text) pixels inside the axes"


def _a_dot(png: bytes) -> tuple[float, float]:
    """Where a dot of the scatter is, in the screenshot's pixels: the centre of the largest blob
    of the dots' blue (over white or the orange noise band), above the legend (whose blue
    marker sits below the axes)."""
    import numpy as np
    from PIL import Image
    from scipy import ndimage

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(float)
    blue = np.zeros(img.shape[:2], dtype=bool)
    for colour in ((76, 146, 195), (76, 139, 180)):  # tab:blue at alpha 0.8 on white / band
        blue |= (np.abs(img - np.asarray(colour)) < 28).all(axis=-1)
    blue[int(0.72 * img.shape[0]):] = False
    labels, n = ndimage.label(blue)
    assert n, "no dot found in the scatter canvas"
    sizes = ndimage.sum(blue, labels, range(1, n + 1))
    y, x = ndimage.center_of_mass(blue, labels, int(np.argmax(sizes)) + 1)
    return float(x), float(y)


def _click_a_dot(page, t_end: float) -> None:
    """Click a dot of the live (ipympl) scatter: its training point is selected and shown."""
    canvas = page.locator(".iw-scatter canvas").first
    canvas.wait_for(timeout=_remaining(t_end))
    page.wait_for_timeout(1000)  # the canvas draws its first frame
    box = canvas.bounding_box()
    x, y = _a_dot(canvas.screenshot())
    page.mouse.move(box["x"] + x, box["y"] + y)
    page.locator(".iw-hover", has_text="click to select").first.wait_for(
        timeout=_remaining(t_end))
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.locator(".iw-explorer", has_text="training point #").first.wait_for(
        timeout=_remaining(t_end))


def _stale_after_a_change(page, t_end: float) -> None:
    """Changing a setting marks the results shown as stale, naming what they were for."""
    damping = page.locator(".widget-text", has_text="damping").locator("input").first
    damping.fill("0.5")
    damping.press("Enter")
    page.locator(".iw-stale-note", has_text="damping").first.wait_for(timeout=_remaining(t_end))


def _download_in_the_browser(page, t_end: float) -> None:
    """The Download button offers the CSV and the PNG as links that the browser saves (no file
    on the server): the CSV holds the statistics and each point's features."""
    page.locator(".iw-explorer .widget-button", has_text="Download CSV").first.click()
    for kind, check in (("csv", lambda b: b"stat: spearman" in b and b"feature: " in b),
                        ("png", lambda b: b[:8] == b"\x89PNG\r\n\x1a\n")):
        link = page.locator(f"a.iw-download-{kind}").first
        link.wait_for(timeout=_remaining(t_end))
        with page.expect_download(timeout=_remaining(t_end)) as info:
            link.click()
        saved = info.value
        assert saved.suggested_filename.endswith(f".{kind}"), saved.suggested_filename
        assert check(Path(saved.path()).read_bytes()), f"the downloaded {kind} is not right"


@contextmanager
def _lab_page(tmp_path: Path, deadline_s: float):
    """JupyterLab on a copy of the quickstart, and a headless Chromium page on it: yields
    ``(page, url, t_end)``; the server's log is printed if anything fails."""
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    t_end = time.monotonic() + deadline_s
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / "jupyter.log"
    with open(log_path, "w") as log:
        proc = _start_lab(root, port, _lab_env(tmp_path), log)
        try:
            _wait_for_server(url, proc, timeout=60)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                try:
                    yield browser.new_page(viewport={"width": 1500, "height": 1300}), url, t_end
                finally:
                    browser.close()
        except Exception:
            log.flush()
            sys.stderr.write(
                f"--- jupyter lab log ({log_path}) ---\n{log_path.read_text()[-4000:]}\n"
            )
            raise
        finally:
            _stop_server(url, proc)


def test_quickstart_in_jupyterlab(tmp_path: Path) -> None:
    with _lab_page(tmp_path, DEADLINE_S) as (page, url, t_end):
        try:
            _run_notebook_and_compute(page, url, t_end)
            scatter = page.locator(".iw-scatter canvas").first
            scatter.wait_for(timeout=_remaining(t_end))
            page.wait_for_timeout(1000)
            shot = scatter.screenshot()
            (ARTIFACTS / "quickstart-first-compute.png").write_bytes(shot)
            _check_image(shot)
            _check_data_drawn(shot)
            _nothing_over_the_axes(shot)
            _click_a_dot(page, t_end)
            page.wait_for_timeout(1000)  # the ring is drawn on the next frame
            page.locator(".iw-explorer").first.screenshot(
                path=str(ARTIFACTS / "quickstart-selected.png"))
            _stale_after_a_change(page, t_end)
            _download_in_the_browser(page, t_end)
        finally:
            page.screenshot(path=str(ARTIFACTS / "quickstart.png"), full_page=True)
        page.locator(".iw-explorer").first.screenshot(path=str(ARTIFACTS / "quickstart-widget.png"))


CNN_DEADLINE_S = 600.0
DONE_RE = r"done in ([0-9.]+) s \(expected ~?([0-9.]+) s\)"


@pytest.mark.slow
def test_digits_cnn_cold_compute_within_a_minute(tmp_path: Path) -> None:
    """Issue 11: a cold Compute of ``digits-cnn`` with the explorer's defaults, clicked in the
    browser, takes <= 60 s and lands within 2x of the time announced before it starts. The
    model is trained (once) before the clock starts; its retrains and noise floor are not."""
    import re

    with _lab_page(tmp_path, CNN_DEADLINE_S) as (page, url, t_end):
        _run_notebook_and_compute(page, url, t_end)
        select = page.locator(".widget-dropdown", has_text="model").locator("select").first
        select.select_option("digits-cnn")
        page.locator(".iw-explorer", has_text="digits-cnn ready").first.wait_for(
            timeout=_remaining(t_end))
        page.locator(".widget-button", has_text="Compute").first.click()
        start = time.monotonic()
        page.locator(".iw-explorer", has_text="done in").first.wait_for(timeout=_remaining(t_end))
        clicked = time.monotonic() - start
        status = page.locator(".iw-explorer").first.inner_text()
        page.locator(".iw-explorer").first.screenshot(path=str(ARTIFACTS / "digits-cnn.png"))
        done, expected = (float(v) for v in re.search(DONE_RE, status).groups())
        sys.stderr.write(f"digits-cnn: {clicked:.1f} s in the browser, {done:.1f} s computing, "
                         f"{expected:.1f} s expected\n")
        assert clicked <= 60.0, f"a cold digits-cnn Compute took {clicked:.0f} s (over 60 s)"
        assert expected / 2 <= done <= 2 * expected, (done, expected)
