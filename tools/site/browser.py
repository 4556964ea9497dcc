"""Look at a built page as a person would: headless Chromium at a given width, measured and photographed.

    python tools/site_browser.py PAGE.html WIDTH OUT.png [--height PX]

prints what `PROBE` measures (does every table and figure fit the content column, what does
every badge say) as JSON and writes a screenshot. The browser test uses the same `Chromium`.

Chromium's own --screenshot and --dump-dom flags cannot do this: headless Chromium clamps its
window to at least 500 px, so a 390 px phone is never laid out. The DevTools protocol's
Emulation.setDeviceMetricsOverride sets the viewport exactly. It is spoken over
--remote-debugging-pipe (file descriptor 3 to the browser, 4 from it, NUL-separated JSON), so no
websocket library is needed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Debian's package here; GitHub's runners ship Google Chrome instead.
NAMES = ("chromium", "chromium-browser", "google-chrome")
# --disable-dev-shm-usage: shared memory in /tmp, not /dev/shm, which a container may cap at 64 MB
# (Docker's default), too little for a renderer laying out the longer pages: it crashes.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]
# Below this width the page is emulated as a phone (touch, overlay scrollbars, meta viewport).
MOBILE_BELOW = 600

# What a person would notice: a table or figure wider than the content column, or one that
# scrolls sideways inside its wrapper (a cut-off column), and what each badge says.
PROBE = """(() => {
  const column = document.querySelector("article.md-content__inner");
  const box = column.getBoundingClientRect();
  const name = (el) => el.tagName.toLowerCase() + " " +
    (el.getAttribute("src") || el.textContent || "").trim().replace(/\\s+/g, " ").slice(0, 80);
  const overflowing = [];
  for (const el of column.querySelectorAll(
      "table, img, svg, figure, .md-typeset__scrollwrap, .md-typeset__table")) {
    if (el.closest(".highlight")) continue;  // code scrolls inside its own block by design
    const r = el.getBoundingClientRect();
    if (r.width === 0) continue;  // not shown (inside a closed <details>)
    if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1)
      overflowing.push({what: name(el), how: `scrolls: ${el.scrollWidth} > ${el.clientWidth} px`});
    // A table's wrapper reaches into the column's margin on purpose (material's negative margin).
    if (!el.classList.contains("md-typeset__scrollwrap") &&
        (r.right > box.right + 1 || r.left < box.left - 1))
      overflowing.push({what: name(el),
        how: `outside the column: ${Math.round(r.left)}..${Math.round(r.right)} of ` +
             `${Math.round(box.left)}..${Math.round(box.right)} px`});
  }
  const badges = [...column.querySelectorAll(".gs-badge")].map((b) => ({
    text: b.textContent.trim(),
    classes: b.className,
    background: getComputedStyle(b).backgroundColor,
    border: getComputedStyle(b).borderTopStyle,
  }));
  return {
    width: window.innerWidth,
    column: {scroll: column.scrollWidth, client: column.clientWidth},
    page: {scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth},
    height: document.documentElement.scrollHeight,
    overflowing, badges, title: document.title,
  };
})()"""


def find_chromium() -> str | None:
    """The first Chromium-like browser on PATH."""
    return next(filter(None, map(shutil.which, NAMES)), None)


class Chromium:
    """One headless browser driven over its DevTools pipe; use as a context manager."""

    def __init__(self, binary: str, profile: Path, timeout: float = 60.0) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire() -> None:  # in the child: its fd 3 reads our commands, its fd 4 writes replies
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=wire,  # the pipe must sit at fds 3 and 4 of the child
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.timeout = timeout
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ask the browser to quit, then make sure it did."""
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        """Send one DevTools command and return its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_event(self, method: str, session: str) -> dict[str, Any]:
        """Wait for an event of a page (Page.loadEventFired, say)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for index, event in enumerate(self._events):
                if event.get("method") == method and event.get("sessionId") == session:
                    return self._events.pop(index)
            self._events.append(self._read_message(deadline))

    def look(self, url: str, width: int, screenshot: Path | None = None, height: int = 900) -> dict[str, Any]:
        """Open `url` in a fresh tab `width` px wide, return `PROBE`'s findings and, if asked, save a
        PNG of the page's top `height` px (`height` 0: the whole page)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        try:
            self.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": width < MOBILE_BELOW},
                session,
            )
            self.send("Page.enable", {}, session)
            self.send("Page.navigate", {"url": url}, session)
            self.wait_event("Page.loadEventFired", session)
            # The theme's script wraps tables after load; give it a moment, then measure.
            self.send(
                "Runtime.evaluate",
                {"expression": "new Promise((r) => setTimeout(r, 300))", "awaitPromise": True},
                session,
            )
            found = self.send("Runtime.evaluate", {"expression": PROBE, "returnByValue": True}, session)
            if "exceptionDetails" in found:
                raise RuntimeError(f"the probe failed on {url}: {found['exceptionDetails']}")
            result: dict[str, Any] = found["result"]["value"]
            if screenshot is not None:
                tall = result["height"] if height <= 0 else min(height, result["height"])
                shot = self.send(
                    "Page.captureScreenshot",
                    {
                        "format": "png",
                        "captureBeyondViewport": True,
                        "clip": {"x": 0, "y": 0, "width": width, "height": tall, "scale": 1},
                    },
                    session,
                )
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            return result
        finally:
            self.send("Target.closeTarget", {"targetId": target})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, help="a built HTML page (site/…/index.html)")
    parser.add_argument("width", type=int)
    parser.add_argument("out", type=Path, help="where the PNG goes")
    parser.add_argument("--height", type=int, default=900, help="pixels from the top; 0 for the whole page")
    args = parser.parse_args(argv)
    binary = find_chromium()
    if binary is None:
        print("site_browser: no chromium on PATH (`make browser-deps` installs it)", file=sys.stderr)
        return 2
    if not args.page.is_file():
        print(f"site_browser: {args.page} is not a file; build the site first (make site)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as profile, Chromium(binary, Path(profile)) as browser:
        found = browser.look(args.page.resolve().as_uri(), args.width, args.out, args.height)
    print(json.dumps({k: v for k, v in found.items() if k != "badges"}, indent=1))
    return 0
