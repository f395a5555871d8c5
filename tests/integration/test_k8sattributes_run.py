"""``telegen run`` with the k8sattributes processor, end to end:
pprof files (samples labelled ``container.id``, as the ebpf receiver labels
them) → k8sattributes → batch → pprof_file, with the pod metadata coming from
a local HTTPS stand-in for the API server (no cluster can run here; the pod
objects are written to look like recorded ones, see
:mod:`telegen.testing.kubeapi`), reached with in-cluster service-account auth.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from telegen.formats.pprof import decode, encode
from telegen.pdata import CPU, Frame, Line, Profile
from telegen.testing.agent import ROOT, free_port, scrape, wait_until
from telegen.testing.kubeapi import FakeKubeAPI, pod_object

CID_CHECKOUT = "0c" * 32
CID_LATE = "1d" * 32


def _pprof(path: Path, container_id: str, fn: str) -> None:
    p = Profile(name="cpu", sample_types=CPU, period=10_000_000, start_ns=time.time_ns(),
                duration_ns=10**9)
    p.add((Frame(lines=(Line(fn),)),), [3, 30_000_000],
          (("container.id", container_id), ("process.pid", 4242)))
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(encode(p))
    tmp.rename(path)


def _labels_of(out: Path, fn: str) -> dict[str, object] | None:
    for f in sorted(out.glob("*.pb.gz")):
        for s in decode(f.read_bytes()):
            if s.stack[0].name == fn:
                return dict(s.labels)
    return None


def test_run_adds_pod_metadata_from_the_api_server(tmp_path: Path) -> None:
    api = FakeKubeAPI(tmp_path).start()
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(api.token)
    (sa / "ca.crt").write_bytes(api.ca_cert.read_bytes())
    api.add(pod_object("checkout-6b7f9c8d4-q8w2e", namespace="shop", node="node-1",
                       containers={"web": CID_CHECKOUT},
                       owner=("ReplicaSet", "checkout-6b7f9c8d4"),
                       labels={"pod-template-hash": "6b7f9c8d4",
                               "app.kubernetes.io/version": "2.3.1"}))
    incoming, out = tmp_path / "in", tmp_path / "out"
    incoming.mkdir()
    port = free_port()
    cfg = tmp_path / "k8s.yaml"
    cfg.write_text(f"""
receivers:
  pprof:
    paths: ["{incoming}/*.pb.gz"]
    watch: true
    poll_interval: 100ms
processors:
  k8sattributes:
    service_account_dir: {sa}
    filter: {{node_from_env_var: K8S_NODE_NAME}}
    extract:
      labels: [{{tag_name: service.version, key: app.kubernetes.io/version}}]
  batch:
    timeout: 200ms
exporters:
  pprof_file:
    directory: {out}
service:
  telemetry:
    metrics: {{level: basic, address: "127.0.0.1:{port}"}}
  pipelines:
    profiles:
      receivers: [pprof]
      processors: [k8sattributes, batch]
      exporters: [pprof_file]
""")
    env = {**os.environ, "KUBERNETES_SERVICE_HOST": "127.0.0.1",
           "KUBERNETES_SERVICE_PORT": str(api.port), "K8S_NODE_NAME": "node-1"}
    log = tmp_path / "agent.log"
    with open(log, "wb") as fh:
        agent = subprocess.Popen([sys.executable, "-m", "telegen", "run", "-c", str(cfg)],
                                 stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    try:
        assert wait_until(lambda: scrape(port).get("telegen_processor_k8sattributes_pods", 0)
                          >= 1, 30), log.read_text()
        _pprof(incoming / "a.pb.gz", CID_CHECKOUT, "checkout_main")
        assert wait_until(lambda: _labels_of(out, "checkout_main") is not None, 30), \
            log.read_text()
        got = _labels_of(out, "checkout_main")
        assert got is not None
        assert got["k8s.pod.name"] == "checkout-6b7f9c8d4-q8w2e"
        assert got["k8s.namespace.name"] == "shop"
        assert got["k8s.container.name"] == "web"
        assert got["k8s.deployment.name"] == "checkout"
        assert got["k8s.node.name"] == "node-1"
        assert got["service.version"] == "2.3.1"

        # a pod started while the agent runs arrives through the watch
        api.add(pod_object("batch-29423520-zx7lp", namespace="jobs", node="node-1",
                           containers={"worker": CID_LATE},
                           owner=("Job", "batch-29423520")))
        assert wait_until(lambda: scrape(port).get("telegen_processor_k8sattributes_pods", 0)
                          >= 2, 30), log.read_text()
        _pprof(incoming / "b.pb.gz", CID_LATE, "worker_loop")
        assert wait_until(lambda: _labels_of(out, "worker_loop") is not None, 30)
        late = _labels_of(out, "worker_loop")
        assert late is not None and late["k8s.cronjob.name"] == "batch"
        assert late["k8s.job.name"] == "batch-29423520"

        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0, log.read_text()
    finally:
        if agent.poll() is None:
            agent.kill()
        api.stop()
    assert api.unauthorized == 0
    assert all(r["query"].get("fieldSelector") == "spec.nodeName=node-1" for r in api.requests)
