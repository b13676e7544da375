"""report.html in a real browser: headless Chromium (Debian's ``chromium`` package) loads the report
of committed runs (offline sweep, quantization sweep and a serving run) and we check what a reader's
browser does with it: no console error or CSP violation, every image decoded, no network request
(only the file itself and its inlined data: images), and the estimated-energy marks and the serving
section present in the rendered page.

The browser is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: file
descriptors 3 and 4, NUL-separated JSON), so no Python package beyond the standard library is needed.
Skipped, with the reason, where no Chromium binary is installed (``apt-get install chromium``)."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

import pytest

pytest.importorskip("matplotlib")

from effbench.report import write_report

ROOT = Path(__file__).resolve().parents[1]
RUNS = [ROOT / "benchmarks" / "results" / "amd-epyc" / "cpu-sweep-20261123-220246",
        ROOT / "benchmarks" / "results" / "amd-epyc" / "quant-sweep",
        ROOT / "benchmarks" / "results" / "intel-r-xeon-r-processor" / "serving-20261201-102739"]
BROWSERS = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome")
TIMEOUT_S = 90.0


def _browser() -> Optional[str]:
    return next((p for b in BROWSERS if (p := shutil.which(b))), None)


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # copies of the child's ends above 4, so placing them on 3 and 4 cannot overwrite one another
        child_r, child_w = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 5), fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 5)

        def fds() -> None:  # the child reads commands on fd 3 and writes replies on fd 4
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "--window-size=1280,900", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # no pass_fds: fds 3 and 4 need not exist here; dup2 makes them inheritable, and every other
            # descriptor Python opened is close-on-exec
            close_fds=False, preexec_fn=fds)
        for fd in {to_child_r, from_child_w, child_r, child_w}:
            os.close(fd)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the debugging pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: Optional[dict] = None, session: Optional[str] = None) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        for e in self.events:
            if e.get("method") == method:
                return e
        while True:
            e = self._read_message(deadline)
            self.events.append(e)
            if e.get("method") == method:
                return e

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except Exception:  # noqa: BLE001 - closing a browser that already went
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    binary = _browser()
    if binary is None:
        pytest.skip("no headless Chromium here (install Debian's 'chromium' package: apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("browser")
    files = write_report(RUNS, tmp / "report")
    browser = DevTools(binary, tmp / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Page.navigate", {"url": files.html.as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        # evaluated by DevTools in an isolated world: the page's CSP (no scripts) stays in force for the page
        world = browser.send("Page.createIsolatedWorld", {"frameId": target, "worldName": "effbench-test"}, session=session)
        probe = ("JSON.stringify({images: Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]),"
                 " text: document.body.innerText, title: document.title,"
                 " scripts: document.scripts.length})")
        value = browser.send("Runtime.evaluate", {"expression": probe, "returnByValue": True,
                                                  "contextId": world["executionContextId"]}, session=session)
        page = json.loads(value["result"]["value"])
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
        (tmp / "screenshot.png").write_bytes(base64.b64decode(shot["data"]))
        events = list(browser.events)
    finally:
        browser.close()
    return {"page": page, "events": events, "files": files, "screenshot": tmp / "screenshot.png", "url": files.html.as_uri()}


def test_no_console_error_or_csp_violation(rendered) -> None:
    problems = []
    for e in rendered["events"]:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            problems.append(params["exceptionDetails"].get("text"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
            problems.append(str(params.get("args")))
        elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
            problems.append(params["entry"].get("text"))
    assert not problems, problems


def test_every_image_is_decoded(rendered) -> None:
    images = rendered["page"]["images"]
    assert len(images) == len(rendered["files"].plots) >= 8  # offline groups and the serving curves
    assert all(complete and w > 0 and h > 0 for complete, w, h in images), images
    # 300 dpi PNGs: a 5-inch panel is over 1,000 pixels wide
    assert min(w for _, w, _ in images) > 1000


def test_no_network_request(rendered) -> None:
    urls = [e["params"]["request"]["url"] for e in rendered["events"] if e.get("method") == "Network.requestWillBeSent"]
    outside = [u for u in urls if u != rendered["url"] and not u.startswith("data:")]
    assert not outside, outside
    failed = [e["params"] for e in rendered["events"] if e.get("method") == "Network.loadingFailed"]
    assert not failed, failed


def test_rendered_page_shows_the_marks_a_reviewer_needs(rendered) -> None:
    text = rendered["page"]["text"]
    assert rendered["page"]["scripts"] == 0
    for needle in ("ESTIMATED", "~", "Serving: smollm2-135m", "SATURATED", "TTFT p50 ms [95% CI]", "threads",
                   "backend version", "time cap", "quality: perplexity", "8cc3f8fc399153bd39d8b9f5375274689a293cdc-dirty"):
        assert needle in text, needle
    assert rendered["screenshot"].stat().st_size > 10_000
