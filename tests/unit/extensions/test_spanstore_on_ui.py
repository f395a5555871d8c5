"""The per-span view mounted on the ``ui`` extension (``spanstore: {ui: ui}``):
one port serves the flame graphs and /spans/, and no second server binds."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from telegen.component import ComponentID, ConfigError
from telegen.config import load_text
from telegen.extensions.spanstore.extension import SpanStore
from telegen.pdata import CPU, Frame, FrameKind, Line, Profile, SpanLink, ValueType
from telegen.service import Service
from telegen.testing.agent import free_port

SPAN = "00f067aa0ba902b7"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

CONFIG = """
receivers:
  pprof: {{paths: ["{tmp}/*.pb.gz"]}}
exporters:
  ui: {{}}
extensions:
  ui: {{endpoint: "127.0.0.1:{port}"}}
  spanstore: {{ui: ui, endpoint: "127.0.0.1:{busy}"}}
service:
  extensions: [ui, spanstore]
  pipelines:
    profiles: {{receivers: [pprof], exporters: [ui]}}
"""


def _profile() -> Profile:
    p = Profile(name="cpu", sample_types=CPU, period_type=ValueType("cpu", "nanoseconds"),
                period=10_000_000, default_sample_type="cpu")
    leaf = Frame(FrameKind.NATIVE, 0x10, None, (Line("handle_request"),))
    p.add((leaf,), [3, 30_000_000], link=SpanLink(TRACE, SPAN))
    return p


def test_span_view_is_served_by_the_ui_extension(tmp_path) -> None:   # type: ignore[no-untyped-def]
    port = free_port()
    # spanstore's own endpoint is ignored with `ui`: a port another socket holds
    # would fail start-up if it were bound
    import socket
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    service = Service(load_text(CONFIG.format(tmp=tmp_path, port=port,
                                              busy=busy.getsockname()[1]), "test"))
    service.start()
    try:
        store = service.extension(ComponentID("spanstore"))
        assert isinstance(store, SpanStore)
        profile = _profile()
        store.record(profile, list(profile))
        base = f"http://127.0.0.1:{port}"
        recent = json.loads(urllib.request.urlopen(f"{base}/spans", timeout=5).read())
        assert recent == [{"trace_id": TRACE, "span_id": SPAN, "samples": {"cpu": 3}}]
        top = urllib.request.urlopen(f"{base}/spans/{SPAN}/top", timeout=5).read().decode()
        assert "handle_request" in top
        page = urllib.request.urlopen(f"{base}/spans/{SPAN}", timeout=5).read().decode()
        assert "handle_request" in page and TRACE in page
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/spans/{'0' * 15}1", timeout=5)
        assert missing.value.code == 404
        assert urllib.request.urlopen(f"{base}/", timeout=5).status == 200   # the ui itself
    finally:
        service.shutdown(5)
        busy.close()


def test_spanstore_ui_must_name_a_ui_extension(tmp_path) -> None:   # type: ignore[no-untyped-def]
    text = CONFIG.format(tmp=tmp_path, port=1, busy=2).replace("{ui: ui,", "{ui: pprof,")
    with pytest.raises(ConfigError) as err:
        load_text(text, "test")
    assert "ui must name a `ui` extension" in str(err.value)
