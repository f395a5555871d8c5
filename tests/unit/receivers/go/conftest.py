"""Fakes for the go receiver's unit tests: an HTTP server on loopback whose
routes are set per test, and synthetic Go-like cumulative profiles."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from telegen.formats.pprof import encode
from telegen.pdata import MUTEX, Frame, FrameKind, Line, Mapping, Profile

Reply = tuple[int, bytes]
Route = Callable[[], Reply]

GO_MAPPING = Mapping(start=0x400000, limit=0x800000, file="/srv/app", has_functions=True)


def go_frame(function: str, address: int) -> Frame:
    return Frame(FrameKind.NATIVE, address, GO_MAPPING, (Line(function, "/src/app/main.go", 10),))


def mutex_profile(delays: dict[str, int]) -> Profile:
    """A cumulative mutex profile: one sample per function, delay ns -> contentions."""
    p = Profile(name="mutex", sample_types=MUTEX, start_ns=time.time_ns())
    for i, (function, delay) in enumerate(sorted(delays.items())):
        stack = (go_frame("sync.(*Mutex).Unlock", 0x401000), go_frame(function, 0x402000 + i))
        p.add(stack, [max(1, delay // 1000), delay])
    return p


class FakeServer:
    """``routes`` maps a path (without query) to a function returning (status, body)."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.release = threading.Event()     # ends handlers that wait on it
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                owner.requests.append(self.path)
                route = owner.routes.get(self.path.split("?")[0])
                status, body = route() if route else (404, b"404 page not found\n")
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="fake-pprof", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def serve_profile(self, path: str, make: Callable[[], Profile]) -> None:
        self.routes[f"/debug/pprof/{path}"] = lambda: (200, encode(make()))

    def hang(self, path: str, seconds: float = 30.0) -> None:
        def slow() -> Reply:
            self.release.wait(seconds)
            return 200, b""
        self.routes[f"/debug/pprof/{path}"] = slow

    def close(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def make_server() -> Iterator[Callable[[], FakeServer]]:
    made: list[FakeServer] = []

    def make() -> FakeServer:
        made.append(FakeServer())
        return made[-1]

    try:
        yield make
    finally:
        for s in made:
            s.close()
