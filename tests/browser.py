"""Headless Chromium driven over the DevTools protocol on a pipe: what a test needs to
look at a page as a person would (script errors, broken images, the page's width, a
screenshot), with no package beyond Debian's ``chromium``.

Why not Selenium or Playwright: Playwright downloads its own browser build; Selenium
needs a chromedriver matching the browser and a WebDriver session on a port. The
DevTools protocol is Chromium's own, and ``--remote-debugging-pipe`` speaks it over two
file descriptors (3: commands in, 4: replies and events out, each message JSON ended by
a NUL byte): no port, no network, one process that ends with the test.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

#: The flags that keep headless Chromium off the network (it is closed here, and would
#: otherwise wait on connection attempts) and independent of any profile.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
    "--remote-debugging-pipe",
)


#: Debian's ``/usr/bin/chromium`` is a launcher script that sources the site's settings
#: (which may reuse file descriptors 3 and 4); the browser itself lives here.
DEBIAN_BINARY = Path("/usr/lib/chromium/chromium")


def find_chromium() -> str | None:
    if DEBIAN_BINARY.is_file():
        return str(DEBIAN_BINARY)
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _above_9(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Chromium:
    """One headless browser with one page. Collects the page's uncaught exceptions and
    console errors while it loads."""

    def __init__(self, width: int = 1280, height: int = 900, timeout_s: float = 60) -> None:
        executable = find_chromium()
        if executable is None:
            raise RuntimeError("chromium is not installed")
        self.timeout_s = timeout_s
        self._profile = tempfile.mkdtemp(prefix="sslstudy-chromium-")
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()
        # The child's ends move above 9 first, clear of the 3 and 4 they are copied to in
        # the child (a copy made by dup2 survives exec; the originals close on exec).
        read_end, write_end = _above_9(to_browser_read), _above_9(from_browser_write)
        to_browser_read, from_browser_write = read_end, write_end

        def pipe_fds() -> None:
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self._profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=pipe_fds,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self._session = self.call("Target.attachToTarget", targetId=page["targetId"],
                                  flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width,
                  height=height, deviceScaleFactor=1, mobile=False)

    def _send(self, message: dict[str, Any]) -> None:
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its reply, keeping the events that come first."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        self._send(message)
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._receive(deadline))

    def open(self, url: str) -> None:
        """Load ``url`` afresh and wait for its load event."""
        for target in ("about:blank", url):
            self.events.clear()
            self.call("Page.navigate", session=True, url=target)
            self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout_s: float = 60) -> bool:
        """Poll a JavaScript condition (a single-page app renders after its load event)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):  # the page is not there yet
                if self.evaluate(expression):
                    return True
            time.sleep(0.25)
        return False

    def errors(self) -> list[str]:
        """Uncaught exceptions and console or log errors seen since the last ``open``."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append(details.get("exception", {}).get("description")
                             or details.get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(" ".join(str(a.get("value", a.get("description", "")))
                                      for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", session=True, **params)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close")
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
