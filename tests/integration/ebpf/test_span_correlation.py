"""Profile–trace correlation end to end (root + BPF): a real agent
(``python -m telegen``) samples tg_spans with ``timestamps: true``; the test
exports the workload's known intervals as OTLP spans (``thread.id``,
``process.pid``), as an instrumented service's SDK would, to the agent's
``otlp`` receiver (gRPC, one batch as OTLP/JSON over HTTP). Measured:

* >= 90% of the CPU sample events taken inside each span carry its span id,
  and none taken outside every span carries a link (OTLP export decoded with
  the official protos: link indices in range, span and trace ids as sent);
* ``telegen span ID`` (agent view and --dir over pprof_file output) and
  ``/spans/ID`` put that span's function on top;
* the traces pipeline forwards every request unchanged to a second, real
  TraceService server.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from telegen.testing import workloads
from telegen.testing.agent import free_port, scrape, start_telegen, telegen, wait_until
from telegen.testing.backends import OtlpBackend
from telegen.testing.trace_backend import TraceBackend, span_request

pytestmark = pytest.mark.bpf
FUNCTIONS = ("span_alpha", "span_beta", "span_gamma")
ROUNDS, SPAN_MS, GAP_MS = 4, 400, 200
DELAY_S = 3.0
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _config(tmp: Path, ports: dict[str, int], pprof_dir: Path) -> Path:
    cfg = tmp / "agent.yaml"
    cfg.write_text(f"""
receivers:
  ebpf:
    sample_rate: 199
    duration: 1s
    off_cpu: false
    timestamps: true
    process_names: ["^tg_spans$"]
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{ports['grpc']}"}}
      http: {{endpoint: "127.0.0.1:{ports['http']}"}}
    spanstore: spanstore
processors:
  symbolize: {{debuginfod_urls: []}}
  spanlink: {{delay: {DELAY_S}s}}
  batch: {{timeout: 1s}}
exporters:
  otlp/profiles:
    endpoint: 127.0.0.1:{ports['profiles']}
    tls: {{insecure: true}}
  otlp/traces:
    endpoint: 127.0.0.1:{ports['traces']}
    tls: {{insecure: true}}
  pprof_file:
    directory: {pprof_dir}
extensions:
  spanstore: {{endpoint: "127.0.0.1:{ports['view']}"}}
service:
  extensions: [spanstore]
  telemetry:
    metrics: {{level: basic, address: "127.0.0.1:{ports['metrics']}"}}
  pipelines:
    profiles:
      receivers: [ebpf]
      processors: [symbolize, spanlink, batch]
      exporters: [otlp/profiles, pprof_file]
    traces:
      receivers: [otlp]
      exporters: [otlp/traces]
""")
    return cfg


def _run_workload_and_export(binary: Path, ports: dict[str, int]) -> tuple[
        int, list[dict[str, Any]], list[Any]]:
    """Run tg_spans; send each finished interval as a span (gRPC, batched like
    an SDK's span processor; the last batch as OTLP/JSON over HTTP)."""
    channel = grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}")
    export = channel.unary_unary(TRACE_EXPORT, request_serializer=None,
                                 response_deserializer=None)
    trace_ids = [secrets.token_hex(16) for _ in FUNCTIONS]
    proc = subprocess.Popen([binary, str(ROUNDS), str(SPAN_MS), str(GAP_MS)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    spans: list[dict[str, Any]] = []
    sent: list[Any] = []
    batch: list[dict[str, Any]] = []
    for line in proc.stdout:
        parts = line.split()
        if parts[0] != "span":
            continue
        idx, tid, t0, t1 = (int(x) for x in parts[1:])
        span = {"trace_id": trace_ids[idx], "span_id": secrets.token_hex(8),
                "name": f"work {FUNCTIONS[idx]}", "start_ns": t0, "end_ns": t1,
                "tid": tid, "function": FUNCTIONS[idx]}
        spans.append(span)
        batch.append(span)
        if len(batch) >= 3:
            req = span_request(batch, proc.pid)
            export(req.SerializeToString(), timeout=5)
            sent.append(req)
            batch = []
    assert proc.wait(10) == 0
    if batch:   # the rest as OTLP/JSON (hex ids) over HTTP
        req = span_request(batch, proc.pid)
        doc = json_format.MessageToDict(req)
        for rs in doc["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    for key in ("traceId", "spanId"):
                        s[key] = base64.b64decode(s[key]).hex()
        http = urllib.request.Request(f"http://127.0.0.1:{ports['http']}/v1/traces",
                                      data=json.dumps(doc).encode(),
                                      headers={"Content-Type": "application/json"})
        assert urllib.request.urlopen(http, timeout=5).status == 200
        sent.append(req)
    channel.close()
    return proc.pid, spans, sent


def _events(backend: OtlpBackend, pid: int) -> list[tuple[int, int, str, str, int]]:
    """(tid, timestamp, span id, trace id, link index) of every CPU sample event
    of ``pid``, decoded with the official protos only."""
    out = []
    for req in backend.requests():
        d = req.dictionary
        strings = list(d.string_table)
        for rp in req.resource_profiles:
            # one resource per process: process.pid is the resource's
            res = {kv.key: kv.value.int_value for kv in rp.resource.attributes}
            for sp in rp.scope_profiles:
                for prof in sp.profiles:
                    if strings[prof.sample_type.type_strindex] != "samples":
                        continue   # one OTLP profile per sample type: count events once
                    for s in prof.samples:
                        attrs = {**res, **{strings[d.attribute_table[i].key_strindex]:
                                           d.attribute_table[i].value.int_value
                                           for i in s.attribute_indices}}
                        if attrs.get("process.pid") != pid:
                            continue
                        assert 0 <= s.link_index < len(d.link_table), "link index out of range"
                        link = d.link_table[s.link_index]
                        for t in s.timestamps_unix_nano:
                            out.append((attrs["thread.id"], t, bytes(link.span_id).hex(),
                                        bytes(link.trace_id).hex(), s.link_index))
    return out


def test_samples_link_to_the_spans_active_on_their_threads(tmp_path: Path) -> None:
    binary = workloads.build("tg_spans", tmp_path)
    profiles_backend = OtlpBackend().start()
    trace_backend = TraceBackend().start()
    ports = {k: free_port() for k in ("grpc", "http", "view", "metrics")}
    ports.update(profiles=profiles_backend.port, traces=trace_backend.port)
    pprof_dir = tmp_path / "pprof"
    log = tmp_path / "agent.log"
    agent = start_telegen(["run", "-c", str(_config(tmp_path, ports, pprof_dir))], log)
    try:
        assert wait_until(lambda: "ebpf receiver started" in log.read_text()
                          or agent.poll() is not None, 60), log.read_text()
        assert agent.poll() is None, log.read_text()
        pid, spans, sent = _run_workload_and_export(binary, ports)
        ended = time.monotonic()
        assert len(spans) == ROUNDS * len(FUNCTIONS)

        # the per-span view, once spanlink released the held samples
        view = f"127.0.0.1:{ports['view']}"
        last = spans[-1]["span_id"]
        assert wait_until(lambda: urllib.request.urlopen(
            f"http://{view}/spans/{last}/top", timeout=2).status == 200, DELAY_S + 15)
        time.sleep(max(0.0, ended + DELAY_S + 2.5 - time.monotonic()))
        for span in spans[::len(FUNCTIONS) + 1]:   # every thread, different rounds
            out = telegen("span", span["span_id"], "--agent", view, check=True).stdout
            print(out)
            first_row = out.splitlines()[4]
            assert first_row.split()[-1] == span["function"], out
            page = urllib.request.urlopen(f"http://{view}/spans/{span['span_id']}",
                                          timeout=5).read().decode()
            assert span["function"] in page and span["span_id"] in page
        metrics = scrape(ports["metrics"])
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(60)
        trace_backend.stop()
        profiles_backend.stop()
    print({k: v for k, v in metrics.items() if "span" in k})

    # every sample event vs the ground truth intervals
    truth = defaultdict(list)
    for s in spans:
        truth[s["tid"]].append(s)
    events = _events(profiles_backend, pid)
    inside: Counter[str] = Counter()
    hits: Counter[str] = Counter()
    outside = outside_linked = 0
    by_id = {s["span_id"]: s for s in spans}
    for tid, t, span_id, trace_id, index in events:
        if index:
            assert span_id in by_id and by_id[span_id]["trace_id"] == trace_id
        covering = [s for s in truth.get(tid, []) if s["start_ns"] <= t < s["end_ns"]]
        if covering:
            inside[covering[0]["span_id"]] += 1
            hits[covering[0]["span_id"]] += span_id == covering[0]["span_id"]
        else:
            outside += 1
            outside_linked += bool(index)
    shares = {sid: hits[sid] / n for sid, n in inside.items()}
    print(f"events {len(events)}, inside spans {sum(inside.values())}, outside {outside} "
          f"(linked {outside_linked}); per-span share min {min(shares.values()):.3f}, "
          f"samples per span {sorted(inside.values())}")
    assert set(inside) == set(by_id), "a span got no samples at all"
    assert all(n >= 5 for n in inside.values()), "too few samples to judge a span"
    assert min(shares.values()) >= 0.90
    assert outside >= 20 and outside_linked == 0

    # the pprof files carry the links as labels: telegen span --dir
    span = spans[1]
    out = telegen("span", span["span_id"], "--dir", str(pprof_dir), check=True).stdout
    assert out.splitlines()[4].split()[-1] == span["function"], out

    # traces forwarded unchanged (gRPC requests byte for byte)
    got = trace_backend.requests()
    assert len(got) == len(sent)
    assert sorted(r.SerializeToString() for r in got) == \
        sorted(r.SerializeToString() for r in sent)
    assert metrics.get("telegen_exporter_sent_spans", 0) == len(spans)
    assert metrics.get("telegen_spanstore_spans_added", 0) == len(spans)
    assert os.path.getsize(log) > 0
