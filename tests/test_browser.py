"""The explorers as a reader meets them: a real JupyterLab, a real browser, a slider moved by hand.

nbval cannot see widgets. This test starts JupyterLab on localhost (on a copy of the notebooks, so
autosave never touches the repository), opens course chapters in headless Chromium driven by
Playwright, runs each explorer's cell and everything above it, moves one of its controls, and
checks that the rendered plot changed. A screenshot of each explorer, before and after, is saved
under ``test-artifacts/explorers/``.

It needs Debian's ``chromium`` (``/usr/bin/chromium``; Playwright cannot download its own browser
offline). Without it the test is skipped -- unless PEFTLAB_REQUIRE_BROWSER=1 (set by .ci/run),
where a missing browser is a failure.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "explorers"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if CHROMIUM is None:
    if os.environ.get("PEFTLAB_REQUIRE_BROWSER") == "1":
        raise RuntimeError("PEFTLAB_REQUIRE_BROWSER=1 but no chromium on PATH: install Debian's chromium package")
    pytest.skip("no chromium on PATH (install Debian's chromium to run the browser test)", allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api")

# Each explorer: the chapter, a snippet that identifies its cell, and the control to move there.
EXPLORERS = {
    "quantization": ("04_qlora.ipynb", "quantization_explorer(", ("select", 1, "int4")),
    "memory": ("04_qlora.ipynb", "memory_explorer()", ("select", 1, "LoRA")),
    "learning rate": ("06_pitfalls.ipynb", "lr_explorer(sweep)", ("select", 0, "LoRA")),
    "rank": ("06_pitfalls.ipynb", "rank_explorer(matrices)", ("slider", 0, 6)),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on a copy of notebooks/ (and benchmarks/, which a chapter reads)."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    shutil.copytree(ROOT / "benchmarks", root / "benchmarks")
    settings = root / "settings"  # every cell rendered (no windowing), and no news pop-up over the plots
    (settings / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        '{"windowingMode": "none"}')
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}')
    port, token = _free_port(), secrets.token_hex(16)
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={settings}",
               f"--LabApp.workspaces_dir={root / 'workspaces'}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = open(root / "jupyterlab.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                raise RuntimeError(f"JupyterLab did not start: {(root / 'jupyterlab.log').read_text()[-2000:]}") from None
            time.sleep(0.5)
    yield {"url": url, "token": token, "root": root}
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def pages(browser, lab):
    """One open page per chapter, with how far its cells have been run: explorers of one chapter share it."""
    opened: dict[str, dict] = {}
    yield opened
    for entry in opened.values():
        entry["page"].evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        entry["page"].close()


def _open(pages, browser, lab, notebook: str) -> dict:
    if notebook in pages:
        return pages[notebook]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    workspace = notebook.split(".")[0]  # a workspace of its own: no tab of another chapter is restored beside it
    page.goto(f"{lab['url']}/lab/workspaces/{workspace}/tree/notebooks/{notebook}?reset&token={lab['token']}")
    page.wait_for_function("() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                           " const k = w && w.sessionContext && w.sessionContext.session"
                           " && w.sessionContext.session.kernel; return k && k.status === 'idle'; }",
                           timeout=300_000, polling=500)
    pages[notebook] = {"page": page, "next": 0}
    return pages[notebook]


def _run_through(entry: dict, snippet: str) -> int:
    """Run the chapter's cells, in order, up to and including the one whose source contains ``snippet``."""
    page = entry["page"]
    index = page.evaluate("""snippet => window.jupyterapp.shell.currentWidget.content.widgets.findIndex(
        c => c.model.type === 'code' && c.model.sharedModel.getSource().includes(snippet))""", snippet)
    assert index >= 0, f"no cell contains {snippet!r}"
    page.evaluate("""async ([start, stop]) => {
        const panel = window.jupyterapp.shell.currentWidget;
        for (let i = start; i <= stop; i++) {
            panel.content.activeCellIndex = i;
            await window.jupyterapp.commands.execute('notebook:run-cell');
        }
    }""", [entry["next"], index])
    entry["next"] = index + 1
    page.wait_for_function("""i => window.jupyterapp.shell.currentWidget.content.widgets[i].node
        .querySelector('.js-plotly-plot .main-svg') !== null""", arg=index, timeout=300_000, polling=500)
    return index


def _state(page, index: int) -> dict:
    return page.evaluate("""i => {
        const cell = window.jupyterapp.shell.currentWidget.content.widgets[i].node;
        const status = cell.querySelector('.widget-html-content');
        const plot = cell.querySelector('.js-plotly-plot');
        return {status: status ? status.innerText : '', svg: plot ? plot.innerHTML : '',
                errors: Array.from(cell.querySelectorAll('.jp-OutputArea-output'))
                             .map(n => n.innerText).filter(t => t.includes('Traceback'))};
    }""", index)


def _cell(page, index: int):
    panel = page.evaluate("() => window.jupyterapp.shell.currentWidget.id")
    return page.locator(f"[id='{panel}'] .jp-Cell").nth(index)  # windowing is off: every cell is in the page


def _move(page, index: int, control):
    kind, nth, value = control
    cell = _cell(page, index)
    if kind == "select":
        cell.locator(".widget-dropdown select").nth(nth).select_option(label=value)
    else:  # press the right arrow on a slider's handle, as a keyboard user would
        handle = cell.locator(".widget-slider .noUi-handle").nth(nth)
        handle.focus()
        for _ in range(value):
            handle.press("ArrowRight")


@pytest.mark.parametrize("name", list(EXPLORERS))
def test_explorer_reacts_in_a_real_browser(browser, lab, pages, name):
    notebook, snippet, control = EXPLORERS[name]
    entry = _open(pages, browser, lab, notebook)
    page = entry["page"]
    index = _run_through(entry, snippet)
    cell = _cell(page, index)
    cell.scroll_into_view_if_needed()
    page.wait_for_timeout(1500)  # let plotly finish its first drawing
    before = _state(page, index)
    assert before["errors"] == [] and before["status"], f"{name} explorer did not render: {before}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    slug = name.replace(" ", "_")
    cell.locator(".jp-OutputArea").screenshot(path=str(ARTIFACTS / f"{slug}_before.png"))
    _move(page, index, control)
    page.wait_for_function("""([i, old]) => {
        const node = window.jupyterapp.shell.currentWidget.content.widgets[i].node;
        const status = node.querySelector('.widget-html-content');
        return status && status.innerText !== old;
    }""", arg=[index, before["status"]], timeout=60_000)
    # plotly redraws after the status line changes: wait for the drawing itself (a timeout raises), never a fixed time
    page.wait_for_function("""([i, old]) => {
        const plot = window.jupyterapp.shell.currentWidget.content.widgets[i].node.querySelector('.js-plotly-plot');
        return plot && plot.innerHTML !== old;
    }""", arg=[index, before["svg"]], timeout=60_000, polling=250)
    page.wait_for_timeout(500)  # for the screenshot only: let the new drawing settle
    after = _state(page, index)
    cell.locator(".jp-OutputArea").screenshot(path=str(ARTIFACTS / f"{slug}_after.png"))
    assert after["errors"] == []
    assert after["status"] != before["status"], f"{name}: the text did not change"
    assert after["svg"] != before["svg"], f"{name}: the rendered plot did not change"
