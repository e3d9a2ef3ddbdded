"""Headless Chromium for mrg's pages: a screenshot next to a page, and the page's console errors.

Chromium is not a dependency: ``find_chromium`` looks for Debian's ``chromium`` (``apt-get install chromium``) or a
Chrome on the PATH, and the callers say how to get one when it is missing. The browser runs with no network
access of its own (background networking, sync and updates off) in a fresh profile.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from mrg.errors import ConfigError

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The first headless-capable Chromium found (``/usr/bin/chromium``, then the PATH), or None."""
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return next((found for name in _CANDIDATES if (found := shutil.which(name))), None)


def headless(*args: str, browser: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium with ``args`` in a throw-away profile.

    Raises:
        ConfigError: no Chromium is installed.
    """
    browser = browser or find_chromium()
    if browser is None:
        raise ConfigError("--screenshot needs headless Chromium, which is not installed; install it "
                          "(e.g. apt-get install chromium) or leave --screenshot out")
    with tempfile.TemporaryDirectory(prefix="mrg-chromium-") as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                   "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                   f"--user-data-dir={profile}", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def screenshot(page: Path, out: Path | None = None, *, width: int = 1280, height: int = 2000) -> Path:
    """A PNG of ``page`` as headless Chromium renders it (default: next to the page, ``<page>.png``).

    Raises:
        ConfigError: no Chromium; DataError is not raised: a failed render is a ConfigError naming the page.
    """
    out = out or page.with_suffix(".png")
    tmp = out.with_name(f".{out.name}.tmp.png")
    done = headless(f"--screenshot={tmp}", f"--window-size={width},{height}", "--virtual-time-budget=3000",
                    Path(page).resolve().as_uri())
    if not tmp.is_file():
        raise ConfigError(f"{page}: headless Chromium wrote no screenshot ({done.stderr.strip().splitlines()[-1:]})")
    tmp.replace(out)
    return out


_CATCHER = (
    "<script>window.__mrgErrors = []; (function () { var keep = function (text) { window.__mrgErrors.push(String(text)); };"
    " window.addEventListener('error', function (e) { keep(e.message || 'resource failed: ' + (e.target && e.target.src)); }, true);"
    " var original = console.error; console.error = function () { keep(Array.from(arguments).join(' '));"
    " return original.apply(console, arguments); };"
    " window.addEventListener('load', function () { setTimeout(function () { var pre = document.createElement('pre');"
    " pre.id = 'mrg-console-errors'; pre.textContent = JSON.stringify(window.__mrgErrors);"
    " document.body.appendChild(pre); }, 500); }); })();</script>"
)


def console_errors(page: Path) -> list[str]:
    """The errors a page raises or logs (``console.error``, uncaught exceptions, images that fail to load) while it
    loads and runs its scripts; empty when there are none.

    A copy of the page with a small catcher script at the top of ``<head>`` is loaded; the page itself is untouched.
    """
    import html
    import json

    text = Path(page).read_text(encoding="utf-8")
    probe = Path(page).with_name(f".{Path(page).name}.console-probe.html")
    probe.write_text(text.replace("<head>", "<head>" + _CATCHER, 1) if "<head>" in text else _CATCHER + text,
                     encoding="utf-8")
    try:
        done = headless("--virtual-time-budget=5000", "--dump-dom", probe.resolve().as_uri())
    finally:
        probe.unlink(missing_ok=True)
    match = re.search(r'<pre id="mrg-console-errors">(.*?)</pre>', done.stdout, re.S)
    if match is None:
        return [f"the page did not finish loading in headless Chromium ({done.stderr.strip().splitlines()[-1:]})"]
    return list(json.loads(html.unescape(match.group(1))))
