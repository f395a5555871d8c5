"""The ``k8sattributes`` processor against a local HTTPS API server.

No cluster can run here: :class:`telegen.testing.kubeapi.FakeKubeAPI` serves
the pod list and watch over TLS (a CA and server certificate made with openssl
for each test module) with pod objects written to look like recorded ones
(``kubectl get pod -o json`` of Deployment, StatefulSet, DaemonSet and CronJob
pods). Watch and 410 semantics follow the Kubernetes API conventions
(https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md,
"Efficient detection of changes": resume from the last resourceVersion; 410
Gone when that version is no longer kept, then list again).

The processor authenticates as in a pod: service-account token and ca.crt from
a directory, KUBERNETES_SERVICE_HOST/PORT from the environment.
"""

from __future__ import annotations

import logging
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes.client  # noqa: F401 - imported once here (~1 s), not inside each test's timing
import pytest

from telegen.component import ComponentID, ConfigError, CreateSettings, Kind
from telegen.config.schema import build_component_config
from telegen.pdata import CPU, Frame, Line, Profile, Profiles, make_labels
from telegen.processors.k8sattributes import pods as pods_module
from telegen.processors.k8sattributes.factory import FACTORY
from telegen.processors.k8sattributes.metadata import Extractor
from telegen.processors.k8sattributes.pods import PodCache
from telegen.processors.k8sattributes.processor import K8sAttributesProcessor
from telegen.telemetry import Registry, sum_series
from telegen.testing.kubeapi import FakeKubeAPI, pod_object

NODE = "node-a"
CID_WEB = "a1" * 32
CID_SIDECAR = "b2" * 32


class Sink:
    mutates_data = False

    def __init__(self) -> None:
        self.got: list[Profiles] = []

    def consume(self, profiles: Profiles) -> None:
        self.got.append(profiles)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kube-certs")


@pytest.fixture
def api(certs: Path) -> Iterator[FakeKubeAPI]:
    server = FakeKubeAPI(certs).start()
    yield server
    server.stop()


@pytest.fixture
def service_account(api: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text(api.token)
    (directory / "ca.crt").write_bytes(api.ca_cert.read_bytes())
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
    monkeypatch.setenv("K8S_NODE_NAME", NODE)
    return directory


Made = tuple[K8sAttributesProcessor, Sink, Registry]


@pytest.fixture
def make(service_account: Path) -> Iterator[Callable[..., Made]]:
    started: list[K8sAttributesProcessor] = []

    def build(**raw: Any) -> Made:
        settings_raw = {"filter": {"node_from_env_var": "K8S_NODE_NAME"},
                        "service_account_dir": str(service_account),
                        "request_timeout": "2s", **raw}
        config = build_component_config(FACTORY, settings_raw, "processors::k8sattributes")
        registry = Registry()
        settings = CreateSettings(ComponentID("k8sattributes"), Kind.PROCESSOR,
                                  registry.for_component("processor", "k8sattributes"),
                                  logging.getLogger("test.k8sattributes"))
        sink = Sink()
        proc = FACTORY.create(settings, config, sink)
        proc.start(None)
        started.append(proc)
        return proc, sink, registry

    yield build
    for proc in started:
        proc.shutdown(2.0)


def wait_until(check: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def profile(resource: dict[str, Any] | None = None,
            labels: list[dict[str, str]] | None = None) -> Profile:
    p = Profile(name="cpu", sample_types=CPU, resource=resource or {})
    for i, lab in enumerate(labels or [{}]):
        p.add((Frame(lines=(Line(f"f{i}"),)),), [1, 10], make_labels(**lab))
    return p


def resource_after(proc: K8sAttributesProcessor, sink: Sink,
                   resource: dict[str, Any]) -> dict[str, Any]:
    proc.consume(Profiles([profile(dict(resource))]))
    return dict(sink.got[-1].profiles[0].resource)


def count(registry: Registry, name: str, **labels: str) -> float:
    return sum_series(registry.snapshot(), name, **labels)


def web_pod(**kw: Any) -> dict[str, Any]:
    """A Deployment's pod with an app container and a sidecar."""
    fields: dict[str, Any] = {
        "namespace": "shop", "node": NODE, "uid": "5f1c2b1e-0c55-4e53-9d0c-1f2a3b4c5d6e",
        "containers": {"web": CID_WEB, "envoy": CID_SIDECAR},
        "owner": ("ReplicaSet", "checkout-7d9f8b6c5d"),
        "labels": {"app.kubernetes.io/name": "checkout", "pod-template-hash": "7d9f8b6c5d"},
        "annotations": {"team": "payments"}}
    return pod_object("checkout-7d9f8b6c5d-x2x9k", **{**fields, **kw})


# --------------------------------------------------------------------- list/watch


def test_list_filtered_to_node_with_bearer_token_then_attributes(
        api: FakeKubeAPI, make: Callable[..., Made]) -> None:
    api.add(web_pod())
    other = pod_object("elsewhere", node="node-b", containers={"x": "c3" * 32})
    api.add(other)
    proc, sink, registry = make(extract={"labels": [{"key": "app.kubernetes.io/name"}],
                                         "annotations": [{"tag_name": "team", "key": "team"}]})
    assert proc.watcher is not None and proc.watcher.synced.wait(20)

    got = resource_after(proc, sink, {"container.id": CID_WEB, "service.name": "x"})
    assert got == {"container.id": CID_WEB, "service.name": "x",
                   "k8s.namespace.name": "shop", "k8s.pod.name": "checkout-7d9f8b6c5d-x2x9k",
                   "k8s.pod.uid": "5f1c2b1e-0c55-4e53-9d0c-1f2a3b4c5d6e",
                   "k8s.container.name": "web", "k8s.node.name": NODE,
                   "k8s.deployment.name": "checkout",
                   "k8s.pod.labels.app.kubernetes.io/name": "checkout", "team": "payments"}
    assert resource_after(proc, sink, {"container.id": CID_SIDECAR})["k8s.container.name"] \
        == "envoy"
    # the other node's pod is not listed: its container is a miss, data unchanged
    assert resource_after(proc, sink, {"container.id": "c3" * 32}) == {"container.id": "c3" * 32}
    assert count(registry, "processor_k8sattributes_misses") == 1
    assert count(registry, "processor_k8sattributes_matched") == 2

    first = api.requests[0]
    assert first["query"]["fieldSelector"] == f"spec.nodeName={NODE}"
    assert first["authorization"].lower() == f"bearer {api.token}"
    assert api.unauthorized == 0
    wait_until(lambda: any(r["query"].get("watch") for r in api.requests))
    watch = next(r for r in api.requests if r["query"].get("watch"))
    assert watch["query"]["resourceVersion"] == "102"     # the list's version


def test_watch_added_modified_deleted_and_grace(api: FakeKubeAPI,
                                                make: Callable[..., Made]) -> None:
    proc, sink, registry = make(pod_delete_grace="0.5s",
                                extract={"labels": [{"tag_name": "version", "key": "version"}]})
    assert proc.watcher is not None and proc.watcher.synced.wait(20)
    wait_until(lambda: any(r["query"].get("watch") for r in api.requests))
    pod = web_pod(labels={"version": "1", "pod-template-hash": "7d9f8b6c5d"})

    added = time.monotonic()
    api.add(pod)
    wait_until(lambda: "k8s.pod.name" in resource_after(proc, sink, {"container.id": CID_WEB}))
    latency = time.monotonic() - added
    assert latency < 1.0, f"ADDED -> attributes applied took {latency:.3f} s"
    print(f"ADDED -> attributes applied: {latency * 1000:.1f} ms")

    pod["metadata"]["labels"]["version"] = "2"
    api.modify(pod)
    wait_until(lambda: resource_after(proc, sink, {"container.id": CID_WEB}).get("version")
               == "2")

    api.delete(pod["metadata"]["uid"])
    wait_until(lambda: count(registry, "processor_k8sattributes_events", type="DELETED") == 1)
    # within the grace period the deleted pod's late profiles are still attributed
    assert resource_after(proc, sink, {"container.id": CID_WEB})["k8s.pod.name"]
    time.sleep(0.6)
    assert "k8s.pod.name" not in resource_after(proc, sink, {"container.id": CID_WEB})
    proc.cache.evict_expired()
    assert len(proc.cache) == 0


def test_watch_ended_by_server_is_resumed_from_last_version(
        api: FakeKubeAPI, make: Callable[..., Made]) -> None:
    api.add(web_pod())
    proc, sink, registry = make()
    assert proc.watcher is not None and proc.watcher.synced.wait(20)
    late = pod_object("late", node=NODE, containers={"app": "d4" * 32})
    api.add(late)
    wait_until(lambda: count(registry, "processor_k8sattributes_events", type="ADDED") == 1)
    api.end_watches()
    wait_until(lambda: len([r for r in api.requests if r["query"].get("watch")]) == 2)
    watches = [r for r in api.requests if r["query"].get("watch")]
    assert watches[-1]["query"]["resourceVersion"] == "102"   # "late" was version 102
    api.add(pod_object("later", node=NODE, containers={"app": "e5" * 32}))
    wait_until(lambda: "k8s.pod.name" in resource_after(proc, sink, {"container.id": "e5" * 32}))
    lists = [r for r in api.requests if not r["query"].get("watch")]
    assert len(lists) == 1, "a resumed watch must not list again"
    assert count(registry, "processor_k8sattributes_relists") == 1


@pytest.mark.parametrize("gone_as_http", [False, True], ids=["error-event", "http-410"])
def test_410_gone_relists(api: FakeKubeAPI, make: Callable[..., Made],
                          gone_as_http: bool) -> None:
    api.gone_as_http = gone_as_http
    pod = web_pod()
    api.add(pod)
    proc, sink, registry = make()
    assert proc.watcher is not None and proc.watcher.synced.wait(20)
    wait_until(lambda: any(r["query"].get("watch") for r in api.requests))
    # while the watch is down, the pod is deleted and another added; the history
    # is compacted, so the resumed watch gets 410 and must list again
    api.delete(pod["metadata"]["uid"])
    api.add(pod_object("after-compaction", node=NODE, containers={"app": "f6" * 32}))
    api.compact()
    wait_until(lambda: count(registry, "processor_k8sattributes_relists") == 2)
    wait_until(lambda: "k8s.pod.name" in resource_after(proc, sink, {"container.id": "f6" * 32}))
    assert proc.cache.by_uid(pod["metadata"]["uid"]) is not None
    assert proc.cache.by_uid(pod["metadata"]["uid"]).deleted_at is not None  # type: ignore
    if not gone_as_http:
        assert count(registry, "processor_k8sattributes_events", type="ERROR") >= 1


def test_wrong_token_is_counted_and_retried_and_data_passes(
        api: FakeKubeAPI, make: Callable[..., Made], service_account: Path) -> None:
    (service_account / "token").write_text("stolen-or-stale")
    api.add(web_pod())
    proc, sink, registry = make()
    wait_until(lambda: count(registry, "processor_k8sattributes_api_errors") >= 2, timeout=20)
    assert api.unauthorized >= 2
    assert resource_after(proc, sink, {"container.id": CID_WEB}) == {"container.id": CID_WEB}
    assert count(registry, "processor_k8sattributes_misses") == 1


def test_hanging_server_never_blocks_the_pipeline(api: FakeKubeAPI,
                                                   make: Callable[..., Made]) -> None:
    api.add(web_pod())
    api.hang.set()
    proc, sink, registry = make(request_timeout="30s")
    wait_until(lambda: api.requests)
    started = time.monotonic()
    for _ in range(100):
        resource_after(proc, sink, {"container.id": CID_WEB})
    elapsed = time.monotonic() - started
    assert elapsed < 0.5, f"100 batches took {elapsed:.2f} s while the API server hung"
    assert count(registry, "processor_k8sattributes_misses") == 100
    before = time.monotonic()
    proc.shutdown(2.0)
    assert time.monotonic() - before < 2.5
    api.hang.clear()


def test_kubeconfig_auth_and_paged_list(api: FakeKubeAPI, make: Callable[..., Made],
                                        tmp_path: Path) -> None:
    """The development path: a kubeconfig (server, CA, token) instead of the
    pod's service account; the list paged two pods at a time."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""
apiVersion: v1
kind: Config
clusters: [{{name: dev, cluster: {{server: "https://127.0.0.1:{api.port}",
                                  certificate-authority: "{api.ca_cert}"}}}}]
users: [{{name: me, user: {{token: {api.token}}}}}]
contexts: [{{name: dev, context: {{cluster: dev, user: me}}}}]
current-context: dev
""")
    for i in range(5):
        api.add(pod_object(f"p{i}", node=NODE, containers={"c": f"{i:02x}" * 32}))
    proc, sink, registry = make(auth_type="kubeConfig", kubeconfig=str(kubeconfig),
                                list_page_size=2)
    assert proc.watcher is not None and proc.watcher.synced.wait(20)
    assert len(proc.cache) == 5
    lists = [r["query"] for r in api.requests if not r["query"].get("watch")]
    assert [q.get("continue") for q in lists] == [None, "2", "4"]
    assert all(q["limit"] == "2" for q in lists)
    assert resource_after(proc, sink, {"container.id": "04" * 32})["k8s.pod.name"] == "p4"


def test_watches_ending_at_once_back_off(api: FakeKubeAPI, make: Callable[..., Made]) -> None:
    api.empty_watches = True       # e.g. a proxy closing every stream: no tight loop
    proc, sink, registry = make()
    assert proc.watcher is not None and proc.watcher.synced.wait(20)
    time.sleep(3.5)                # waits of 1 s, then 2 s between watches
    watches = [r for r in api.requests if r["query"].get("watch")]
    assert 2 <= len(watches) <= 3, len(watches)


def test_node_variable_unset_adds_nothing_and_passes_data(
        api: FakeKubeAPI, make: Callable[..., Made], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("K8S_NODE_NAME")
    api.add(web_pod())
    proc, sink, registry = make()
    assert proc.watcher is None and "K8S_NODE_NAME" in caplog.text
    assert resource_after(proc, sink, {"container.id": CID_WEB}) == {"container.id": CID_WEB}
    assert api.requests == []      # never the whole cluster by accident


def test_oversized_watch_event_is_refused_and_relisted(
        api: FakeKubeAPI, make: Callable[..., Made], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pods_module, "MAX_EVENT", 64 << 10)
    proc, sink, registry = make()
    assert proc.watcher is not None and proc.watcher.synced.wait(20)
    wait_until(lambda: any(r["query"].get("watch") for r in api.requests))
    api.add(pod_object("huge", node=NODE, containers={"app": "a7" * 32}, padding=200_000))
    wait_until(lambda: count(registry, "refused_inputs", source="k8s_watch",
                             reason="too_large") == 1)
    wait_until(lambda: count(registry, "processor_k8sattributes_relists") == 2)
    # the list (whose bound is larger) still brings the pod in
    assert "k8s.pod.name" in resource_after(proc, sink, {"container.id": "a7" * 32})


# ------------------------------------------------------------------ association


def test_pod_uid_and_sample_label_association(api: FakeKubeAPI,
                                              make: Callable[..., Made]) -> None:
    pod = web_pod()
    api.add(pod)
    proc, sink, registry = make()
    assert proc.watcher is not None and proc.watcher.synced.wait(20)
    uid = pod["metadata"]["uid"]
    got = resource_after(proc, sink, {"k8s.pod.uid": uid})
    assert got["k8s.pod.name"] == "checkout-7d9f8b6c5d-x2x9k"
    assert "k8s.container.name" not in got            # no container to tell which

    # the ebpf receiver's shape: one resource, container.id per sample
    p = profile({"host.name": "n1"}, labels=[{"container.id": CID_WEB, "process.pid": "7"},
                                             {"container.id": "99" * 32}, {}])
    proc.consume(Profiles([p]))
    out = sink.got[-1].profiles[0]
    assert out.resource == {"host.name": "n1"}
    by_frame = {s.stack[0].name: dict(s.labels) for s in out}
    assert by_frame["f0"]["k8s.pod.name"] == "checkout-7d9f8b6c5d-x2x9k"
    assert by_frame["f0"]["k8s.container.name"] == "web"
    assert by_frame["f0"]["process.pid"] == "7"
    assert by_frame["f1"] == {"container.id": "99" * 32}        # unknown: unchanged
    assert by_frame["f2"] == {}                                 # host process: untouched
    assert sum(s.values[0] for s in out) == 3
    assert count(registry, "processor_k8sattributes_misses") == 1


def test_owner_names_and_field_rules() -> None:
    config = build_component_config(FACTORY, {"extract": {
        "metadata": ["k8s.deployment.name", "k8s.replicaset.name", "k8s.statefulset.name",
                     "k8s.daemonset.name", "k8s.job.name", "k8s.cronjob.name"],
        "labels": [{"tag_name": "app.$1", "key_regex": r"app\.kubernetes\.io/(.+)"}],
        "annotations": [{"key_regex": "note-.*"}]}}, "p")
    ex = Extractor(config.extract.metadata, config.label_rules(), config.annotation_rules())

    def attrs(**kw: Any) -> dict[str, str]:
        return ex.pod(pod_object("p", **kw)).attributes

    assert attrs(owner=("ReplicaSet", "web-5c8d7f9b4"),
                 labels={"pod-template-hash": "5c8d7f9b4"}) == {
        "k8s.replicaset.name": "web-5c8d7f9b4", "k8s.deployment.name": "web"}
    # a ReplicaSet not made by a Deployment: no deployment name guessed
    assert attrs(owner=("ReplicaSet", "bare-rs")) == {"k8s.replicaset.name": "bare-rs"}
    assert attrs(owner=("StatefulSet", "db")) == {"k8s.statefulset.name": "db"}
    assert attrs(owner=("DaemonSet", "telegen")) == {"k8s.daemonset.name": "telegen"}
    assert attrs(owner=("Job", "nightly-29423520")) == {"k8s.job.name": "nightly-29423520",
                                                       "k8s.cronjob.name": "nightly"}
    assert attrs(labels={"app.kubernetes.io/name": "shop", "app.kubernetes.io/part-of": "x",
                         "other": "y"}) == {"app.name": "shop", "app.part-of": "x"}
    assert attrs(annotations={"note-a": "1", "nope": "2", "note-big": "z" * 5000}) == {
        "k8s.pod.annotations.note-a": "1"}
    assert ex.skipped_values == 1
    many = {f"note-{i:03d}": "v" for i in range(200)}      # a tenant's pod with 200 notes
    assert len(attrs(annotations=many)) == 64
    assert ex.skipped_values == 2


@pytest.mark.parametrize(("raw", "message"), [
    ({"extract": {"metadata": ["k8s.pod.ip"]}}, "must be"),
    ({"extract": {"labels": [{"key": "a", "from": "namespace"}]}}, "must be"),
    ({"extract": {"labels": [{"key": "a", "key_regex": "b"}]}}, "exactly one of key"),
    ({"extract": {"labels": [{"tag_name": "x.$2", "key_regex": "a(.)"}]}}, "1 group"),
    ({"extract": {"annotations": [{"key_regex": "(["}]}}, "key_regex"),
    ({"auth_type": "none"}, "api_server"),
    ({"pod_association": [{"sources": [{"from": "connection", "name": "container.id"}]}]},
     "must be"),
    ({"max_pods": 0}, "must be >= 1"),
])
def test_config_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_component_config(FACTORY, raw, "processors::k8sattributes")


# ------------------------------------------------------------------------ cache


def test_cache_is_bounded_and_evicts_deleted_pods_first() -> None:
    now = [0.0]
    cache = PodCache(max_pods=3, grace=60.0, clock=lambda: now[0])
    ex = Extractor(["k8s.pod.name"], [], [])
    pods = [ex.pod(pod_object(f"p{i}", containers={"c": f"{i:02x}" * 32})) for i in range(5)]
    assert all(cache.upsert(p) for p in pods[:3])
    assert not cache.upsert(pods[3]) and cache.refused == 1
    cache.delete(pods[0].uid)
    now[0] = 1.0
    assert cache.upsert(pods[3])                  # the deleted pod made room
    assert cache.by_container("00" * 32) is None and len(cache) == 3
    assert cache.by_container("03" * 32) is not None


def test_memory_per_thousand_cached_pods() -> None:
    ex = Extractor(list(build_component_config(FACTORY, {}, "p").extract.metadata), [], [])
    objects = [pod_object(f"shop-frontend-7d9f8b6c5d-{i:05d}", namespace="shop",
                          containers={"web": f"{i:08x}" * 8, "envoy": f"{i:08x}e" * 7 + "a"},
                          owner=("ReplicaSet", "shop-frontend-7d9f8b6c5d"),
                          labels={"pod-template-hash": "7d9f8b6c5d"}) for i in range(1000)]
    cache = PodCache(max_pods=5000, grace=60.0)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for obj in objects:
        cache.upsert(ex.pod(obj))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    print(f"memory per 1000 cached pods: {used / 1024:.0f} KiB")
    assert len(cache) == 1000
    assert used < 4 << 20, f"{used} bytes for 1000 pods"
