"""Drive headless Chromium (Debian ``chromium``) over the DevTools protocol, stdlib only.

For end-to-end tests of the HTML pages: navigate, evaluate JavaScript, click
at page coordinates (real input events), take screenshots, and record every
URL the page requested (to prove pages load nothing from the network)::

    with Browser() as browser:
        page = browser.new_page()
        page.navigate("file:///tmp/x.html")
        page.wait_for("window.telegenFlame && telegenFlame.ready")
        page.screenshot(Path("shot.png"))
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio")


class BrowserError(RuntimeError):
    pass


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _WebSocket:
    """The client side of RFC 6455, enough for DevTools (text frames, no extensions)."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        self._sock = socket.create_connection((parts.hostname, parts.port or 80), timeout_s)
        key = base64.b64encode(os.urandom(16)).decode()
        self._sock.sendall((f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                            f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                            ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self._sock.recv(1)
            if not chunk:
                raise BrowserError("websocket handshake: connection closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise BrowserError(f"websocket handshake refused: {head[:200]!r}")
        self._sock.settimeout(None)

    def send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self._sock.sendall(head + mask + masked)

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("websocket closed")
            buf += chunk
        return bytes(buf)

    def recv(self) -> str:
        message = bytearray()
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._exact(8))[0]
            data = self._exact(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise EOFError("websocket closed by peer")
            if opcode in (0x9, 0xA):      # ping / pong: DevTools does not send them
                continue
            message += data
            if b0 & 0x80:
                return message.decode()

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


class Page:
    """One tab. ``requests`` lists every URL it asked for (Network domain)."""

    def __init__(self, ws_url: str) -> None:
        self._ws = _WebSocket(ws_url)
        self._next_id = 0
        self._lock = threading.Lock()
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()
        self.call("Page.enable")
        self.call("Network.enable")
        self.call("Runtime.enable")

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                msg = json.loads(self._ws.recv())
            except (EOFError, OSError):
                return
            if "id" in msg:
                with self._lock:
                    box = self._replies.get(msg["id"])
                if box is not None:
                    box.put(msg)
            else:
                if msg.get("method") == "Network.requestWillBeSent":
                    self.requests.append(msg["params"]["request"]["url"])
                self._events.put(msg)

    def call(self, method: str, timeout_s: float = 30.0, **params: Any) -> dict[str, Any]:
        box: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._next_id += 1
            mid = self._next_id
            self._replies[mid] = box
        self._ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        try:
            reply = box.get(timeout=timeout_s)
        except queue.Empty:
            raise BrowserError(f"{method}: no reply in {timeout_s}s") from None
        finally:
            with self._lock:
                self._replies.pop(mid, None)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    def wait_event(self, method: str, timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self._events.get(timeout=left)
            except queue.Empty:
                break
            if msg.get("method") == method:
                return dict(msg.get("params", {}))
        raise BrowserError(f"no {method} in {timeout_s}s")

    def navigate(self, url: str, timeout_s: float = 30.0) -> None:
        while not self._events.empty():
            self._events.get_nowait()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", timeout_s)

    def evaluate(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression[:80]}: {res['exceptionDetails']}")
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression!r}")
            time.sleep(0.05)

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      clickCount=0 if kind == "mouseMoved" else 1)

    def type_text(self, text: str) -> None:
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path

    def close(self) -> None:
        self._stop.set()
        self._ws.close()
        self._reader.join(2)


class Browser:
    """A headless Chromium with its own temporary profile, killed on exit."""

    def __init__(self, *, width: int = 1400, height: int = 1000,
                 binary: str | None = None) -> None:
        exe = binary or chromium_binary()
        if exe is None:
            raise BrowserError("chromium not found (apt-get install -y chromium)")
        self._dir = tempfile.mkdtemp(prefix="telegen-chromium-")
        self._log = open(Path(self._dir) / "chromium.log", "wb")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self._dir}/profile", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdout=self._log, stderr=subprocess.STDOUT)
        self._pages: list[Page] = []
        port_file = Path(self._dir) / "profile" / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise BrowserError(f"chromium did not start; see {self._dir}/chromium.log")
            time.sleep(0.05)
        self.port = int(port_file.read_text().split()[0])

    def new_page(self) -> Page:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank",
                                     method="PUT")
        with urllib.request.urlopen(req, timeout=10) as resp:
            target = json.load(resp)
        page = Page(target["webSocketDebuggerUrl"])
        self._pages.append(page)
        return page

    def close(self) -> None:
        for page in self._pages:
            page.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
