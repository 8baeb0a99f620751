"""A minimal headless-Chromium driver over the DevTools protocol, for the browser test and the README
screenshots (docs/make_screenshots.py). No Python dependency: Chromium's ``--remote-debugging-pipe``
reads commands on fd 3 and writes replies and events on fd 4, as NUL-terminated JSON."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

_BASH = shutil.which("bash") or "/bin/bash"


def _move_above_9(fd: int) -> int:
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


def find_chromium() -> str | None:
    """The Chromium binary (Debian's ``chromium`` package), or ``None``."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """One headless Chromium with one page; use as a context manager (the browser is always ended).

    Example:
        >>> with Chromium(find_chromium(), "/tmp/profile") as browser:  # doctest: +SKIP
        ...     browser.navigate("http://127.0.0.1:6006/#projector")
        ...     browser.evaluate("document.title")
    """

    def __init__(self, binary: str, profile_dir: str | os.PathLike[str], width: int = 1400, height: int = 900,
                 log_path: str | os.PathLike[str] | None = None) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child's ends, moved above 9 so that placing them on fds 3 and 4 overwrites nothing of ours.
        to_browser_r, from_browser_w = (_move_above_9(fd) for fd in (to_browser_r, from_browser_w))
        args = [
            "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
            "--disable-dev-shm-usage", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
            "--proxy-server=direct://", "--proxy-bypass-list=*", f"--user-data-dir={os.fspath(profile_dir)}",
            f"--window-size={width},{height}", "about:blank",
        ]
        # bash (dash reads only one-digit fds) puts our pipe ends on fds 3 and 4, where Chromium wants them.
        script = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        log = open(log_path or os.devnull, "wb")  # noqa: SIM115 (closed with the browser)
        self._log = log
        self.proc = subprocess.Popen([_BASH, "-c", script, binary, *args], pass_fds=(to_browser_r, from_browser_w),
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable", session=True)
        self.send("Runtime.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                self.send("Browser.close", timeout=10)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._log.close()

    # ------------------------------------------------------------------ protocol
    def send(self, method: str, session: bool = False, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        """Sends one command and returns its result; events that arrive meanwhile go to ``events``."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _read(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_browser], [], [], remaining)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium exited (code {self.proc.poll()})")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    # ------------------------------------------------------------------ page
    def navigate(self, url: str, timeout: float = 60.0) -> None:
        """Loads ``url`` afresh, also when only its #fragment differs from the page's (which would
        otherwise be a same-document navigation, not a reload)."""
        for target in ("about:blank", url):
            self.send("Page.navigate", session=True, url=target)
            self.wait_for(f"location.href === {json.dumps(target)} && document.readyState === 'complete'",
                          timeout=timeout, what=f"{target} to load")

    def evaluate(self, expression: str, timeout: float = 60.0) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", session=True, timeout=timeout, expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(f"JavaScript error: {details.get('exception', {}).get('description', details)}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, what: str = "", interval: float = 0.2) -> Any:
        """Evaluates ``expression`` until it is truthy; returns that value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"Timed out waiting for {what or expression}")
            time.sleep(interval)

    def screenshot(self, path: str | os.PathLike[str]) -> Path:
        data = self.send("Page.captureScreenshot", session=True, format="png")["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def exceptions(self) -> list[str]:
        """Uncaught JavaScript exceptions seen so far."""
        return [event["params"]["exceptionDetails"].get("exception", {}).get("description", "")
                for event in self.events if event.get("method") == "Runtime.exceptionThrown"]


# TensorBoard 2.21 serves the Projector in an iframe (plugin_entry.html) holding another iframe
# (projector_binary.html) whose <vz-projector-dashboard> holds the <vz-projector> Polymer element.
_PROJECTOR = """
const P = (() => {
  try {
    const outer = document.querySelector('iframe').contentDocument;
    const inner = outer.querySelector('iframe').contentDocument;
    return inner.querySelector('vz-projector-dashboard').shadowRoot.querySelector('vz-projector');
  } catch (err) {
    return null;
  }
})();
"""


def in_projector(body: str) -> str:
    """A JavaScript expression that runs ``body`` (an async function body) with ``P``, the page's
    ``<vz-projector>`` element, or ``null`` before it exists."""
    return f"(async () => {{ {_PROJECTOR}\n{body} }})()"
