"""Browser-test harness: JupyterLab on a free loopback port, driven by Playwright in Debian's Chromium.

- JupyterLab runs with a random token, hermetic Jupyter/IPython/matplotlib dirs (nothing in
  ``$HOME``), the news toast and update checks off, ``--allow-root`` when root, and serves a temp
  copy of the demo notebook (Lab autosaves; the repo copy stays clean).
- Chromium is the distribution's ``/usr/bin/chromium`` (``XATTR_CHROMIUM`` overrides it); never a
  browser downloaded by ``playwright install``. If it is missing, the tests FAIL with the apt line.
- Screenshots go to ``$E2E_TMP/browser`` (``.ci-state/browser`` by default): CI artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEMO = HERE / "widgets_demo.ipynb"
CHROMIUM = os.environ.get("XATTR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = (
    "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium "
    "(Debian's package; never `playwright install`)"
)


def shots_dir() -> Path:
    d = Path(os.environ.get("E2E_TMP") or REPO / ".ci-state") / "browser"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def shots() -> Path:
    """Where screenshots go (a CI artifact folder)."""
    return shots_dir()


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium not found at {CHROMIUM}: the browser tests need it. Install it with: {INSTALL_HINT}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("the browser tests need the `playwright` package: pip install -e '.[test]'")
    return CHROMIUM


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory, chromium_path: str):
    """A running JupyterLab: ``{"url", "token", "root", "log"}``; stopped (by its PID) at the end."""
    import secrets

    base = tmp_path_factory.mktemp("lab")
    root, state = base / "root", base / "state"
    root.mkdir()
    shutil.copy(DEMO, root / DEMO.name)
    env = dict(os.environ)
    for var, sub in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("IPYTHONDIR", "ipython"),
        ("MPLCONFIGDIR", "mpl"),
        ("JUPYTERLAB_SETTINGS_DIR", "lab-settings"),
        ("JUPYTERLAB_WORKSPACES_DIR", "lab-workspaces"),
    ]:
        env[var] = str(state / sub)
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    settings = state / "lab-settings" / "@jupyterlab"
    for rel, value in [
        # "Would you like to get notified about official Jupyter news?" covers the page otherwise.
        ("apputils-extension/notification.jupyterlab-settings", {"fetchNews": "false", "checkForUpdates": False}),
        # Every cell stays in the DOM (no virtual scrolling), so far-down views can be queried.
        ("notebook-extension/tracker.jupyterlab-settings", {"windowingMode": "none"}),
    ]:
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.port_retries=0",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log_path = base / "jupyterlab.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not answer within 60 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield {"url": url, "token": token, "root": root, "log": log_path}
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # jupyter_server shuts its kernels down on SIGTERM
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()
        shutil.copy(log_path, shots_dir() / "jupyterlab.log")


@pytest.fixture(scope="session")
def browser(chromium_path: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield b
        b.close()


def run_all(page, lab: dict, name: str) -> None:
    """Open notebook ``name`` in Lab, wait for its kernel, and run all cells."""
    page.goto(f"{lab['url']}/lab/tree/{name}?token={lab['token']}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
    # The toolbar's idle dot also shows when no kernel is attached; the status bar names the kernel.
    page.wait_for_function(
        """() => document.querySelector('.jp-Dialog') ||
             (document.querySelector('#jp-main-statusbar')?.innerText || '').includes('(ipykernel) | Idle')""",
        timeout=60_000,
    )
    if page.locator(".jp-Dialog").count():
        raise RuntimeError("JupyterLab opened a dialog: " + page.locator(".jp-Dialog").first.inner_text())
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def run_new_cell(page, source: str) -> None:
    """Append a code cell at the end of the open notebook, type ``source`` and run it."""
    page.locator(".jp-NotebookPanel .jp-Cell").last.locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.keyboard.type(source)
    page.keyboard.press("Escape")  # close a completer popup, if one opened
    page.keyboard.press("Shift+Enter")


@pytest.fixture(scope="module")
def demo_page(lab: dict, browser):
    """The demo notebook, run to the end in a fresh page; console errors are collected in ``page.errors``."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    t0 = time.monotonic()
    run_all(page, lab, DEMO.name)
    page.locator(".jp-RenderedText", has_text="demo ready:").wait_for(timeout=120_000)
    page.errors = errors  # type: ignore[attr-defined]
    page.run_new_cell = run_new_cell  # type: ignore[attr-defined]
    page.t_ready = time.monotonic() - t0  # type: ignore[attr-defined]
    yield page
    page.screenshot(path=str(shots_dir() / "notebook_end.png"), full_page=False)
    ctx.close()
